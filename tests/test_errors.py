"""Bad input: a clear error naming the argument and the expectation, before any work."""

import re
import subprocess
import sys

import numpy as np
import pytest

import pdscan

L, N = 6, 4


def good(rng=np.random.default_rng(0)):
    return dict(index=rng.integers(0, N, size=(2, L, N)), d=np.ones((2, L, N), np.complex64),
                b=np.ones((2, L, N), np.complex64), x0=np.zeros((2, N), np.complex64))


def scan_with(**changes):
    args = {**good(), **changes}
    return pdscan.scan(args.pop("index"), args.pop("d"), args.pop("b"), args.pop("x0"), **args)


@pytest.mark.parametrize(
    "changes, error, message",
    [
        (dict(d=np.ones(N, np.complex64)), ValueError, r"d: expected shape \(\.\.\., L, N\), got \(4,\)"),
        (dict(b=np.ones((2, L, N + 1), np.complex64)), ValueError,
         r"b: expected shape \(\.\.\., L, N\) = \(\.\.\., 6, 4\) to match d \(2, 6, 4\), got \(2, 6, 5\)"),
        (dict(index=np.zeros((2, L - 1, N), np.int32)), ValueError, r"index: expected shape .* got \(2, 5, 4\)"),
        (dict(index=np.zeros((2, L, N), np.float32)), TypeError, r"index: expected an integer dtype"),
        (dict(index=np.zeros((2, L, N), bool)), TypeError, r"index: expected an integer dtype"),
        (dict(d=np.ones((2, L, N), np.int32)), TypeError, r"d: expected float32, float64, complex64 or complex128"),
        (dict(b=np.ones((2, L, N), np.float16)), TypeError, r"b: expected float32"),
        (dict(x0=np.zeros((2, N + 1), np.complex64)), ValueError, r"x0: expected shape \(\.\.\., N\) = \(\.\.\., 4\)"),
        (dict(x0=np.zeros((3, N), np.complex64)), ValueError, r"batch\) dimensions do not broadcast: d \(2,\), b \(2,\), index \(2,\), x0 \(3,\)"),
        (dict(mode="rows"), ValueError, r"mode: expected 'scatter' or 'gather', got 'rows'"),
        (dict(reverse="yes"), TypeError, r"reverse: expected a Python bool, got str 'yes'"),
        (dict(reverse=np.True_), TypeError, r"reverse: expected a Python bool, got numpy\.bool"),
        (dict(check_index="no"), TypeError, r"check_index: expected a Python bool, got str 'no'"),
        (dict(d=np.ones((2, L, N), ">f8")), TypeError, r"d: expected .* in the machine's byte order, got >f8"),
        (dict(d=[[1.0]]), TypeError, r"d: expected an array, got list"),
        (dict(backend="fortran"), ValueError, r"backend: unknown backend 'fortran'"),
        (dict(backend="cuda"), ValueError, r"backend: 'cuda' takes cupy arrays, not numpy arrays"),
    ],
)
def test_bad_arguments(changes, error, message):
    with pytest.raises(error, match=message):
        scan_with(**changes)


def test_index_out_of_range_names_the_first_position():
    idx = good()["index"]
    idx[1, 3, 2] = N
    idx[1, 4, 0] = -1
    with pytest.raises(ValueError, match=re.escape("index: values must lie in [0, 4); index[1, 3, 2] = 4")):
        scan_with(index=idx)
    idx = good()["index"].astype(np.int8)
    idx[0, 0, 1] = -3
    with pytest.raises(ValueError, match=re.escape("index[0, 0, 1] = -3")):
        scan_with(index=idx)


def test_dictionary_form_errors():
    rng = np.random.default_rng(1)
    maps = rng.integers(0, N, size=(3, N))
    sel = rng.integers(0, 3, size=(2, L))
    base = dict(d=np.ones((2, L, N)), b=np.ones((2, L, N)))
    bad_sel = sel.copy()
    bad_sel[1, 2] = 3
    with pytest.raises(ValueError, match=re.escape("index: values must lie in [0, 3); index[1, 2] = 3")):
        pdscan.scan(bad_sel, maps=maps, **base)
    bad_maps = maps.copy()
    bad_maps[2, 1] = 7
    with pytest.raises(ValueError, match=re.escape("maps: values must lie in [0, 4); maps[2, 1] = 7")):
        pdscan.scan(sel, maps=bad_maps, **base)
    with pytest.raises(ValueError, match=r"maps: expected shape \(\.\.\., K, N\) with N = 4"):
        pdscan.scan(sel, maps=maps[:, :3], **base)
    with pytest.raises(ValueError, match=r"index: expected shape \(\.\.\., L\) = \(\.\.\., 6\) when maps"):
        pdscan.scan(rng.integers(0, 3, size=(2, L, N)), maps=maps, **base)
    with pytest.raises(TypeError, match=r"maps: expected an integer dtype"):
        pdscan.scan(sel, maps=maps.astype(float), **base)


def test_vjp_checks_its_cotangent():
    args = good()
    x = pdscan.scan(args["index"], args["d"], args["b"], args["x0"])
    with pytest.raises(ValueError, match=r"grad_x: expected the scan's output shape \(2, 6, 4\), got \(6, 4\)"):
        pdscan.scan_vjp(args["index"], args["d"], args["b"], args["x0"], x, x[0])
    with pytest.raises(TypeError, match=r"grad_x: expected an array"):
        pdscan.scan_vjp(args["index"], args["d"], args["b"], args["x0"], x, 1.0)
    for name in ("x", "grad_x"):
        with pytest.raises(TypeError, match=rf"^{name}: expected an array of the scan's output shape \(2, 6, 4\), got None"):
            pdscan.scan_vjp(args["index"], args["d"], args["b"], args["x0"], *(None if n == name else x for n in ("x", "grad_x")))
    with pytest.raises(TypeError, match=r"conjugate: expected a Python bool, got str 'yes'"):
        pdscan.scan_vjp(args["index"], args["d"], args["b"], args["x0"], x, x, conjugate="yes")


@pytest.mark.parametrize(
    "changes, error, message",
    [
        (dict(x=None), TypeError, r"x: expected an array of shape \(\.\.\., N\), got None"),
        (dict(x=np.zeros((2, N - 1))), ValueError, r"x: expected shape \(\.\.\., N\) = \(\.\.\., 4\) to match d \(2, 4\), got \(2, 3\)"),
        (dict(b=np.zeros((2, N + 1))), ValueError, r"b: expected shape \(\.\.\., N\) = \(\.\.\., 4\) to match d \(2, 4\)"),
        (dict(index=np.zeros((2, N - 1), int)), ValueError, r"index: expected shape \(\.\.\., N\) = \(\.\.\., 4\)"),
        (dict(index=np.array([[0, 1, 2, 7], [0, 0, 0, 0]])), ValueError, re.escape("index[0, 3] = 7")),
        (dict(x=np.zeros((3, N))), ValueError, r"batch\) dimensions do not broadcast: d \(2,\), b \(2,\), x \(3,\)"),
        (dict(d=np.ones((2, N), np.int32)), TypeError, r"d: expected float32"),
        (dict(check_index=1), TypeError, r"check_index: expected a Python bool, got int 1"),
    ],
)
def test_step_names_its_own_arguments(changes, error, message):
    """pdscan.step runs the scan's checks on a step lifted to L = 1: its errors still
    name step's arguments (x, not x0) with the shapes that were passed."""
    args = {**dict(index=np.zeros((2, N), int), d=np.ones((2, N)), b=np.ones((2, N)), x=np.zeros((2, N))), **changes}
    with pytest.raises(error, match=message):
        pdscan.step(args.pop("index"), args.pop("d"), args.pop("b"), args.pop("x"), **args)


def test_mixed_libraries_are_rejected():
    xps = pytest.importorskip("array_api_strict")
    args = good()
    with pytest.raises(TypeError, match=r"arrays from different libraries cannot be mixed .*d is array_api"):
        pdscan.scan(args["index"], xps.asarray(args["d"]), args["b"])


def test_import_is_light():
    """import pdscan (and a NumPy scan on the reference) imports no framework."""
    code = (
        "import sys, numpy as np, pdscan\n"
        "pdscan.scan(np.zeros((2, 3), np.int32), np.ones((2, 3)), np.ones((2, 3)), backend='numpy')\n"
        "pdscan.backends.available()\n"
        "heavy = [m for m in ('torch', 'jax', 'cupy', 'numba') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
