"""What the PD-SSM layers of both frameworks share: their hyperparameters, checked
once, and the table of parameters (name, shape, initialization).

``pdscan.torch.PDSSM`` / ``FlashPDSSM`` and ``pdscan.jax.PDSSM`` / ``FlashPDSSM``
hold parameters with exactly these names and shapes, so a torch ``state_dict``
converts to the JAX parameter dict (and back) name by name, and the two sample
their initial values from the same distributions.  No framework is imported here.

A layer is one post-norm block over u (batch, L, d_model), H heads of state size N
and a dictionary of K transition matrices (docs/layers.md has the equations)::

    mixture  s_t = softmax_K(mix_w u_t + mix_b)                   (PDSSM, per head)
    router   w_t = softmax_K(mix_w u_t + mix_b)                   (FlashPDSSM)
    P_t      straight-through one-hot from transitions (H, K, N, N)
    D_t      sigmoid(mag_w u_t + mag_b) * exp(2 pi i sigmoid(phase_w u_t + phase_b))
    b_t      (B_re + i B_im) u_t
    x_t      = P_t D_t x_{t-1} + b_t                              (pdscan.*.scan_ste_*)
    y_t      = Re((C_re + i C_im) x_t) + skip * u_t
    h_t      = LayerNorm1(u_t + y_t)
    out_t    = LayerNorm2(h_t + mlp2(GELU(mlp1(h_t))))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._problem import check_positive


@dataclass(frozen=True)
class Init:
    """How one parameter starts: ``kind`` is "normal" (mean 0, ``a`` the standard
    deviation), "zeros", "ones", "logit_uniform" (logit(U(a, b)), so that its
    sigmoid is uniform in (a, b)) or "uniform" (U(a, b))."""

    kind: str
    a: float = 0.0
    b: float = 0.0


def check_config(d_model, state_size, heads, dict_size, mlp_ratio, temperature, magnitude_init, phase_init, eps,
                 mode="scatter"):
    """The hyperparameters, checked, as a dict; errors name the argument."""
    for name, value in (("d_model", d_model), ("state_size", state_size), ("heads", heads),
                        ("dict_size", dict_size), ("mlp_ratio", mlp_ratio)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    check_positive(temperature, "temperature")
    check_positive(eps, "eps")
    for name, pair in (("magnitude_init", magnitude_init), ("phase_init", phase_init)):
        ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
        # both are fractions of a sigmoid's range: magnitudes of |d|, phases of 2 pi
        if not ok or not (0 < pair[0] <= pair[1] < 1):
            raise ValueError(f"{name}: expected (low, high) with 0 < low <= high < 1, got {pair!r}")
    if mode not in ("scatter", "gather"):
        raise ValueError(f"mode: expected 'scatter' or 'gather', got {mode!r}")
    return dict(d_model=d_model, state_size=state_size, heads=heads, dict_size=dict_size, mlp_ratio=mlp_ratio,
                mode=mode,
                temperature=float(temperature), magnitude_init=tuple(float(v) for v in magnitude_init),
                phase_init=tuple(float(v) for v in phase_init), eps=float(eps))


def param_specs(cfg):
    """{name: (shape, Init)} of one layer, in a fixed order (the same for both forms).

    The initialization, and why:

    * ``mix_w`` (H, K, D) ~ N(0, 1/D), ``mix_b`` (H, K) = 0: the mixture (PDSSM) or
      router (FlashPDSSM) logits start at unit scale, so every dictionary entry is
      used and gets gradient.
    * ``transitions`` (H, K, N, N) ~ N(0, 1): PDSSM reads it as logits M_k (the hard
      map is the column argmax of sum_k s_k M_k); FlashPDSSM as logits of the soft
      dictionary Q_k = softmax over rows.  Unit scale keeps the column softmax away
      from saturation, where the straight-through gradient vanishes.
    * ``mag_b`` (H, N) = logit(U(magnitude_init)), ``mag_w`` (H, N, D) ~ N(0, 0.01/D):
      |d| starts near U(0.9, 0.999) by default, close to 1 so that the state carries
      information over long sequences (what length generalization needs), and
      depends on the input only weakly at first.
    * ``phase_b`` (H, N) = logit(U(phase_init)), ``phase_w`` (H, N, D) ~ N(0, 1/D):
      the phase 2 pi sigmoid(.) starts small (2 pi U(0.001, 0.1) by default), so d
      starts near the positive real axis and the state does not oscillate with the
      sequence length before anything is learned; the input moves the phase logit
      by O(1), so that tokens differ in phase from the start.
    * ``B_re``, ``B_im`` (H, N, D) ~ N(0, 1/(2D)): b_t = B u_t of unit variance.
    * ``C_re``, ``C_im`` (D, H, N) ~ N(0, 1/(2HN)): Re(C x) = C_re Re x - C_im Im x is
      the linear readout of the real and imaginary parts concatenated.
    * ``skip`` (D,) = 1: the skip term skip * u_t (as Mamba's D).
    * ``norm1_w``, ``norm2_w`` (D,) = 1, ``norm1_b``, ``norm2_b`` (D,) = 0: LayerNorm.
    * ``mlp1_w`` (F, D) ~ N(0, 1/D), ``mlp2_w`` (D, F) ~ N(0, 1/F), biases 0, with
      F = mlp_ratio * D: the GELU MLP, weights as (out, in) like torch.nn.Linear.
    """
    H, K, N, D = cfg["heads"], cfg["dict_size"], cfg["state_size"], cfg["d_model"]
    F = cfg["mlp_ratio"] * D
    return {
        "mix_w": ((H, K, D), Init("normal", 1 / math.sqrt(D))),
        "mix_b": ((H, K), Init("zeros")),
        "transitions": ((H, K, N, N), Init("normal", 1.0)),
        "mag_w": ((H, N, D), Init("normal", 0.1 / math.sqrt(D))),
        "mag_b": ((H, N), Init("logit_uniform", *cfg["magnitude_init"])),
        "phase_w": ((H, N, D), Init("normal", 1 / math.sqrt(D))),
        "phase_b": ((H, N), Init("logit_uniform", *cfg["phase_init"])),
        "B_re": ((H, N, D), Init("normal", 1 / math.sqrt(2 * D))),
        "B_im": ((H, N, D), Init("normal", 1 / math.sqrt(2 * D))),
        "C_re": ((D, H, N), Init("normal", 1 / math.sqrt(2 * H * N))),
        "C_im": ((D, H, N), Init("normal", 1 / math.sqrt(2 * H * N))),
        "skip": ((D,), Init("ones")),
        "norm1_w": ((D,), Init("ones")),
        "norm1_b": ((D,), Init("zeros")),
        "mlp1_w": ((F, D), Init("normal", 1 / math.sqrt(D))),
        "mlp1_b": ((F,), Init("zeros")),
        "mlp2_w": ((D, F), Init("normal", 1 / math.sqrt(F))),
        "mlp2_b": ((D,), Init("zeros")),
        "norm2_w": ((D,), Init("ones")),
        "norm2_b": ((D,), Init("zeros")),
    }


def check_params(params, cfg, where):
    """Every parameter present with its shape; an error names the first that is not."""
    specs = param_specs(cfg)
    missing = [name for name in specs if name not in params]
    extra = [name for name in params if name not in specs]
    if missing or extra:
        raise ValueError(f"{where}: expected parameters {list(specs)}, missing {missing}, unexpected {extra}")
    for name, (shape, _) in specs.items():
        if tuple(params[name].shape) != shape:
            raise ValueError(f"{where}: parameter {name!r} has shape {tuple(params[name].shape)}, expected {shape}")


def check_input(u, d_model, where):
    """u must be a real (batch..., L, d_model) array."""
    if u.ndim < 2 or u.shape[-1] != d_model:
        raise ValueError(f"{where}: u must have shape (..., L, {d_model}), got {tuple(u.shape)}")
