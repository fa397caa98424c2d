"""The PyTorch adapter: custom ops, autograd in PyTorch's convention, torch.compile,
against the NumPy reference and torch autograd through a plain torch loop."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pdscan  # noqa: E402
import pdscan.torch  # noqa: E402
from oracles import make_inputs, rel_err  # noqa: E402

pytestmark = pytest.mark.torch
MODES = ["scatter", "gather"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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


def loop_scan(index, d, b, x0, maps, mode, reverse):
    """The recurrence as a plain torch loop: index_add for scatter, gather for gather."""
    sigma = index if maps is None else torch.gather(
        maps.expand(index.shape[:-1] + maps.shape[-2:]), -2,
        index[..., None].expand(index.shape + maps.shape[-1:]).long())
    batch = torch.broadcast_shapes(d.shape[:-2], b.shape[:-2], sigma.shape[:-2],
                                   () if x0 is None else x0.shape[:-1])
    L, N = d.shape[-2:]
    sigma = sigma.expand(batch + (L, N)).long()
    d, b = d.expand(batch + (L, N)), b.expand(batch + (L, N))
    dtype = torch.promote_types(d.dtype, b.dtype)
    state = torch.zeros(batch + (N,), dtype=dtype) if x0 is None else x0.expand(batch + (N,)).to(dtype)
    states = [None] * L
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        if mode == "gather":
            new = d[..., t, :] * torch.gather(state, -1, sigma[..., t, :])
        else:
            new = torch.zeros_like(state).scatter_add(-1, sigma[..., t, :], d[..., t, :] * state)
        state = new + b[..., t, :]
        states[t] = state
    return torch.stack(states, dim=-2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
def test_forward_matches_reference(device, mode, reverse, K):
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2, 3), L=9, N=5, K=K)
    t = to_torch(inputs, device, grad=False)
    x = pdscan.torch.scan(t["index"], t["d"], t["b"], t["x0"], maps=t["maps"], mode=mode, reverse=reverse)
    want = pdscan.scan(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], maps=inputs["maps"], mode=mode,
                       reverse=reverse, backend="numpy")
    assert x.device.type == device and rel_err(x.cpu().numpy(), want) < 1e-12


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 2])
def test_gradcheck_complex128(mode, reverse, K):
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2,), L=5, N=4, K=K, unit=True)
    t = to_torch(inputs)
    fn = lambda d, b, x0: pdscan.torch.scan(t["index"], d, b, x0, maps=t["maps"], mode=mode, reverse=reverse)  # noqa
    assert torch.autograd.gradcheck(fn, (t["d"], t["b"], t["x0"]))


LOSSES = {
    "sum_abs2": lambda x: (x.abs() ** 2).sum(),
    "weighted_real": lambda x: (x * (0.3 - 0.7j)).real.mul(torch.arange(x.shape[-2])[:, None]).sum(),
    "last_state": lambda x: (x[..., -1, :] + 1.0).abs().sum(),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_gradients_equal_autograd_through_a_plain_loop(mode, reverse, K, loss):
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2,), L=40, N=6, K=K, unit=True)
    t1, t2 = to_torch(inputs), to_torch(inputs)
    LOSSES[loss](pdscan.torch.scan(t1["index"], t1["d"], t1["b"], t1["x0"], maps=t1["maps"], mode=mode,
                                   reverse=reverse)).backward()
    LOSSES[loss](loop_scan(t2["index"], t2["d"], t2["b"], t2["x0"], t2["maps"], mode, reverse)).backward()
    for k in ("d", "b", "x0"):
        assert rel_err(t1[k].grad.numpy(), t2[k].grad.numpy()) < 1e-10, k


def test_broadcast_real_conjugate_and_strided_inputs():
    """Gradients reduce over broadcast dimensions, stay real for real inputs; inputs
    with the conjugate bit set and non-contiguous inputs are read as they are."""
    rng = np.random.default_rng()
    L, N = 7, 4
    index = torch.tensor(rng.integers(0, N, size=(L, N)))
    d = torch.tensor(rng.uniform(0.8, 1.0, size=(1, L, N)), requires_grad=True)  # real, broadcast
    b_full = torch.randn(3, N, L, dtype=torch.complex128)
    b = b_full.transpose(-1, -2).conj().requires_grad_()  # non-contiguous, conjugate bit
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


def test_pdscan_scan_routes_torch_tensors_to_the_adapter():
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2,), L=6, N=4, K=2)
    t = to_torch(inputs)
    x = pdscan.scan(t["index"], t["d"], t["b"], t["x0"], maps=t["maps"])
    assert isinstance(x, torch.Tensor) and x.requires_grad
    g = torch.randn_like(x)
    (x * g.conj()).real.sum().backward()
    plain = pdscan.scan_vjp(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], x.detach().numpy(),
                            g.numpy(), maps=inputs["maps"], conjugate=True, backend="numpy")
    # torch's gradient of Re<g, x> is conj(J)^T g, halved by no factor for this loss
    assert rel_err(t["d"].grad.numpy(), plain[0]) < 1e-12
    via_core = pdscan.scan_vjp(t["index"], t["d"].detach(), t["b"].detach(), t["x0"].detach(), x.detach(), g,
                               maps=t["maps"])
    reference = pdscan.scan_vjp(inputs["index"], inputs["d"], inputs["b"], inputs["x0"], x.detach().numpy(),
                                g.numpy(), maps=inputs["maps"], backend="numpy")
    for a, w in zip(via_core, reference):
        assert rel_err(a.numpy(), w) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    rng = np.random.default_rng()
    for K in (None, 2):
        inputs = make_inputs(rng, batch=(2,), L=5, N=4, K=K)
        t = to_torch(inputs, device)
        for mode in MODES:
            args = (t["index"], t["d"], t["b"], t["x0"], t["maps"], mode, False)
            torch.library.opcheck(torch.ops.pdscan.scan_forward.default, args)
            x = torch.ops.pdscan.scan_forward(*args).detach()
            grad = torch.randn_like(x)
            back = (t["index"], t["d"].detach(), t["x0"].detach(), t["maps"], x, grad, mode, True, True)
            torch.library.opcheck(torch.ops.pdscan.scan_backward.default, back)


def test_torch_compile_fullgraph_matches_eager():
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2,), L=8, N=4, K=3, unit=True)

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.9, dtype=torch.float64))

        def forward(self, index, maps, d, b):
            x = pdscan.torch.scan(index, d * self.scale, torch.sin(b), maps=maps, mode="gather")
            return (x.abs() ** 2).sum()

    layer = Layer()
    t = to_torch(inputs, grad=False)
    args = (t["index"], t["maps"], t["d"], t["b"])
    eager = layer(*args)
    (eager_grad,) = torch.autograd.grad(eager, layer.scale)
    compiled = torch.compile(layer, fullgraph=True)  # inductor
    value = compiled(*args)
    (grad,) = torch.autograd.grad(value, layer.scale)
    assert torch.allclose(value, eager) and torch.allclose(grad, eager_grad)


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


def test_inputs_are_not_modified():
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(2,), L=6, N=4)
    t = to_torch(inputs)
    saved = {k: None if v is None else v.detach().clone() for k, v in t.items()}
    LOSSES["sum_abs2"](pdscan.torch.scan(t["index"], t["d"], t["b"], t["x0"])).backward()
    for k, v in t.items():
        if v is not None:
            assert torch.equal(v.detach(), saved[k])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_capture_of_forward_and_backward_matches_eager():
    rng = np.random.default_rng()
    inputs = make_inputs(rng, batch=(4,), L=64, N=16, dtype=np.complex64, unit=True)
    t = to_torch(inputs, "cuda", grad=False)
    d = t["d"].clone().requires_grad_()

    def step():
        x = pdscan.torch.scan(t["index"], d, t["b"], t["x0"], mode="scatter")
        (grad,) = torch.autograd.grad((x.abs() ** 2).sum(), d)
        return x.detach(), grad

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm up: compile kernels, fill allocator pools
            eager = step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured, eager):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
