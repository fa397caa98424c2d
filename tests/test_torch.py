"""The PyTorch adapter: the custom ops, autograd in PyTorch's convention,
torch.compile and CUDA graphs, against the NumPy reference and torch autograd
through a plain torch loop written here."""

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pdscan  # noqa: E402
import pdscan.torch  # noqa: E402
from pdscan.validation import run as validate  # noqa: E402
from oracles import make_inputs, random_unit_values, rel_err  # noqa: E402

pytestmark = pytest.mark.torch
MODES = ["scatter", "gather"]
HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def to_torch(inputs, device="cpu", grad=True):
    out = {}
    for k, v in inputs.items():
        if v is None:
            out[k] = None
        elif v.dtype.kind in "fc":
            out[k] = torch.tensor(v, device=device, requires_grad=grad)
        else:
            out[k] = torch.tensor(v, device=device)
    return out


def torch_scan(t, **kw):
    return pdscan.torch.scan(t["index"], t["d"], t["b"], t["x0"], maps=t["maps"], **kw)


def reference(inputs, grad_x=None, **kw):
    """The NumPy reference's states, and its VJP in PyTorch's convention for grad_x."""
    args = (inputs["index"], inputs["d"], inputs["b"], inputs["x0"])
    x = pdscan.scan(*args, maps=inputs["maps"], backend="numpy", **kw)
    if grad_x is None:
        return x
    return x, pdscan.scan_vjp(*args, x, grad_x, maps=inputs["maps"], backend="numpy", conjugate=True, **kw)


def loop_scan(index, d, b, x0, maps, mode, reverse):
    """The recurrence as a plain torch loop: scatter_add for scatter, gather for gather."""
    sigma = index if maps is None else torch.gather(
        maps.expand(index.shape[:-1] + maps.shape[-2:]), -2,
        index[..., None].expand(index.shape + maps.shape[-1:]).long())
    batch = torch.broadcast_shapes(d.shape[:-2], b.shape[:-2], sigma.shape[:-2],
                                   () if x0 is None else x0.shape[:-1])
    L, N = d.shape[-2:]
    sigma = sigma.expand(batch + (L, N)).long()
    d, b = d.expand(batch + (L, N)), b.expand(batch + (L, N))
    dtype = torch.promote_types(d.dtype, b.dtype)
    state = (torch.zeros(batch + (N,), dtype=dtype, device=d.device) if x0 is None
             else x0.expand(batch + (N,)).to(dtype))
    states = [None] * L
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        if mode == "gather":
            new = d[..., t, :] * torch.gather(state, -1, sigma[..., t, :])
        else:
            new = torch.zeros_like(state).scatter_add(-1, sigma[..., t, :], d[..., t, :] * state)
        state = new + b[..., t, :]
        states[t] = state
    return torch.stack(states, dim=-2)


LOSSES = {
    "sum_abs2": lambda x: (x.abs() ** 2).sum(),
    "weighted_real": lambda x: (x * (0.3 - 0.7j)).real.mul(torch.arange(x.shape[-2], device=x.device)[:, None]).sum(),
    "last_state": lambda x: (x[..., -1, :] + 1.0).abs().sum(),
}


# -- values ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
def test_forward_and_vjp_match_the_reference(device, mode, reverse, K):
    rng = np.random.default_rng(1)
    inputs = make_inputs(rng, batch=(2, 3), L=9, N=5, K=K)
    grad_x = make_inputs(rng, batch=(2, 3), L=9, N=5)["b"]
    t = to_torch(inputs, device)
    x = torch_scan(t, mode=mode, reverse=reverse)
    grads = torch.autograd.grad(x, (t["d"], t["b"], t["x0"]), torch.tensor(grad_x, device=device))
    want_x, want_grads = reference(inputs, grad_x, mode=mode, reverse=reverse)
    assert x.device.type == device and rel_err(x.detach().cpu().numpy(), want_x) < 1e-12
    for got, want in zip(grads, want_grads):
        assert rel_err(got.cpu().numpy(), want) < 1e-12


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 2])
def test_gradcheck_complex128(mode, reverse, K):
    rng = np.random.default_rng(2)
    inputs = make_inputs(rng, batch=(2,), L=5, N=4, K=K, unit=True)
    t = to_torch(inputs)
    fn = lambda d, b, x0: pdscan.torch.scan(t["index"], d, b, x0, maps=t["maps"], mode=mode, reverse=reverse)  # noqa
    assert torch.autograd.gradcheck(fn, (t["d"], t["b"], t["x0"]), fast_mode=True)


def test_gradcheck_complex128_full_jacobian_without_x0_and_broadcast():
    rng = np.random.default_rng(3)
    index = torch.tensor(rng.integers(0, 3, size=(2, 4, 3)))
    d = torch.tensor(random_unit_values(rng, (4, 3), np.complex128), requires_grad=True)  # broadcast over 2
    b = torch.randn(2, 4, 3, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, b: pdscan.torch.scan(index, d, b, mode="gather", reverse=True),
                                    (d, b))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_gradients_equal_autograd_through_a_plain_loop(mode, reverse, K, loss):
    rng = np.random.default_rng(4)
    inputs = make_inputs(rng, batch=(2,), L=40, N=6, K=K, unit=True)
    t1, t2 = to_torch(inputs), to_torch(inputs)
    LOSSES[loss](torch_scan(t1, mode=mode, reverse=reverse)).backward()
    LOSSES[loss](loop_scan(t2["index"], t2["d"], t2["b"], t2["x0"], t2["maps"], mode, reverse)).backward()
    for k in ("d", "b", "x0"):
        assert rel_err(t1[k].grad.numpy(), t2[k].grad.numpy()) < 1e-10, k


def test_broadcast_real_conjugate_negative_and_strided_inputs():
    """Gradients reduce over broadcast dimensions and stay real for real inputs;
    inputs with the conjugate or negative bit set and non-contiguous inputs are
    read as the values they stand for."""
    rng = np.random.default_rng(5)
    L, N = 7, 4
    index = torch.tensor(rng.integers(0, N, size=(L, N)))
    d = torch.tensor(rng.uniform(0.8, 1.0, size=(1, L, N)), requires_grad=True)  # real, broadcast
    b = torch.randn(3, N, L, dtype=torch.complex128).transpose(-1, -2).conj().requires_grad_()
    assert b.is_conj() and not b.is_contiguous()
    x0 = torch.randn(N, dtype=torch.complex128, requires_grad=True)
    x = pdscan.torch.scan(index, d, b, x0, mode="gather")
    y = loop_scan(index, d, b, x0, None, "gather", False)
    assert rel_err(x.detach().numpy(), y.detach().resolve_conj().numpy()) < 1e-12
    g1 = torch.autograd.grad(LOSSES["sum_abs2"](x), (d, b, x0))
    g2 = torch.autograd.grad(LOSSES["sum_abs2"](y), (d, b, x0))
    assert g1[0].dtype == torch.float64 and g1[0].shape == (1, L, N)
    for a, w in zip(g1, g2):
        assert rel_err(a.resolve_conj().numpy(), w.resolve_conj().numpy()) < 1e-12
    negative = torch.randn(L, N, dtype=torch.complex128).conj().imag  # a lazily negated real view
    assert negative.is_neg()
    got = pdscan.torch.scan(index, d, negative)
    want = pdscan.scan(index.numpy(), d.detach().numpy(), negative.resolve_neg().numpy())
    assert rel_err(got.detach().numpy(), want) < 1e-12


def test_pdscan_scan_routes_torch_tensors_to_the_adapter():
    rng = np.random.default_rng(6)
    inputs = make_inputs(rng, batch=(2,), L=6, N=4, K=2)
    t = to_torch(inputs)
    x = pdscan.scan(t["index"], t["d"], t["b"], t["x0"], maps=t["maps"])
    assert isinstance(x, torch.Tensor) and x.grad_fn is not None and "pdscan_scan_forward" in type(x.grad_fn).__name__
    g = torch.randn_like(x)
    (x * g.conj()).real.sum().backward()
    plain = pdscan.scan_vjp(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], x.detach().numpy(),
                            g.numpy(), maps=inputs["maps"], conjugate=True, backend="numpy")
    # the gradient of Re<g, x> is conj(J)^T g in PyTorch's convention
    for k, want in zip(("d", "b", "x0"), plain):
        assert rel_err(t[k].grad.numpy(), want) < 1e-12
    # scan_vjp on torch tensors: the plain transpose (JAX's convention), as the core defines it
    via_core = pdscan.scan_vjp(t["index"], t["d"].detach(), t["b"].detach(), t["x0"].detach(), x.detach(), g,
                               maps=t["maps"])
    reference_vjp = pdscan.scan_vjp(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], x.detach().numpy(),
                                    g.numpy(), maps=inputs["maps"], backend="numpy")
    for a, w in zip(via_core, reference_vjp):
        assert rel_err(a.numpy(), w) < 1e-12


def test_empty_problems_give_zero_gradients():
    x0 = torch.randn(2, 3, dtype=torch.complex128, requires_grad=True)
    d = torch.zeros(2, 0, 3, dtype=torch.complex128, requires_grad=True)
    x = pdscan.scan(torch.zeros(2, 0, 3, dtype=torch.int64), d, d.detach(), x0)
    assert x.shape == (2, 0, 3)
    (grad,) = torch.autograd.grad(x.abs().sum(), x0, allow_unused=False)
    assert torch.equal(grad, torch.zeros_like(x0))


def test_backend_out_buffers():
    rng = np.random.default_rng(7)
    inputs = make_inputs(rng, batch=(2,), L=6, N=4)
    t = to_torch(inputs, grad=False)
    p = pdscan._problem.prepare(t["index"], t["d"], t["b"], t["x0"], maps=None)
    backend = pdscan.backends.get("torch")
    out = torch.empty(2, 6, 4, dtype=torch.complex128)
    assert backend.forward(p, out=out) is out
    grad_x = torch.randn_like(out)
    outs = tuple(torch.empty_like(a) for a in (t["d"], t["b"], t["x0"]))
    written = backend.vjp(p, out, grad_x, conjugate=True, out=outs)
    x_want, grads_want = reference(inputs, grad_x.numpy())
    assert rel_err(out.numpy(), x_want) < 1e-12
    for target, got, want in zip(outs, written, grads_want):
        assert got is target and rel_err(got.numpy(), want) < 1e-12


# -- the ops ----------------------------------------------------------------------------


def opcheck_cases(device):
    """Arguments of both ops: plain, the dictionary form, broadcast batch dimensions
    with mixed value dtypes, and strided inputs with the conjugate bit set."""
    rng = np.random.default_rng(8)
    for K in (None, 2):
        t = to_torch(make_inputs(rng, batch=(2,), L=5, N=4, K=K), device)
        yield t["index"], t["d"], t["b"], t["x0"], t["maps"]
    index = torch.tensor(rng.integers(0, 4, size=(3, 1, 5, 4)), device=device)
    d = torch.rand(5, 4, dtype=torch.float32, device=device, requires_grad=True)
    b = torch.randn(2, 5, 4, dtype=torch.complex64, device=device, requires_grad=True)
    yield index, d, b, None, None
    b = torch.randn(4, 5, dtype=torch.complex128, device=device).t().conj().requires_grad_()
    yield index[0, 0], d.double(), b, torch.randn(4, dtype=torch.complex128, device=device), None


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_both_ops(device):
    for index, d, b, x0, maps in opcheck_cases(device):
        for mode, reverse in (("scatter", False), ("gather", True)):
            args = (index, d, b, x0, maps, mode, reverse)
            torch.library.opcheck(torch.ops.pdscan.scan_forward.default, args)
            x = torch.ops.pdscan.scan_forward(*args).detach()
            plain = [None if a is None else a.detach() for a in (d, x0)]
            back = (index, plain[0], plain[1], maps, x, torch.randn_like(x), mode, reverse, True)
            torch.library.opcheck(torch.ops.pdscan.scan_backward.default, back)


def test_ops_raise_the_core_errors_when_called_directly():
    d = torch.ones(2, 5, 3)
    with pytest.raises(ValueError, match=r"b: expected shape \(\.\.\., L, N\) = \(\.\.\., 5, 3\)"):
        torch.ops.pdscan.scan_forward(torch.zeros(2, 5, 3, dtype=torch.int64), d, torch.ones(2, 4, 3), None, None,
                                      "scatter", False)
    with pytest.raises(ValueError, match="mode"):
        torch.ops.pdscan.scan_forward(torch.zeros(2, 5, 3, dtype=torch.int64), d, d, None, None, "diagonal", False)


def test_torch_compile_fullgraph_matches_eager():
    rng = np.random.default_rng(9)
    inputs = make_inputs(rng, batch=(2,), L=8, N=4, K=3, unit=True)

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.9, dtype=torch.float64))
            self.x0 = torch.nn.Parameter(torch.randn(4, dtype=torch.complex128))

        def forward(self, index, maps, d, b):
            x = pdscan.torch.scan(index, d * self.scale, torch.sin(b), self.x0, maps=maps, mode="gather")
            return (x.abs() ** 2).sum()

    layer = Layer()
    t = to_torch(inputs, grad=False)
    args = (t["index"], t["maps"], t["d"], t["b"])
    eager = layer(*args)
    eager_grads = torch.autograd.grad(eager, (layer.scale, layer.x0))
    compiled = torch.compile(layer, fullgraph=True)  # inductor
    value = compiled(*args)
    grads = torch.autograd.grad(value, (layer.scale, layer.x0))
    assert torch.allclose(value, eager)
    for a, w in zip(grads, eager_grads):
        assert torch.allclose(a, w)


def test_torch_compile_dynamic_shapes_broadcast_and_errors():
    def loss(index, d, b, x0):
        return LOSSES["weighted_real"](pdscan.torch.scan(index, d, b, x0, mode="scatter", reverse=True))

    compiled = torch.compile(loss, fullgraph=True, dynamic=True, backend="aot_eager")
    rng = np.random.default_rng(10)
    for L in (5, 9):
        index = torch.tensor(rng.integers(0, 4, size=(2, L, 4)))
        d = torch.tensor(random_unit_values(rng, (L, 4), np.complex128), requires_grad=True)
        b = torch.randn(2, L, 4, dtype=torch.float64, requires_grad=True)
        x0 = torch.randn(4, dtype=torch.complex128, requires_grad=True)
        got = torch.autograd.grad(compiled(index, d, b, x0), (d, b, x0))
        want = torch.autograd.grad(loss(index, d, b, x0), (d, b, x0))
        for a, w in zip(got, want):
            assert a.shape == w.shape and a.dtype == w.dtype and torch.allclose(a, w, rtol=1e-12, atol=1e-12)
    # symbolic sizes that disagree: the core's message, with the sizes' symbols
    with pytest.raises(Exception, match=r"b: expected shape \(\.\.\., L, N\) = \(\.\.\., \S+, \S+\) to match d"):
        compiled(index, d, b[:, :3].detach(), x0)
    static = torch.compile(loss, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=r"b: expected shape \(\.\.\., L, N\)"):
        static(index, d, torch.ones(2, 3, 4), None)


def test_bad_input_gets_the_core_errors():
    d = torch.ones(2, 5, 3, dtype=torch.complex64)
    with pytest.raises(ValueError, match=r"index: values must lie in \[0, 3\); index\[1, 4, 2\] = 3"):
        idx = torch.zeros(2, 5, 3, dtype=torch.int64)
        idx[1, 4, 2] = 3
        pdscan.torch.scan(idx, d, d)
    with pytest.raises(TypeError, match=r"index: expected an integer dtype"):
        pdscan.torch.scan(torch.zeros(2, 5, 3), d, d)
    with pytest.raises(TypeError, match=r"arrays from different libraries cannot be mixed"):
        pdscan.torch.scan(np.zeros((2, 5, 3), np.int64), d, d)
    with pytest.raises(ValueError, match=r"the leading \(batch\) dimensions do not broadcast"):
        pdscan.torch.scan(torch.zeros(3, 5, 3, dtype=torch.int64), d, d)
    for check_index in (True, False):  # without the index check the op itself raises them
        for dtype in (torch.float16, torch.bfloat16):  # (NumPy has no bfloat16)
            with pytest.raises(TypeError, match=r"d: expected float32, float64, complex64 or complex128"):
                pdscan.torch.scan(torch.zeros(2, 5, 3, dtype=torch.int64), d.to(dtype), d,
                                  check_index=check_index)
        with pytest.raises(TypeError, match=r"index: expected an integer dtype"):
            pdscan.torch.scan(torch.zeros(2, 5, 3, dtype=torch.bool), d, d, check_index=check_index)
        with pytest.raises(ValueError, match=r"x0: expected shape \(\.\.\., N\) = \(\.\.\., 3\)"):
            pdscan.torch.scan(torch.zeros(2, 5, 3, dtype=torch.int64), d, d, torch.ones(2, 4, dtype=torch.complex64),
                              check_index=check_index)
        with pytest.raises(TypeError, match=r"arrays from different libraries cannot be mixed"):
            pdscan.torch.scan(torch.zeros(2, 5, 3, dtype=torch.int64), d, d.numpy(), check_index=check_index)
        with pytest.raises(ValueError, match="mode"):
            pdscan.torch.scan(torch.zeros(2, 5, 3, dtype=torch.int64), d, d, mode="both", check_index=check_index)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(11)
    inputs = make_inputs(rng, batch=(2,), L=6, N=4, K=2)
    t = to_torch(inputs)
    saved = {k: None if v is None else v.detach().clone() for k, v in t.items()}
    LOSSES["sum_abs2"](torch_scan(t, mode="gather")).backward()
    for k, v in t.items():
        if v is not None:
            assert torch.equal(v.detach(), saved[k]), k


def test_concurrent_calls_from_threads():
    rng = np.random.default_rng(12)
    inputs = make_inputs(rng, batch=(3,), L=300, N=8, unit=True)
    want = reference(inputs)
    t = to_torch(inputs, grad=False)
    errors = []

    def work():
        for _ in range(5):
            errors.append(rel_err(torch_scan(t).numpy(), want))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 20 and max(errors) < 1e-12


def test_validate_rows_for_torch():
    rows = validate(size=(3, 40, 5, 3), dtypes=("complex128",), only=["torch"])
    assert [(r.backend, r.device) for r in rows] == [("torch", "cpu")] + ([("torch", "cuda")] if HAS_CUDA else [])
    assert all(r.ok for r in rows), rows


# -- CUDA -------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_cuda_long_sequences_complex64_match_the_reference(mode, reverse):
    """Long enough for the CUDA backend's chunked schedules; broadcast, strided input."""
    rng = np.random.default_rng(13)
    inputs = make_inputs(rng, batch=(3,), L=3000, N=32, dtype=np.complex64, unit=True, index_dtype=np.int32)
    inputs["d"] = inputs["d"][:1]  # one d for every sequence
    grad_x = make_inputs(rng, batch=(3,), L=3000, N=32, dtype=np.complex64)["b"]
    t = to_torch(inputs, "cuda")
    b_strided = t["b"].detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
    x = pdscan.torch.scan(t["index"], t["d"], b_strided, t["x0"], mode=mode, reverse=reverse)
    grads = torch.autograd.grad(x, (t["d"], b_strided, t["x0"]), torch.tensor(grad_x, device="cuda"))
    wide = {k: None if v is None else (v.astype(np.complex128) if v.dtype.kind == "c" else v) for k, v in inputs.items()}
    want_x, want_grads = reference(wide, grad_x.astype(np.complex128), mode=mode, reverse=reverse)
    assert rel_err(x.detach().cpu().numpy(), want_x) < 1e-4
    for got, want in zip(grads, want_grads):
        assert got.shape == want.shape and rel_err(got.cpu().numpy(), want) < 1e-4


@needs_cuda
def test_cuda_mixed_devices_get_the_core_error():
    d = torch.ones(2, 5, 3, dtype=torch.complex64, device="cuda")
    index = torch.zeros(2, 5, 3, dtype=torch.int64)  # on the CPU
    for check_index in (True, False):
        with pytest.raises(ValueError, match="all arrays must be on one device"):
            pdscan.torch.scan(index, d, d, check_index=check_index)


@needs_cuda
def test_cuda_graph_capture_of_forward_and_backward_matches_eager():
    rng = np.random.default_rng(14)
    inputs = make_inputs(rng, batch=(4,), L=2048, N=16, dtype=np.complex64, K=5, unit=True)
    static = to_torch(inputs, "cuda")

    def step():
        x = torch_scan(static, mode="scatter")
        grads = torch.autograd.grad(LOSSES["sum_abs2"](x), (static["d"], static["b"], static["x0"]))
        return (x.detach(),) + grads

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm up: compile kernels, fill the allocator's pools
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    # new values in the static inputs, then replay: the graph must compute on them
    fresh = make_inputs(rng, batch=(4,), L=2048, N=16, dtype=np.complex64, K=5, unit=True)
    with torch.no_grad():
        for k in ("index", "maps", "d", "b", "x0"):
            static[k].copy_(torch.tensor(fresh[k], device="cuda"))
    graph.replay()
    torch.cuda.synchronize()
    eager = step()
    torch.cuda.synchronize()
    for a, w in zip(captured, eager):
        assert rel_err(a.cpu().numpy(), w.cpu().numpy()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_wide_unsigned_indices_are_checked_and_scanned(dtype):
    """torch implements few operations for uint16 to uint64 (no max, no comparison on
    the CPU): the index check still runs, and reports the value as stored."""
    rng = np.random.default_rng()
    index = rng.integers(0, 4, size=(2, 6, 4))
    d = torch.tensor(random_unit_values(rng, (2, 6, 4), np.complex128))
    b = torch.randn(2, 6, 4, dtype=torch.complex128)
    want = pdscan.torch.scan(torch.tensor(index), d, b)
    assert torch.equal(pdscan.torch.scan(torch.from_numpy(index.astype(np.uint64)).to(dtype), d, b), want)
    bad = index.astype(np.uint64)
    bad[1, 4, 2] = np.iinfo(np.dtype(str(dtype).split(".")[1])).max
    with pytest.raises(ValueError, match=rf"index\[1, 4, 2\] = {int(bad[1, 4, 2])}$"):
        pdscan.torch.scan(torch.from_numpy(bad).to(dtype), d, b)
