"""PD-SSM layers for JAX: ``PDSSM`` (mixture form, ``scan_ste_mixture``) and
``FlashPDSSM`` (dictionary form, ``scan_ste_dict``) as pure functions over a
parameter dict.

A layer object holds only hyperparameters (it is a frozen, hashable dataclass, so
it can be a static argument of ``jax.jit``); ``layer.init(key)`` returns the
parameters, a dict of arrays, and ``layer(params, u)`` (or ``layer.apply``) the
output.  Parameters are a plain pytree, so ``jax.grad``, ``jax.jit``, ``jax.vmap``
and any optimizer (optax or hand-written) take them as they are; Flax is not
needed.  The names, shapes, initial distributions and the computation are those
of ``pdscan.torch.PDSSM`` / ``FlashPDSSM`` (equations in ``pdscan.adapters._layers``
and docs/layers.md): a torch ``state_dict`` converted to NumPy is a parameter dict
here, and the outputs agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from .._layers import check_config, check_input, check_params, param_specs
from .ste import scan_ste_dict, scan_ste_mixture


def _sample(key, init, shape, dtype):
    if init.kind == "normal":
        return init.a * jax.random.normal(key, shape, dtype)
    if init.kind == "zeros":
        return jnp.zeros(shape, dtype)
    if init.kind == "ones":
        return jnp.ones(shape, dtype)
    if init.kind == "logit_uniform":
        return jax.scipy.special.logit(jax.random.uniform(key, shape, dtype, init.a, init.b))
    raise ValueError(f"init: unknown kind {init.kind!r}")


def _layer_norm(x, weight, bias, eps):
    # as torch.nn.functional.layer_norm: biased variance, eps inside the square root
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * weight + bias


@dataclass(frozen=True)
class _PDSSMBase:
    d_model: int
    state_size: int = 16
    heads: int = 1
    dict_size: int = 8
    mlp_ratio: int = 2
    temperature: float = 1.0
    magnitude_init: tuple = (0.9, 0.999)
    phase_init: tuple = (0.001, 0.1)
    eps: float = 1e-5
    mode: str = "scatter"
    config: dict = field(init=False, repr=False, compare=False, hash=False)

    _form = None  # "mixture" or "dict"

    def __post_init__(self):
        cfg = check_config(self.d_model, self.state_size, self.heads, self.dict_size, self.mlp_ratio,
                           self.temperature, self.magnitude_init, self.phase_init, self.eps, self.mode)
        object.__setattr__(self, "magnitude_init", cfg["magnitude_init"])  # tuples: hashable
        object.__setattr__(self, "phase_init", cfg["phase_init"])
        object.__setattr__(self, "config", cfg)

    def init(self, key, dtype=jnp.float32):
        """The parameters: a dict {name: array} drawn with ``key`` (one subkey per
        parameter, in the fixed order of ``param_specs``)."""
        if dtype not in (jnp.float32, jnp.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
        specs = param_specs(self.config)
        keys = jax.random.split(key, len(specs))
        return {name: _sample(k, init, shape, dtype) for k, (name, (shape, init)) in zip(keys, specs.items())}

    def states(self, params, u):
        """The scan's states x, (..., H, L, N) complex, for the input u (..., L, D)."""
        p, c = params, self.config
        # heads become the batch dimension just before time: (..., H, L, .)
        logits = jnp.einsum("...ld,hkd->...hlk", u, p["mix_w"]) + p["mix_b"][:, None, :]
        weights = jax.nn.softmax(logits, axis=-1)
        mag = jax.nn.sigmoid(jnp.einsum("...ld,hnd->...hln", u, p["mag_w"]) + p["mag_b"][:, None, :])
        phase = (2 * math.pi) * jax.nn.sigmoid(jnp.einsum("...ld,hnd->...hln", u, p["phase_w"])
                                               + p["phase_b"][:, None, :])
        d = mag * jnp.exp(1j * phase)
        b = jax.lax.complex(jnp.einsum("...ld,hnd->...hln", u, p["B_re"]),
                            jnp.einsum("...ld,hnd->...hln", u, p["B_im"]))
        # every head starts from e_0: a state the hard transitions move around from the first step
        x0 = jnp.zeros((c["heads"], c["state_size"]), d.dtype).at[:, 0].set(1)
        if self._form == "mixture":
            return scan_ste_mixture(weights, p["transitions"], d, b, x0, mode=c["mode"], temperature=c["temperature"])
        Q = jax.nn.softmax(p["transitions"] / c["temperature"], axis=-2)  # columns: distributions over rows
        return scan_ste_dict(weights, Q, d, b, x0, mode=c["mode"])

    def apply(self, params, u):
        """u (..., L, d_model) real -> (..., L, d_model)."""
        name = type(self).__name__
        check_params(params, self.config, name)
        u = jnp.asarray(u)
        if not jnp.issubdtype(u.dtype, jnp.floating):
            raise TypeError(f"u: expected a real floating-point array, got {u.dtype}")
        check_input(u, self.d_model, name)
        p = params
        u = u.astype(p["mix_w"].dtype)
        x = self.states(p, u)
        # Re(C x) = C_re Re(x) - C_im Im(x), summed over heads and state
        y = (jnp.einsum("...hln,dhn->...ld", x.real, p["C_re"])
             - jnp.einsum("...hln,dhn->...ld", x.imag, p["C_im"])) + p["skip"] * u
        h = _layer_norm(u + y, p["norm1_w"], p["norm1_b"], self.eps)
        # exact (erf) GELU, as torch's default; jax.nn.gelu's default is the tanh form
        hidden = jax.nn.gelu(h @ p["mlp1_w"].T + p["mlp1_b"], approximate=False)
        return _layer_norm(h + hidden @ p["mlp2_w"].T + p["mlp2_b"], p["norm2_w"], p["norm2_b"], self.eps)

    __call__ = apply


class PDSSM(_PDSSMBase):
    """PD-SSM layer (mixture form): per step and head, s_t = softmax(mix_w u_t + mix_b)
    mixes K transition logit matrices, M_t = sum_k s_t[k] M_k, and the hard
    transition is its column argmax, learned straight-through
    (``pdscan.jax.scan_ste_mixture``, softmax temperature ``temperature``).

    ``PDSSM(d_model, state_size=16, heads=1, dict_size=8, mlp_ratio=2,
    temperature=1.0, magnitude_init=(0.9, 0.999), phase_init=(0.001, 0.1),
    eps=1e-5, mode="scatter")``; ``params = layer.init(key)``; ``y = layer(params, u)`` with u and y
    (..., L, d_model).  Parameters, shapes and initialization as
    ``pdscan.torch.PDSSM`` (see ``pdscan.adapters._layers.param_specs``).
    """

    _form = "mixture"


class FlashPDSSM(_PDSSMBase):
    """Flash PD-SSM layer (dictionary form): a router w_t = softmax(mix_w u_t + mix_b)
    picks, per step and head, one of K soft dictionary matrices
    Q_k = softmax over rows of transitions[k] / temperature; the hard transition is
    the column argmax of the chosen Q_k, learned straight-through
    (``pdscan.jax.scan_ste_dict``).  Interface as ``PDSSM``.
    """

    _form = "dict"
