"""The CUDA backend's launch code without a GPU: every launch it makes passes exactly
the arguments its kernel declares, in kind (a pointer, a 64-bit or a 32-bit integer),
on every path (forward and VJP, both modes, reverse, x0, the dictionary form, the
pipelined scan cut in time or not, the team kernels, N on either side of 128); and the
shared memory it gives the pipelined scan is the size of the kernel's own layout.

A CuPy launch takes a tuple of arguments and packs each by its own type: one too many,
one too few or an int32 where the kernel reads a long long shifts every argument after
it, and the kernel reads garbage.  The GPU tests catch that only on the paths they run;
here the launcher runs against a stand-in for CuPy (NumPy arrays with a device pointer,
a device of 132 multiprocessors, kernels that record their calls) and each call is
checked against the parameter list parsed from the kernel sources.
"""

from __future__ import annotations

import importlib
import math
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from oracles import edge_integers, make_inputs, random_values

from pdscan._problem import prepare

INT32, INT64, POINTER = "int", "long long", "pointer"
ATTRIBUTES = {"MultiProcessorCount": 132, "MaxSharedMemoryPerBlockOptin": 232448,
              "MaxSharedMemoryPerMultiprocessor": 233472}


class DeviceArray(np.ndarray):
    """A NumPy array standing in for a CuPy one: ``data.ptr`` is its address."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])


def _on_device(function):
    def wrapped(*args, **kwargs):
        return np.asarray(function(*args, **kwargs)).view(DeviceArray)
    return wrapped


def fake_elementwise_kernel(in_params, out_params, operation, name):
    """The launcher's element-wise kernels, by name, in NumPy (``operation``, the CUDA
    source, kept for the test that compiles it)."""
    assert name == "pd_safe_int32", name
    kernel = _on_device(lambda a, high: np.where((a >= 0) & (a < high), a.astype(np.int64), -1).astype(np.int32))
    kernel.operation = operation
    return kernel


def fake_cupy():
    cupy = types.ModuleType("cupy")
    cupy.ElementwiseKernel = fake_elementwise_kernel
    for name in ("empty", "where", "take_along_axis", "broadcast_to", "ascontiguousarray", "zeros", "asarray"):
        setattr(cupy, name, _on_device(getattr(np, name)))
    for name in ("int8", "int16", "int32", "int64", "float32", "float64", "complex64", "complex128"):
        setattr(cupy, name, getattr(np, name))
    cupy.ndarray = DeviceArray
    device = types.SimpleNamespace(attributes=ATTRIBUTES, id=0)
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0),
                                      Device=lambda device_id=0: device)
    return cupy


def parameters(source):
    """{kernel function name: [INT32 | INT64 | POINTER, ...]} of every __global__ kernel."""
    kernels = {}
    for start in (m.end() for m in re.finditer(r"__global__", source)):
        header = source[start:source.index("{", start)]
        name = next(m for m in re.finditer(r"(\w+)\s*\(", header) if m.group(1) != "__launch_bounds__")
        depth, at = 0, name.end() - 1
        for end in range(at, len(header)):
            depth += {"(": 1, ")": -1}.get(header[end], 0)
            if depth == 0:
                break
        kinds = []
        for param in header[at + 1:end].split(","):
            param = " ".join(param.split())
            if "*" in param:
                kinds.append(POINTER)
            elif param.startswith("long long "):
                kinds.append(INT64)
            elif param.startswith("int "):
                kinds.append(INT32)
            else:
                raise AssertionError(f"{name.group(1)}: a parameter of unknown kind: {param!r}")
        kernels[name.group(1)] = kinds
    return kernels


class Recorder:
    """Kernels that check and record their calls."""

    def __init__(self, declared):
        self.declared, self.calls, self.kernels = declared, [], {}

    def kernel(self, name):
        if name not in self.kernels:
            self.kernels[name] = FakeKernel(name, self)
        return self.kernels[name]


class FakeKernel:
    def __init__(self, name, recorder):
        self.name, self.recorder = name, recorder
        self.max_dynamic_shared_size_bytes = 48 * 1024

    def __call__(self, grid, block, args, shared_mem=0):
        function = self.name.split("<")[0].split("::")[-1]
        kinds = self.recorder.declared[function]
        assert len(args) == len(kinds), f"{self.name}: {len(args)} arguments for {len(kinds)} parameters"
        for i, (arg, kind) in enumerate(zip(args, kinds)):
            if kind == POINTER:
                ok = isinstance(arg, DeviceArray) or (isinstance(arg, np.uint64) and arg == 0)
            else:
                ok = isinstance(arg, np.int64 if kind == INT64 else np.int32)
            assert ok, f"{self.name}: argument {i} is {type(arg).__name__} {arg!r:.40}, the kernel reads a {kind}"
        assert all(int(g) > 0 for g in grid) and 0 < int(np.prod(block)) <= 1024, (self.name, grid, block)
        assert shared_mem <= ATTRIBUTES["MaxSharedMemoryPerBlockOptin"], (self.name, shared_mem)
        assert shared_mem <= max(48 * 1024, self.max_dynamic_shared_size_bytes), (self.name, shared_mem)
        self.recorder.calls.append(self.name)


@pytest.fixture
def backend(monkeypatch):
    """Fresh copies of the CUDA backend's modules over the stand-in CuPy (the real
    CuPy, where there is one, and the modules imported over it are put back after)."""
    prefix = "pdscan.backends.cupy_cuda"
    saved = {k: v for k, v in sys.modules.items() if k == "cupy" or k == prefix or k.startswith(prefix + ".")}
    for k in saved:
        del sys.modules[k]
    import pdscan.backends as backends_package

    monkeypatch.delattr(backends_package, "cupy_cuda", raising=False)
    sys.modules["cupy"] = fake_cupy()
    try:
        cupy_cuda = importlib.import_module(prefix)
        _kernels = importlib.import_module(prefix + "._kernels")
        _launch = importlib.import_module(prefix + "._launch")

        recorder = Recorder(parameters(_kernels.source()))
        monkeypatch.setattr(_kernels, "kernel", recorder.kernel)
        yield types.SimpleNamespace(backend=cupy_cuda.BACKEND, launch=_launch, kernels=_kernels, recorder=recorder)
    finally:
        for k in [k for k in sys.modules if k == "cupy" or k == prefix or k.startswith(prefix + ".")]:
            del sys.modules[k]
        sys.modules.update(saved)


def problem(rng, S, L, N, K=None, x0=True, dtype=np.complex64, **kw):
    host = make_inputs(rng, (S,), L, N, dtype, K=K, x0=x0, index_dtype=np.int32, unit=True)
    dev = {k: None if v is None else v.view(DeviceArray) for k, v in host.items()}
    return prepare(dev["index"], dev["d"], dev["b"], dev["x0"], maps=dev["maps"], check_index=False, **kw)


# (forced chunk length, pipelined scan); the VJP follows the pipelined scan's choice
SCHEDULES = {"auto": (None, None), "pipe chunks": (7, True), "pipe whole": (0, True), "team chunks": (7, False),
             "team whole": (0, False)}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("mode", ["scatter", "gather"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("N, K, x0", [(37, None, True), (64, 3, False), (128, None, False), (200, None, True),
                                      (64, None, True)])
def test_every_launch_passes_what_its_kernel_declares(backend, schedule, mode, reverse, N, K, x0, monkeypatch):
    chunk, pipe = SCHEDULES[schedule]
    monkeypatch.setattr(backend.launch, "force_chunk_len", chunk)
    monkeypatch.setattr(backend.launch, "use_pipe", pipe)
    rng = np.random.default_rng(0)
    for S, L in [(3, 45), (2, 1)]:
        p = problem(rng, S, L, N, K, x0, mode=mode, reverse=reverse)
        x = backend.backend.forward(p)
        grads = backend.backend.vjp(p, x, random_values(rng, x.shape, x.dtype).view(DeviceArray), conjugate=True)
        assert (grads[2] is not None) == x0
    names = backend.recorder.calls
    piped = pipe is not False and N <= 128
    assert any("pd_scan_pipe" in n for n in names) == piped
    assert any("pd_vjp<" in n for n in names) == (not piped)
    if piped:
        # the carry's scan writes grad_d (GRAD_D): no element-wise pass
        assert any(n.startswith("pd::pd_scan_pipe") and n.endswith("true>") for n in names)
        assert not any("pd_vjp_grad_d" in n for n in names)


@pytest.mark.parametrize("mode", ["scatter", "gather"])
@pytest.mark.parametrize("pipe_chase", [True, False])
def test_gather_summaries_follow_paths_unless_told_not_to(backend, mode, pipe_chase, monkeypatch):
    """The chunk summaries of gather kind (gather mode's forward, scatter mode's VJP
    carry) run as the pipelined scan's "chase" kind, or as "gather" with ``pipe_chase``
    False; the replays, and every scan of scatter kind, are never chased."""
    monkeypatch.setattr(backend.launch, "pipe_chase", pipe_chase)
    monkeypatch.setattr(backend.launch, "force_chunk_len", 9)
    kinds = backend.kernels.PIPE_KINDS

    def launched():  # (kind, writes summaries) of each pipelined scan
        names = [n for n in backend.recorder.calls if n.startswith("pd::pd_scan_pipe<")]
        return {(int(n.split(", ")[2]), n.split(", ")[6] == "true") for n in names}

    gather_kind = {(kinds["chase"] if pipe_chase else kinds["gather"], True), (kinds["gather"], False)}
    scatter_kind = {(kinds["scatter"], True), (kinds["scatter"], False)}
    rng = np.random.default_rng(0)
    p = problem(rng, 3, 45, 64, mode=mode)
    x = backend.backend.forward(p)
    assert launched() == (gather_kind if mode == "gather" else scatter_kind)
    backend.recorder.calls.clear()
    backend.backend.vjp(p, x, random_values(rng, x.shape, x.dtype).view(DeviceArray), conjugate=True)
    assert launched() == (gather_kind if mode == "scatter" else scatter_kind)


@pytest.mark.parametrize("mode", ["scatter", "gather"])
@pytest.mark.parametrize("K", [None, 3])
def test_the_vjp_with_grad_d_apart_passes_what_its_kernels_declare(backend, mode, K, monkeypatch):
    """``vjp_fuse_grad_d`` False: the carry's scan without GRAD_D, then the element-wise pass."""
    monkeypatch.setattr(backend.launch, "vjp_fuse_grad_d", False)
    rng = np.random.default_rng(0)
    p = problem(rng, 3, 45, 37, K, mode=mode)
    x = backend.backend.forward(p)
    backend.recorder.calls.clear()
    backend.backend.vjp(p, x, random_values(rng, x.shape, x.dtype).view(DeviceArray), conjugate=True)
    names = backend.recorder.calls
    assert any(n.startswith("pd::pd_scan_pipe") for n in names)
    assert not any(n.startswith("pd::pd_scan_pipe") and n.endswith("true>") for n in names)
    assert any("pd_vjp_grad_d" in n for n in names)


@pytest.mark.parametrize("dtype", [np.complex64, np.float64])
def test_the_dictionary_contractions_pass_what_their_kernels_declare(backend, dtype):
    rng = np.random.default_rng(0)
    p = problem(rng, 4, 30, 20, K=3, x0=False, dtype=dtype)
    u, v = (random_values(rng, (4, 30, 20), dtype).view(DeviceArray) for _ in range(2))
    members = np.arange(4).reshape(2, 2).view(DeviceArray)
    backend.backend.dictionary_grads(p, u, v, members)
    assert len(backend.recorder.calls) == 2


def kernel_rows(a, stride, count, row):
    """What a kernel reads as ``count`` rows of ``row`` elements, ``stride`` elements
    apart from ``a``'s first element, after checking that they lie in ``a``'s memory."""
    last = sum((n - 1) * st for n, st in zip(a.shape, a.strides)) // a.itemsize
    assert (count - 1) * stride + row - 1 <= last, "the kernel would read past the array"
    return np.lib.stride_tricks.as_strided(a, (count, row), (stride * a.itemsize, a.itemsize))


@pytest.mark.parametrize("batch", [(3,), (2, 3)])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int16, np.uint8])
def test_the_dictionary_is_handed_over_as_each_sequence_holds_it(backend, index_dtype, batch):
    """Selectors and maps sliced out of larger arrays (gaps between the sequences), some
    out of range: each sequence's rows, as the kernels address them, hold its own
    entries, the dictionary's out-of-range ones as -1; int32 selectors go as they are
    (the kernels check their range), others as int32 with -1."""
    rng = np.random.default_rng()
    L, N, K = 9, 6, 4
    S, wider = math.prod(batch), batch[:-1] + (2 * batch[-1],)
    low = 0 if np.dtype(index_dtype).kind == "u" else -2
    selectors = rng.integers(low, K + 2, wider + (L,)).astype(index_dtype)[..., ::2, :].view(DeviceArray)
    maps = rng.integers(low, N + 2, wider + (K, N)).astype(index_dtype)[..., ::2, :, :].view(DeviceArray)
    d, b = (random_values(rng, batch + (L, N), np.complex64).view(DeviceArray) for _ in range(2))
    p = prepare(selectors, d, b, None, maps=maps, check_index=False)
    got_sel, sel_stride, got_maps, maps_stride = backend.launch._dictionary(p, len(batch))
    assert got_maps.dtype == np.int32 and got_sel.dtype == np.int32
    for s, rows in enumerate(kernel_rows(got_maps, maps_stride, S, K * N)):
        want = np.asarray(maps).reshape(S, -1)[s].astype(np.int64)
        np.testing.assert_array_equal(rows, np.where((want >= 0) & (want < N), want, -1))
    for s, rows in enumerate(kernel_rows(got_sel, sel_stride, S, L)):
        want = np.asarray(selectors).reshape(S, L)[s].astype(np.int64)
        if index_dtype != np.int32:
            want = np.where((want >= 0) & (want < K), want, -1)
        np.testing.assert_array_equal(rows, want)


def test_the_sources_declare_every_kernel_the_launcher_names():
    """parameters() finds every kernel of every source (the check above relies on it)."""
    from pdscan.backends.cupy_cuda import _kernels

    declared = parameters(_kernels.source())
    for name in _kernels.all_names():
        assert name.split("<")[0].split("::")[-1] in declared, name
    assert declared["pd_vjp_first_step"].count(POINTER) == 8


NVCC = shutil.which("nvcc")
VALUE_TYPES = {"complex64": 8, "complex128": 16, "float32": 4}
INTEGER_TYPES = {"int8": "signed char", "uint8": "unsigned char", "int16": "short", "uint16": "unsigned short",
                 "int32": "int", "uint32": "unsigned int", "int64": "long long", "uint64": "unsigned long long"}


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_the_dictionary_conversion_is_exact_at_the_edges(backend, tmp_path):
    """``_safe_int32``'s CUDA operation, compiled into a host program with every integer
    type, at the edges of the range (``edge_integers``).  A conversion that kept a value
    outside it would hand the kernels a dictionary entry outside [-1, N)."""
    high = 100
    cases, lines = [], []
    for name, ctype in INTEGER_TYPES.items():
        for v in edge_integers(name, high):
            cases.append((name, v))
            lines.append(f"  std::printf(\"%d\\n\", safe<{ctype}>(({ctype})({v}ULL), {high}LL));")
    program = ("#include <cstdio>\ntemplate <typename T>\nint safe(T a, long long high) {\n  int out;\n  "
               + backend.launch._SAFE_INT32.operation + ";\n  return out;\n}\nint main() {\n" + "\n".join(lines)
               + "\n  return 0;\n}\n")
    (tmp_path / "safe.cu").write_text(program)
    built = subprocess.run([NVCC, "-o", str(tmp_path / "safe"), str(tmp_path / "safe.cu")], capture_output=True,
                           text=True)
    assert built.returncode == 0, built.stderr[-4000:]
    ran = subprocess.run([str(tmp_path / "safe")], capture_output=True, text=True, check=True)
    for (name, v), got in zip(cases, (int(line) for line in ran.stdout.split()), strict=True):
        assert got == (v if 0 <= v < high else -1), (name, v, got)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_the_pipelined_scans_shared_memory_is_its_layouts_size(backend, tmp_path, monkeypatch):
    """The launcher's mirror (``_launch.pipe_smem``) against the kernel's ``pipe_smem``
    struct, built into a host program: every value size, index words of 1 and 8 bytes
    and the dictionary form, every kind, the summaries (TRACK) and the VJP's GRAD_D,
    each consumer shape, tiles of 1, 7 and 64 steps.  A launch given less than the
    layout would let the kernel address shared memory past its allocation."""
    K = backend.kernels
    cases, instances = [], []
    for value, itemsize in VALUE_TYPES.items():
        for width, maps in ((1, False), (8, False), (4, True)):
            for kind in ("scatter", "gather", "chase"):
                for track, grad_d in ((False, False), (True, False), (False, True)):
                    for N, cw in ((5, 1), (33, 2), (100, 2), (128, 1), (70, 4)):
                        cw, e = K.pipe_shape(N, cw)
                        name = K.pipe_name(value, width, kind, maps, e, cw, track, grad_d)
                        layout = "pd::pipe_smem" + name[name.index("<"):]
                        for tile in (1, 7, 64):
                            cases.append((width, maps, itemsize, kind, track, grad_d, N, cw, tile))
                            instances.append(f"  std::printf(\"%lld\\n\", bytes_of<{layout}>({tile}, {N}, "
                                             f"{3 if maps else 0}));")
    program = (K.source() + "\n#include <cstdio>\nstatic unsigned char arena[1 << 22];\n"
               "template <typename Layout>\nlong long bytes_of(int tile, int N, int K) {\n"
               "  Layout sm(arena, tile, N, K);\n  return (long long)(sm.end - arena);\n}\n"
               "int main() {\n" + "\n".join(instances) + "\n  return 0;\n}\n")
    (tmp_path / "layouts.cu").write_text(program)
    built = subprocess.run([NVCC, "-arch=sm_80", "--std=c++17", "-Xptxas", "-O0", "-o", str(tmp_path / "layouts"),
                            str(tmp_path / "layouts.cu")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-4000:]
    ran = subprocess.run([str(tmp_path / "layouts")], capture_output=True, text=True, check=True)
    kernel_bytes = [int(line) for line in ran.stdout.split()]
    assert len(kernel_bytes) == len(cases)
    for (width, maps, itemsize, kind, track, grad_d, N, cw, tile), want in zip(cases, kernel_bytes):
        monkeypatch.setattr(backend.launch, "pipe_consumer_warps", cw)
        ix = types.SimpleNamespace(width=width, uses_maps=maps, k=3 if maps else 0)
        got = backend.launch.pipe_smem(ix, itemsize, kind, track, N, tile, grad_d=grad_d)
        assert got == want, (width, maps, itemsize, kind, track, grad_d, N, cw, tile, got, want)
