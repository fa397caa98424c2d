"""pdscan.torch.PDSSM / FlashPDSSM and pdscan.jax.PDSSM / FlashPDSSM: the scan
states equal a NumPy loop built from the parameters alone; torch and JAX agree on
outputs and gradients from the same parameters (converted both ways); argument
errors name the argument."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pdscan.torch as pt  # noqa: E402
from pdscan.adapters._layers import param_specs  # noqa: E402

pytestmark = pytest.mark.torch
FORMS = ["PDSSM", "FlashPDSSM"]
SMALL = dict(state_size=5, heads=2, dict_size=3, mlp_ratio=2)


def _softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _reference_states(form, p, u, temperature, mode):
    """x (B, H, L, N) by a loop over time with explicit N x N matrices (scatter:
    A_t = P_t D_t, P_t[sigma(j), j] = 1; gather: A_t = D_t P_t^T), from the
    parameter dict alone."""
    Bsz, L, _ = u.shape
    H, K, N, _ = p["transitions"].shape
    x = np.zeros((Bsz, H, L, N), complex)
    for bi in range(Bsz):
        for h in range(H):
            state = np.eye(N)[0].astype(complex)  # the layers start every head from e_0
            for t in range(L):
                ut = u[bi, t]
                weights = _softmax(p["mix_w"][h] @ ut + p["mix_b"][h], 0)
                if form == "PDSSM":
                    sigma = np.argmax(np.tensordot(weights, p["transitions"][h], 1), axis=0)
                else:  # the router's choice, then the column argmax of that soft matrix
                    Q = _softmax(p["transitions"][h, np.argmax(weights)] / temperature, 0)
                    sigma = np.argmax(Q, axis=0)
                mag = _sigmoid(p["mag_w"][h] @ ut + p["mag_b"][h])
                phase = 2 * math.pi * _sigmoid(p["phase_w"][h] @ ut + p["phase_b"][h])
                P = np.zeros((N, N))
                P[sigma, np.arange(N)] = 1
                D = np.diag(mag * np.exp(1j * phase))
                A = P @ D if mode == "scatter" else D @ P.T
                b = (p["B_re"][h] + 1j * p["B_im"][h]) @ ut
                state = A @ state + b
                x[bi, h, t] = state
    return x


def _numpy_params(layer):
    return {k: v.detach().cpu().numpy() for k, v in layer.state_dict().items()}


@pytest.mark.parametrize("mode", ["scatter", "gather"])
@pytest.mark.parametrize("form", FORMS)
def test_torch_states_match_reference_loop(form, mode):
    torch.manual_seed(0)
    layer = getattr(pt, form)(6, temperature=0.7, mode=mode, dtype=torch.float64, **SMALL)
    u = np.random.default_rng(0).normal(size=(2, 9, 6))
    x = layer._states(torch.tensor(u)).detach().numpy()
    want = _reference_states(form, _numpy_params(layer), u, 0.7, mode)
    assert x.shape == (2, 2, 9, 5)
    np.testing.assert_allclose(x, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("form", FORMS)
def test_torch_layer_shapes_dtypes_and_gradients(form):
    torch.manual_seed(1)
    layer = getattr(pt, form)(8, **SMALL)
    u = torch.randn(3, 2, 7, 8, requires_grad=True)  # two leading batch dimensions
    y = layer(u)
    assert y.shape == u.shape and y.dtype == torch.float32
    y.sum().backward()
    # every parameter is reached by the gradient (the transitions only straight-through)
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert float(layer.transitions.grad.abs().sum()) > 0 and float(layer.mix_w.grad.abs().sum()) > 0
    assert float(u.grad.abs().sum()) > 0


def test_initialization_follows_the_specs():
    torch.manual_seed(2)
    layer = pt.PDSSM(32, state_size=16, heads=4, dict_size=8, magnitude_init=(0.95, 0.99), phase_init=(0.2, 0.3))
    mag = torch.sigmoid(layer.mag_b.detach())
    phase = torch.sigmoid(layer.phase_b.detach())
    assert 0.95 <= float(mag.min()) and float(mag.max()) <= 0.99
    assert 0.2 <= float(phase.min()) and float(phase.max()) <= 0.3
    assert abs(float(layer.transitions.detach().std()) - 1.0) < 0.05
    assert abs(float(layer.mix_w.detach().std()) * math.sqrt(32) - 1.0) < 0.1
    assert torch.all(layer.skip == 1) and torch.all(layer.mix_b == 0)
    assert list(dict(layer.named_parameters())) == list(param_specs(layer.config))


@pytest.mark.parametrize("kwargs, name", [
    (dict(d_model=0), "d_model"), (dict(state_size=2.5), "state_size"), (dict(heads=True), "heads"),
    (dict(dict_size=-1), "dict_size"), (dict(temperature=0.0), "temperature"),
    (dict(magnitude_init=(0.9, 1.0)), "magnitude_init"), (dict(phase_init=(0.5,)), "phase_init"),
    (dict(eps=float("nan")), "eps"), (dict(mlp_ratio=0), "mlp_ratio"), (dict(mode="rows"), "mode"),
])
def test_bad_configuration_names_the_argument(kwargs, name):
    args = dict(d_model=4) | kwargs
    with pytest.raises(ValueError, match=name):
        pt.PDSSM(**args)


def test_bad_input_and_parameters_name_the_problem():
    layer = pt.FlashPDSSM(4, **SMALL)
    with pytest.raises(ValueError, match=r"u must have shape \(\.\.\., L, 4\)"):
        layer(torch.zeros(2, 3, 5))
    with pytest.raises(TypeError, match="u: expected a real"):
        layer(torch.zeros(2, 3, 4, dtype=torch.int64))
    params = _numpy_params(layer)
    params["B_re"] = params["B_re"][:, :-1]
    with pytest.raises(ValueError, match="'B_re' has shape"):
        layer.load_params(params)
    del params["skip"]
    with pytest.raises(ValueError, match="missing \\['skip'\\]"):
        layer.load_params(params)


# -- torch and JAX agree ----------------------------------------------------------------


def _jax():
    jax = pytest.importorskip("jax")
    import pdscan.jax as pj

    return jax, pj


@pytest.mark.jax
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("mode", ["scatter", "gather"])
def test_torch_and_jax_agree_on_outputs_and_gradients(form, mode):
    jax, pj = _jax()
    jnp = jax.numpy
    torch.manual_seed(3)
    layer_t = getattr(pt, form)(8, temperature=0.8, mode=mode, **SMALL)
    layer_j = getattr(pj, form)(8, temperature=0.8, mode=mode, **SMALL)
    rng = np.random.default_rng(3)
    u = rng.normal(size=(3, 11, 8)).astype(np.float32)
    probe = rng.normal(size=u.shape).astype(np.float32)  # a random linear loss: gradients of unit scale
    params = {k: jnp.asarray(v) for k, v in _numpy_params(layer_t).items()}

    y_t = layer_t(torch.tensor(u))
    (y_t * torch.tensor(probe)).sum().backward()
    y_j = jax.jit(layer_j.apply)(params, u)
    grads_j = jax.grad(lambda p: jnp.sum(layer_j(p, u) * probe))(params)
    np.testing.assert_allclose(np.asarray(y_j), y_t.detach().numpy(), rtol=1e-5, atol=2e-5)
    for name, p in layer_t.named_parameters():
        g_t, g_j = p.grad.numpy(), np.asarray(grads_j[name])
        assert np.abs(g_t - g_j).max() <= 1e-5 * (1 + np.abs(g_t).max()), name


@pytest.mark.jax
def test_jax_parameters_load_into_torch():
    jax, pj = _jax()
    layer_j = pj.PDSSM(6, **SMALL)
    params = layer_j.init(jax.random.key(4))
    assert list(params) == list(param_specs(layer_j.config))
    layer_t = pt.PDSSM(6, **SMALL).load_params(params)
    u = np.random.default_rng(4).normal(size=(2, 13, 6)).astype(np.float32)
    np.testing.assert_allclose(layer_t(torch.tensor(u)).detach().numpy(), np.asarray(layer_j(params, u)),
                               rtol=1e-5, atol=2e-5)


@pytest.mark.jax
def test_jax_layer_errors_and_static_use():
    jax, pj = _jax()
    with pytest.raises(ValueError, match="heads"):
        pj.FlashPDSSM(4, heads=0)
    layer = pj.FlashPDSSM(4, **SMALL)
    assert hash(layer) == hash(pj.FlashPDSSM(4, **SMALL)) and layer != pj.PDSSM(4, **SMALL)
    params = layer.init(jax.random.key(5))
    with pytest.raises(ValueError, match="u must have shape"):
        layer(params, np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="'mix_w' has shape"):
        layer(dict(params, mix_w=params["mix_w"][:1]), np.zeros((2, 3, 4), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        layer.init(jax.random.key(0), dtype=np.int32)
