"""Straight-through scans: learn the discrete transitions without N x N per step.

PD-SSM learns its one-hot matrices with the straight-through estimator: the forward
uses hard one-hot matrices, the backward the gradient of a soft surrogate.  The
gradient with respect to a step's transition is rank one (the adjoint state times
the previous state), so it contracts straight into the parameters' gradients.

Two forms, both with ``mode`` (scatter: A_t = P_t D_t; gather: A_t = D_t P_t^T) and
``reverse`` as in ``pdscan.scan``:

* Dictionary (Flash PD-SSM): router weights w (..., L, K) and soft dictionary
  matrices Q (..., K, N, N) (columns are distributions over rows).  Forward:
  k_t = argmax_k w[t, k], sigma_k(j) = argmax_i Q[k, i, j].  Surrogate:
  P_t = sum_k W_t[k] Qhat_k with W = onehot(k) - w (detached) + w and
  Qhat = onehot-columns(argmax Q) - Q (detached) + Q.
* Mixture (PD-SSM): weights s (..., L, K) and logits M (..., K, N, N); per step
  M_t = sum_k s_t[k] M_k, sigma_t(j) = argmax_i M_t[i, j].  Surrogate:
  P_t = hard - soft (detached) + soft, soft = column softmax of M_t / temperature.

The scans themselves run on the chosen backend; the extra gradients are
contractions over the adjoint states, written here in the array API (their
definition).  A backend may fuse the dictionary form's two (``dictionary_grads``:
the CUDA and Numba backends do, one pass each, and the JAX kernel backend calls
them).  Nothing of size N x N is kept per step: the dictionary form needs
O(L K N) (router) and O(K N^2) per dictionary, summed over the sequences that
share it, the mixture form recomputes M_t chunk by chunk of time, O(chunk N^2) at
a time.
"""

from __future__ import annotations

import math

from . import backends, monoid
from ._namespace import device, namespace
from ._problem import check_like_output, check_options, check_positive, prepare, unbroadcast

#: the mixture form materialises M_t for this many (sequence, step) pairs at a time
MIXTURE_CHUNK_ELEMENTS = 1 << 22
#: the dictionary form's backward expands its factors K-fold for this many elements at a time
DICTIONARY_CHUNK_ELEMENTS = 1 << 22


def _scan_vjp_full(p, x, grad_x, be, conjugate):
    """The scan's VJP on backend ``be`` at the full batch shape, plus the state each
    step starts from and d, both conjugated for the PyTorch convention.  Returns
    (grad_d, g, grad_x0, previous, d) with g the adjoint states (= grad_b)."""
    xp = p.xp
    grad_d, g, grad_x0 = be.vjp(p, x, grad_x, conjugate=conjugate)
    conj = xp.conj if conjugate and xp.isdtype(p.dtype, "complex floating") else (lambda a: a)
    first = xp.zeros_like(x[..., :1, :]) if p.x0 is None else p.x0[..., None, :]
    if p.reverse:  # the step at t starts from x[t+1]; the last one from x0
        previous = xp.concat([x[..., 1:, :], first], axis=-2)
    else:
        previous = xp.concat([first, x[..., :-1, :]], axis=-2)
    return grad_d, g, grad_x0, conj(previous), conj(p.d)


def _time_chunks(steps, per_step, budget):
    """[start, stop) ranges of ``steps`` steps with at most ``budget`` elements of a
    temporary that takes ``per_step`` elements a step (every sequence's; at least one step)."""
    chunk = max(1, budget // max(1, per_step))
    return [(start, min(start + chunk, steps)) for start in range(0, steps, chunk)]


def _rank_one_factors(mode, previous, g, d):
    """u, v with dLoss/dP_t = u_t v_t^T.  Scatter (A = P D): g (x_prev d)^T.
    Gather (A = D P^T): the transpose of (d g) x_prev^T, that is x_prev (d g)^T."""
    return (g, previous * d) if mode == "scatter" else (previous, d * g)


def _check_router(xp, weights, table, names):
    wname, tname = names
    for a, name, ndim, layout in ((weights, wname, 2, "(..., L, K)"), (table, tname, 3, "(..., K, N, N)")):
        if not xp.isdtype(a.dtype, "real floating"):
            raise TypeError(f"{name}: expected float32 or float64, got {a.dtype}")
        if a.ndim < ndim:
            raise ValueError(f"{name}: expected shape {layout}, got {tuple(a.shape)}")
    K, N = table.shape[-3], table.shape[-1]
    if table.shape[-2] != N or weights.shape[-1] != K:
        raise ValueError(f"{wname} and {tname}: expected {wname} (..., L, K) and {tname} (..., K, N, N) with one K "
                         f"and square matrices, got {tuple(weights.shape)} and {tuple(table.shape)}")


def _empty_grads(p, like):
    xp = p.xp
    return tuple(None if a is None else xp.zeros_like(a) for a in like)


# ----------------------------------------------------------------------------- dictionary form


def _dictionary_problem(w, Q, d, b, x0, mode, reverse):
    xp = namespace(w, Q, d, b, x0)
    _check_router(xp, w, Q, ("w", "Q"))
    index = xp.argmax(w, axis=-1)  # k_t, the first maximum
    maps = xp.argmax(Q, axis=-2)  # sigma_k(j) = argmax_i Q[k, i, j], the first maximum
    return prepare(index, d, b, x0, maps=maps, mode=mode, reverse=reverse, check_index=False,
                   extra=dict(w=w, Q=Q))


def scan_ste_dict(w, Q, d, b, x0=None, *, mode="scatter", reverse=False, backend=None):
    """The scan with the dictionary form's hard transitions (see the module doc)."""
    p = _dictionary_problem(w, Q, d, b, x0, mode, reverse)
    if p.empty:
        return p.xp.zeros(p.batch_shape + (p.L, p.N), dtype=p.dtype, device=device(d))
    return backends.select(p.library, backend).forward(p)


def scan_ste_dict_vjp(w, Q, d, b, x0, x, grad_x, *, mode="scatter", reverse=False, backend=None,
                      conjugate=False):
    """(grad_w, grad_Q, grad_d, grad_b, grad_x0) of ``scan_ste_dict``: the gradients of
    the dense straight-through surrogate, computed without it."""
    p = _dictionary_problem(w, Q, d, b, x0, mode, reverse)
    xp = p.xp
    x = check_like_output(p, x, "x")
    grad_x = check_like_output(p, grad_x, "grad_x")
    if p.empty:
        return _empty_grads(p, (w, Q, d, b, x0))
    be = backends.select(p.library, backend)
    grad_d, g, grad_x0, previous, dc = _scan_vjp_full(p, x, grad_x, be, conjugate)
    u, v = _rank_one_factors(p.mode, previous, g, dc)
    members, groups = _dictionary_members(p, Q)
    # a backend may fuse the contractions (one kernel each on CUDA); the array form defines them
    fused = getattr(be, "dictionary_grads", None)
    grad_W, grad_Q = fused(p, u, v, members) if fused is not None else _dictionary_grads(p, u, v, members)
    return (
        unbroadcast(xp, grad_W, w),
        unbroadcast(xp, xp.reshape(grad_Q, groups + tuple(grad_Q.shape[1:])), Q),
        unbroadcast(xp, grad_d, d),
        unbroadcast(xp, g, b),
        None if x0 is None else unbroadcast(xp, grad_x0, x0),
    )


def _dictionary_members(p, Q):
    """(members, groups): the sequences that share each of Q's dictionaries, as flat
    sequence numbers (G, M), and Q's batch shape aligned to the problem's (1 where Q is
    broadcast; G is its size).  grad_Q is summed over each group's M sequences as one
    contraction over their M L steps, so a dictionary broadcast over the batch (the
    layers' one per head) never has a gradient per sequence: (G, K, N, N), not
    (S, K, N, N), which for a batch of 256 with 128 states is gigabytes."""
    xp, nb = p.xp, len(p.batch_shape)
    groups = (1,) * (nb - (Q.ndim - 3)) + tuple(Q.shape[:-3])
    shared = [i for i in range(nb) if groups[i] == 1 and p.batch_shape[i] != 1]
    own = [i for i in range(nb) if i not in shared]
    dtype = xp.int32 if p.S < 2**31 else xp.int64
    seq = xp.reshape(xp.arange(p.S, dtype=dtype, device=device(p.d)), p.batch_shape)
    if shared:
        seq = xp.permute_dims(seq, tuple(own + shared))
    G = math.prod(p.batch_shape[i] for i in own)
    return xp.reshape(seq, (G, p.S // G)), groups


def _dictionary_grads(p, u, v, members):
    """grad_W (..., L, K) and grad_Q (G, K, N, N), a dictionary group of ``members``
    each (``_dictionary_members``), from the rank-one factors.  Each K-fold product is
    one batched operation over a chunk of steps, not K of them: on a GPU the step is
    bound by the number of launches at training sizes.  The chunks keep the K-fold
    expanded factors to DICTIONARY_CHUNK_ELEMENTS at a time."""
    xp, K, N, L = p.xp, p.K, p.N, p.L
    maps = xp.reshape(p.maps, tuple(p.maps.shape[:-2]) + (1, K * N))  # sigma_k(j) at k N + j
    ks = xp.arange(K, dtype=p.index.dtype, device=device(u))
    grad_W = []
    for start, stop in _time_chunks(L, p.S * K * N, DICTIONARY_CHUNK_ELEMENTS):
        uc, vc = u[..., start:stop, :], v[..., start:stop, :]
        # grad_W[t, k] = sum_ij u[i] v[j] H_k[i, j] = sum_j u[sigma_k(j)] v[j]: O(K N) a step
        picked = monoid.gather(xp, uc, maps)
        picked = xp.reshape(picked, tuple(picked.shape[:-1]) + (K, N))
        grad_W.append(xp.matmul(picked, vc[..., None])[..., 0])
    grad_W = xp.concat(grad_W, axis=-2) if len(grad_W) > 1 else grad_W[0]
    # grad_Q[g, k] = sum over the steps of group g's sequences that chose k of u_t v_t^T:
    # (K N x steps)(steps x N), the group's sequences one after another along the steps
    G, M = members.shape
    order = xp.reshape(members, (-1,))

    def grouped(a, tail):
        a = xp.reshape(xp.broadcast_to(a, p.batch_shape + (L,) + tail), (p.S, L) + tail)
        if M > 1:  # a member per sequence (M = 1) keeps the batch order
            a = xp.take(a, order, axis=0)
        return xp.reshape(a, (G, M * L) + tail)

    ug, vg, chosen = grouped(u, (N,)), grouped(v, (N,)), grouped(p.index, ())
    grad_Q = None
    for start, stop in _time_chunks(M * L, G * K * N, DICTIONARY_CHUNK_ELEMENTS):
        chose = xp.astype(chosen[:, start:stop, None] == ks, u.dtype)
        masked = xp.reshape(chose[..., None] * ug[:, start:stop, None, :], (G, stop - start, K * N))
        part = xp.matmul(xp.matrix_transpose(masked), vg[:, start:stop, :])
        grad_Q = part if grad_Q is None else grad_Q + part
    return grad_W, xp.reshape(grad_Q, (G, K, N, N))


# ----------------------------------------------------------------------------- mixture form


def check_static(mode, reverse, temperature=None):
    """The straight-through forms' options that pick code (static arguments under
    jax.jit, plain Python values under torch.compile), with the core's errors: mode,
    reverse and, for the mixture form, temperature.  The adapters check them before
    tracing; here prepare and the mixture's problem check them again on the way."""
    check_options(mode, reverse)
    if temperature is not None:
        check_positive(temperature, "temperature")


def _mixed_logits(xp, s, M_flat, start, stop):
    """M_t = sum_k s_t[k] M_k for the steps [start, stop): (..., steps, N*N)."""
    return xp.matmul(s[..., start:stop, :], M_flat)


def _mixture_problem(s, M, d, b, x0, mode, reverse, temperature):
    xp = namespace(s, M, d, b, x0)
    _check_router(xp, s, M, ("s", "M"))
    check_positive(temperature, "temperature")
    K, N = M.shape[-3], M.shape[-1]
    L = s.shape[-2]
    batch = monoid._broadcast_shapes(tuple(s.shape[:-2]), tuple(M.shape[:-3]))
    s_full = xp.broadcast_to(s, batch + (L, K))
    M_flat = xp.broadcast_to(xp.reshape(M, tuple(M.shape[:-2]) + (N * N,)), batch + (K, N * N))
    # sigma_t(j) = argmax_i M_t[i, j], computed a chunk of steps at a time
    shell = prepare(xp.zeros(batch + (L, N), dtype=xp.int32, device=device(d)), d, b, x0, mode=mode,
                    reverse=reverse, check_index=False, extra=dict(s=s, M=M))
    pieces = []
    for start, stop in _time_chunks(L, shell.S * N * N, MIXTURE_CHUNK_ELEMENTS):
        logits = _mixed_logits(xp, s_full, M_flat, start, stop)
        pieces.append(xp.argmax(xp.reshape(logits, tuple(logits.shape[:-1]) + (N, N)), axis=-2))
    index = xp.concat(pieces, axis=-2) if pieces else shell.index
    p = shell.replace(index=xp.broadcast_to(index, shell.batch_shape + (L, N)))
    return p, xp.broadcast_to(s_full, p.batch_shape + (L, K)), xp.broadcast_to(M_flat, p.batch_shape + (K, N * N))


def scan_ste_mixture(s, M, d, b, x0=None, *, mode="scatter", reverse=False, temperature=1.0, backend=None):
    """The scan with the mixture form's hard transitions (see the module doc)."""
    p, _, _ = _mixture_problem(s, M, d, b, x0, mode, reverse, temperature)
    if p.empty:
        return p.xp.zeros(p.batch_shape + (p.L, p.N), dtype=p.dtype, device=device(d))
    return backends.select(p.library, backend).forward(p)


def scan_ste_mixture_vjp(s, M, d, b, x0, x, grad_x, *, mode="scatter", reverse=False, temperature=1.0,
                         backend=None, conjugate=False):
    """(grad_s, grad_M, grad_d, grad_b, grad_x0) of ``scan_ste_mixture``: the gradients
    of the dense straight-through surrogate through the column softmax, recomputing
    M_t and its softmax a chunk of steps at a time."""
    p, s_full, M_flat = _mixture_problem(s, M, d, b, x0, mode, reverse, temperature)
    xp = p.xp
    x = check_like_output(p, x, "x")
    grad_x = check_like_output(p, grad_x, "grad_x")
    if p.empty:
        return _empty_grads(p, (s, M, d, b, x0))
    be = backends.select(p.library, backend)
    grad_d, g, grad_x0, previous, dc = _scan_vjp_full(p, x, grad_x, be, conjugate)
    u, v = _rank_one_factors(p.mode, previous, g, dc)
    N, K, real = p.N, M.shape[-3], s.dtype
    grad_s_parts = []
    grad_M = xp.zeros(p.batch_shape + (K, N * N), dtype=real, device=device(d))
    for start, stop in _time_chunks(p.L, p.S * N * N, MIXTURE_CHUNK_ELEMENTS):
        logits = xp.reshape(_mixed_logits(xp, s_full, M_flat, start, stop), p.batch_shape + (stop - start, N, N))
        scaled = logits / temperature
        soft = xp.exp(scaled - xp.max(scaled, axis=-2, keepdims=True))
        soft = soft / xp.sum(soft, axis=-2, keepdims=True)
        uc, vc = u[..., start:stop, :], v[..., start:stop, :]
        # softmax over rows i of column j, backward of dLoss/dP = u v^T:
        # dLoss/dlogit[i, j] = soft[i, j] v[j] (u[i] - sum_i' soft[i', j] u[i']) / temperature
        centre = xp.sum(soft * uc[..., :, None], axis=-2, keepdims=True)
        grad_logits = xp.real(soft * vc[..., None, :] * (uc[..., :, None] - centre)) / temperature
        grad_logits = xp.reshape(xp.astype(grad_logits, real), p.batch_shape + (stop - start, N * N))
        grad_s_parts.append(xp.matmul(grad_logits, xp.matrix_transpose(M_flat)))
        grad_M = grad_M + xp.matmul(xp.matrix_transpose(s_full[..., start:stop, :]), grad_logits)
    grad_s = xp.concat(grad_s_parts, axis=-2)
    grad_M = xp.reshape(grad_M, p.batch_shape + (K, N, N))
    return (
        unbroadcast(xp, grad_s, s),
        unbroadcast(xp, grad_M, M),
        unbroadcast(xp, grad_d, d),
        unbroadcast(xp, g, b),
        None if x0 is None else unbroadcast(xp, grad_x0, x0),
    )
