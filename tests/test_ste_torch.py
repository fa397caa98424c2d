"""pdscan.torch.scan_ste_dict / scan_ste_mixture: the custom ops' gradients equal torch
autograd through the dense straight-through surrogate (tests/ste_oracles.py), in
PyTorch's convention; opcheck of the four ops; torch.compile(fullgraph=True)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pdscan.ste as ste  # noqa: E402
import pdscan.torch  # noqa: E402
from oracles import rel_err  # noqa: E402
from ste_oracles import dense_grads, ste_inputs  # noqa: E402

pytestmark = pytest.mark.torch
MODES = ["scatter", "gather"]
HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
NAMES = {"dict": ["w", "Q", "d", "b", "x0"], "mixture": ["s", "M", "d", "b", "x0"]}
OPS = {"dict": (torch.ops.pdscan.scan_ste_dict_forward, torch.ops.pdscan.scan_ste_dict_backward),
       "mixture": (torch.ops.pdscan.scan_ste_mixture_forward, torch.ops.pdscan.scan_ste_mixture_backward)}


def _fn(form, mode, reverse, temperature=1.0):
    if form == "dict":
        return lambda *a: pdscan.torch.scan_ste_dict(*a, mode=mode, reverse=reverse)
    return lambda *a: pdscan.torch.scan_ste_mixture(*a, mode=mode, reverse=reverse, temperature=temperature)


def _args(form, rng, batch, L, N, K, x0=True, ties=False, real=False):
    inp = ste_inputs(rng, batch, L=L, N=N, K=K, x0=x0, ties=ties, real=real)
    if form == "dict":
        return [inp[k] for k in ("w", "Q", "d", "b", "x0")]
    return [rng.normal(size=batch + (L, K)), rng.normal(size=batch[-1:] + (K, N, N)), inp["d"], inp["b"], inp["x0"]]


def _check(form, args, mode, reverse, rng, temperature=1.0, device="cpu", tol=1e-12):
    leaves = [None if a is None else torch.tensor(a, device=device, requires_grad=True) for a in args]
    x = _fn(form, mode, reverse, temperature)(*leaves)
    cot = rng.normal(size=x.shape) + (1j * rng.normal(size=x.shape) if x.is_complex() else 0)
    present = [(i, a) for i, a in enumerate(leaves) if a is not None]
    grads = torch.autograd.grad(x, [a for _, a in present], torch.tensor(cot, dtype=x.dtype, device=device))
    want_x, want = dense_grads(form, args, cot, mode, reverse, temperature)
    x = x.detach().cpu().numpy()
    assert x.dtype == want_x.dtype and rel_err(x, want_x) < tol
    for (i, _), g in zip(present, grads):
        g = g.cpu().numpy()
        assert g.shape == want[i].shape and g.dtype == want[i].dtype, NAMES[form][i]
        assert rel_err(g, want[i]) < tol, NAMES[form][i]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed, x0, ties", [(0, True, False), (1, False, True), (2, True, True)])
def test_dictionary_matches_dense_surrogate(device, mode, reverse, seed, x0, ties):
    # (the Numba and CUDA backends fuse the dictionary gradients; test_ste.py cuts the
    # array form into chunks of steps)
    rng = np.random.default_rng(seed)
    _check("dict", _args("dict", rng, (2, 3), 7, 5, 4, x0, ties), mode, reverse, rng, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed, temperature", [(3, 1.0), (4, 0.3)])
def test_mixture_matches_dense_surrogate(device, mode, reverse, seed, temperature, monkeypatch):
    monkeypatch.setattr(ste, "MIXTURE_CHUNK_ELEMENTS", 2 * 3 * 5 * 5 * 3)  # several chunks of time
    rng = np.random.default_rng(seed)
    _check("mixture", _args("mixture", rng, (2, 3), 8, 5, 3), mode, reverse, rng, temperature, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", ["dict", "mixture"])
@pytest.mark.parametrize("seed, batch, L, N, K", [(5, (4,), 16, 6, 2), (6, (1, 2), 3, 9, 5), (7, (2,), 70, 3, 4)])
def test_real_values_and_other_shapes(device, form, seed, batch, L, N, K):
    rng = np.random.default_rng(seed)
    args = _args(form, rng, batch, L, N, K, real=True)
    _check(form, args, MODES[seed % 2], seed % 3 == 0, rng, temperature=0.7, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", ["dict", "mixture"])
def test_broadcast_mixed_dtypes_and_partial_grads(device, form):
    """d shared by the batch (L, N), a real float32 b, x0 (N,): gradients summed over
    the broadcast dimensions and cast to each input's dtype; only some inputs
    requiring gradients."""
    rng = np.random.default_rng(8)
    args = _args(form, rng, (3,), 6, 4, 3)
    args[2], args[4] = args[2][0], args[4][0]
    leaves = [torch.tensor(a, device=device) for a in args]
    leaves[3] = leaves[3].real.float()
    for i in (0, 2, 3):
        leaves[i].requires_grad_()
    x = _fn(form, "gather", False)(*leaves)
    cot = torch.randn(x.shape, dtype=x.dtype, device=device)
    grads = torch.autograd.grad(x, [leaves[i] for i in (0, 2, 3)], cot)
    args64 = list(args)
    args64[3] = leaves[3].detach().cpu().double().numpy()
    _, want = dense_grads(form, args64, cot.cpu().numpy(), "gather", False)
    for i, g in zip((0, 2, 3), grads):
        assert g.shape == leaves[i].shape and g.dtype == leaves[i].dtype
        assert rel_err(g.cpu().numpy(), want[i]) < (1e-6 if g.dtype == torch.float32 else 1e-12)


def _opcheck_cases(form, device):
    rng = np.random.default_rng(9)
    t = lambda a: None if a is None else torch.tensor(a, device=device, requires_grad=True)  # noqa: E731
    yield [t(a) for a in _args(form, rng, (2,), 5, 4, 3, x0=False)]
    args = [t(a) for a in _args(form, rng, (2, 3), 5, 4, 3)]
    args[2] = args[2].detach()[0, 0].to(torch.complex64).requires_grad_()  # broadcast, mixed dtypes
    args[3] = torch.randn(4, 5, dtype=torch.complex128, device=device).t().conj().requires_grad_()  # conj, strided
    yield args


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", ["dict", "mixture"])
def test_opcheck(device, form):
    forward, backward = OPS[form]
    extra = (0.5,) if form == "mixture" else ()
    for router, table, d, b, x0 in _opcheck_cases(form, device):
        for mode, reverse in (("scatter", False), ("gather", True)):
            args = (router, table, d, b, x0, mode, reverse) + extra
            torch.library.opcheck(forward.default, args)
            x = forward(*args).detach()
            plain = [None if a is None else a.detach() for a in (router, table, d, x0)]
            back = (*plain, x, torch.randn_like(x), mode, reverse) + extra + (True,)
            torch.library.opcheck(backward.default, back)


@pytest.mark.parametrize("form", ["dict", "mixture"])
def test_torch_compile_fullgraph(form):
    """A layer with learnable router and table under torch.compile(fullgraph=True),
    inductor and dynamic shapes: the same values and gradients as eager."""
    rng = np.random.default_rng(10)

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.router = torch.nn.Linear(4, 3, dtype=torch.float64)
            self.logits = torch.nn.Parameter(torch.randn(3, 4, 4, dtype=torch.float64))
            self.x0 = torch.nn.Parameter(torch.randn(4, dtype=torch.complex128))

        def forward(self, u, d):
            weights = torch.softmax(self.router(u), dim=-1)
            if form == "dict":
                x = pdscan.torch.scan_ste_dict(weights, torch.softmax(self.logits, dim=-2), d, u, self.x0,
                                               mode="gather", reverse=True)
            else:
                x = pdscan.torch.scan_ste_mixture(weights, self.logits, d, u, self.x0, temperature=0.5)
            return (x.abs() ** 2).sum()

    layer = Layer()
    compiled = {"inductor": torch.compile(layer, fullgraph=True),
                "dynamic": torch.compile(layer, fullgraph=True, dynamic=True, backend="aot_eager")}
    for name, L in (("inductor", 6), ("dynamic", 5), ("dynamic", 9)):
        u = torch.randn(2, L, 4, dtype=torch.float64)
        d = torch.tensor(rng.uniform(0.8, 1.0, size=(2, L, 4)) * np.exp(2j * rng.uniform(size=(2, L, 4))))
        eager = layer(u, d)
        want = torch.autograd.grad(eager, list(layer.parameters()))
        value = compiled[name](u, d)
        got = torch.autograd.grad(value, list(layer.parameters()))
        assert torch.allclose(value, eager, rtol=1e-12)
        for a, w in zip(got, want):
            assert a.shape == w.shape and torch.allclose(a, w, rtol=1e-10, atol=1e-12)


def test_errors():
    rng = np.random.default_rng(11)
    w, Q, d, b, _ = (torch.tensor(a) for a in _args("dict", rng, (2,), 3, 4, 2, x0=False)[:4] + [np.zeros(1)])
    with pytest.raises(ValueError, match=r"w and Q: expected w \(\.\.\., L, K\)"):
        pdscan.torch.scan_ste_dict(w[..., :1], Q, d, b)
    with pytest.raises(TypeError, match=r"Q: expected float32 or float64"):
        pdscan.torch.scan_ste_dict(w, Q.to(torch.complex128), d, b)
    with pytest.raises(ValueError, match=r"temperature: expected a positive number"):
        pdscan.torch.scan_ste_mixture(w, Q, d, b, temperature=-1.0)
    for bad in (True, float("inf"), float("nan"), "1"):  # bool, not finite, not a number
        with pytest.raises(ValueError, match=r"temperature: expected a positive number"):
            pdscan.torch.scan_ste_mixture(w, Q, d, b, temperature=bad)
    with pytest.raises(ValueError, match="mode"):
        pdscan.torch.scan_ste_dict(w, Q, d, b, mode="sideways")
    with pytest.raises(TypeError, match="reverse: expected a Python bool"):
        pdscan.torch.scan_ste_dict(w, Q, d, b, reverse=1)
    compiled = torch.compile(lambda *a: pdscan.torch.scan_ste_dict(*a), fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=r"w and Q"):  # the core's checks run while tracing
        compiled(w[..., :1], Q, d, b)
