"""Test helpers: random PD-scan inputs and the dense N x N oracle.

The dense oracle builds every A_t as a full matrix and runs the recurrence with
matrix-vector products, so it shares no code with the library.
"""

from __future__ import annotations

import numpy as np

COMPLEX = {np.float32: np.complex64, np.float64: np.complex128}


def random_values(rng, shape, dtype, scale=1.0):
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        out = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    else:
        out = rng.normal(size=shape)
    return (scale * out).astype(dtype)


def random_unit_values(rng, shape, dtype, radius=(0.9, 1.0)):
    """|d| near 1 so that gradients neither vanish nor explode over many steps."""
    dtype = np.dtype(dtype)
    mag = rng.uniform(*radius, size=shape)
    if dtype.kind == "c":
        return (mag * np.exp(2j * np.pi * rng.uniform(size=shape))).astype(dtype)
    return (mag * rng.choice([-1.0, 1.0], size=shape)).astype(dtype)


def edge_integers(dtype, high):
    """Values of integer ``dtype`` (as Python ints, sorted) at the edges of an index
    range [0, high): the type's extremes, around 0 and around high, and for 64-bit types
    values whose low 32 bits are in range (2^32 + 3, 2^62 + 7, and 2^63 + 5, 2^64 - 1
    unsigned, -2^32 + 3 signed), which a conversion through 32 bits would keep."""
    info = np.iinfo(dtype)
    values = {info.min, info.max, 0, 1, high - 1, high, high + 1, -1 if info.min < 0 else 2}
    if info.bits == 64:
        values |= {2**32 + 3, 2**62 + 7} | ({2**63 + 5, 2**64 - 1} if info.min == 0 else {-(2**32) + 3})
    return sorted(values)


def random_maps(rng, shape, n, dtype=np.int64, collisions=True):
    """Integer maps of ``shape`` (last axis N) into [0, n): with collisions (several
    columns landing on one row) or permutations."""
    if collisions:
        # draw from a few rows only, so collisions are certain for N >= 3
        rows = max(1, n // 2)
        return rng.integers(0, rows, size=shape).astype(dtype)
    flat = np.stack([rng.permutation(n) for _ in range(int(np.prod(shape[:-1])))])
    return flat.reshape(shape).astype(dtype)


def make_inputs(rng, batch=(3,), L=9, N=5, dtype=np.complex128, *, K=None, x0=True,
                collisions=True, index_dtype=np.int64, unit=False):
    """A dict of scan inputs: index (or selectors + maps), d, b, x0."""
    shape = tuple(batch) + (L, N)
    values = random_unit_values if unit else random_values
    out = {"d": values(rng, shape, dtype), "b": random_values(rng, shape, dtype)}
    if K is None:
        out["index"] = random_maps(rng, shape, N, index_dtype, collisions)
        out["maps"] = None
    else:
        out["maps"] = random_maps(rng, tuple(batch) + (K, N), N, index_dtype, collisions)
        out["index"] = rng.integers(0, K, size=tuple(batch) + (L,)).astype(index_dtype)
    out["x0"] = random_values(rng, tuple(batch) + (N,), dtype) if x0 else None
    return out


def dense(sigma, d, mode):
    """The N x N matrices of transforms (sigma, d) of shape (..., N) -> (..., N, N)."""
    sigma = np.asarray(sigma)
    d = np.asarray(d)
    sigma, d = np.broadcast_arrays(sigma, d)
    n = d.shape[-1]
    out = np.zeros(d.shape + (n,), dtype=d.dtype)
    flat_out = out.reshape(-1, n, n)
    flat_s, flat_d = sigma.reshape(-1, n), d.reshape(-1, n)
    for r in range(flat_out.shape[0]):
        for j in range(n):
            if mode == "scatter":  # column j holds d[j] at row sigma(j)
                flat_out[r, flat_s[r, j], j] += flat_d[r, j]
            else:  # row i holds d[i] at column sigma(i)
                flat_out[r, j, flat_s[r, j]] += flat_d[r, j]
    return out


def step_maps(index, maps):
    if maps is None:
        return np.asarray(index)
    index, maps = np.asarray(index), np.asarray(maps)
    batch = np.broadcast_shapes(index.shape[:-1], maps.shape[:-2])
    index = np.broadcast_to(index, batch + index.shape[-1:])
    maps = np.broadcast_to(maps, batch + maps.shape[-2:])
    return np.take_along_axis(maps, index[..., None].astype(np.intp), axis=-2)


def dense_scan(index, d, b, x0=None, *, maps=None, mode="scatter", reverse=False):
    """The recurrence with dense matrices, in complex128 (or float64).  Only the
    entries a map sets are added, so that a NaN or an Inf reaches just the rows its
    lane goes to (a dense product would spread 0 * Inf).  Maps may send lanes out of
    range (``check_index=False``): the state of a step whose map (or selector) is out
    of range is NaN throughout, and the recurrence goes on from it."""
    index = np.asarray(index).astype(np.int64)
    n = np.shape(d)[-1]
    if maps is None:
        sigma = index
    else:
        k = np.shape(maps)[-2]
        known = (index >= 0) & (index < k)
        sigma = np.where(known[..., None], step_maps(np.where(known, index, 0), maps), -1)
    bad = ((sigma < 0) | (sigma >= n)).any(axis=-1)
    dtype = np.result_type(d, b, *(() if x0 is None else (x0,)), np.float64)
    batch = np.broadcast_shapes(sigma.shape[:-2], np.shape(d)[:-2], np.shape(b)[:-2],
                                () if x0 is None else np.shape(x0)[:-1])
    L = np.shape(d)[-2]
    sigma, bad = np.broadcast_to(sigma, batch + (L, n)), np.broadcast_to(bad, batch + (L,))
    d = np.broadcast_to(np.asarray(d, dtype), batch + (L, n))
    b = np.broadcast_to(np.asarray(b, dtype), batch + (L, n))
    state = np.zeros(batch + (n,), dtype) if x0 is None else np.broadcast_to(np.asarray(x0, dtype), batch + (n,))
    x = np.empty(batch + (L, n), dtype)
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        s = np.where(bad[..., t, None], 0, sigma[..., t, :])
        A, where = dense(s, d[..., t, :], mode), dense(s, np.ones(d.shape[:-2] + (n,)), mode) != 0
        # only the entries the map sets: a NaN state reaches the rows its lanes go to
        state = np.where(where, A * state[..., None, :], 0).sum(axis=-1) + b[..., t, :]
        state = np.where(bad[..., t, None], np.nan, state)
        x[..., t, :] = state
    return x


def dense_vjp(index, d, b, x0, grad_x, *, maps=None, mode="scatter", reverse=False):
    """(grad_d, grad_b, grad_x0) at the full batch shape, plain transpose convention,
    from the dense matrices: g[t] = grad_x[t] + A_next^T g[next]; grad of A_t is
    the outer product g[t] x[t-1]^T, read off at the nonzero positions of A_t."""
    sigma = step_maps(index, maps)
    x = dense_scan(index, d, b, x0, maps=maps, mode=mode, reverse=reverse)
    dtype = x.dtype
    batch, (L, N) = x.shape[:-2], x.shape[-2:]
    A = np.broadcast_to(dense(sigma, np.asarray(d, dtype), mode), batch + (L, N, N))
    sigma = np.broadcast_to(sigma, batch + (L, N))
    state0 = np.zeros(batch + (N,), dtype) if x0 is None else np.broadcast_to(np.asarray(x0, dtype), batch + (N,))
    order = list(range(L - 1, -1, -1) if reverse else range(L))
    grad_d = np.zeros(batch + (L, N), dtype)
    grad_b = np.zeros(batch + (L, N), dtype)
    g_next = np.zeros(batch + (N,), dtype)
    A_next = None
    for pos in range(L - 1, -1, -1):
        t = order[pos]
        g = grad_x[..., t, :] + (0 if A_next is None else np.einsum("...ji,...j->...i", A_next, g_next))
        prev = x[..., order[pos - 1], :] if pos > 0 else state0
        outer = g[..., :, None] * prev[..., None, :]  # dLoss/dA_t[i, j]
        s = sigma[..., t, :]
        if mode == "scatter":  # d[j] sits at (sigma(j), j)
            grad_d[..., t, :] = np.take_along_axis(outer, s[..., None, :], axis=-2)[..., 0, :]
        else:  # d[i] sits at (i, sigma(i))
            grad_d[..., t, :] = np.take_along_axis(outer, s[..., :, None], axis=-1)[..., 0]
        grad_b[..., t, :] = g
        g_next, A_next = g, A[..., t, :, :]
    grad_x0 = np.einsum("...ji,...j->...i", A_next, g_next) if L else np.zeros(batch + (N,), dtype)
    return grad_d, grad_b, grad_x0


def wide_magnitudes(rng, n):
    """Complex values of random sign whose magnitudes span 24 decades: sums of them
    round differently in almost any other order."""
    def part():
        return rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-8, 16, n)
    return part() + 1j * part()


def lane_order_problem(rng, L, N, dtype=np.complex128):
    """(inputs, x) of one sequence of a scatter scan with d = 1 (so every product is
    exact and the only rounding is in the sums) whose result shows the order of each
    row's adds: crowded steps (three rows, or every lane on one row) alternate with
    permutations that bring new terms of wide magnitudes in b.  x: lane_order_scan's."""
    for _ in range(100):
        index = np.empty((L, N), np.int32)
        b = np.zeros((L, N), dtype)
        for t in range(L):
            if t % 2:
                rows = rng.choice(N, size=3, replace=False)
                index[t] = rows[0] if t % 4 == 1 else rows[rng.integers(0, 3, N)]
            else:
                index[t] = rng.permutation(N)
                b[t] = wide_magnitudes(rng, N)
        x0 = wide_magnitudes(rng, N).astype(dtype)
        # drawn again unless the same adds, every row's sources taken last lane first,
        # give another result (few lanes can round the same both ways)
        x = lane_order_scan(index, b, x0)
        if not np.array_equal(x, lane_order_scan(index, b, x0, range(N - 1, -1, -1))):
            inputs = dict(index=index[None], d=np.ones((1, L, N), dtype), b=b[None], x0=x0[None], maps=None)
            return inputs, x[None]
    raise AssertionError("no draw whose result shows the order of the adds")


def lane_order_scan(index, b, x0, lanes=None):
    """The scatter scan with d = 1, one add at a time (in b's precision), each row's
    sources in lane order (or in the order of ``lanes``)."""
    x, out = x0.copy(), np.empty(b.shape, b.dtype)
    lanes = range(len(x)) if lanes is None else lanes
    for t in range(index.shape[0]):
        acc = {}
        for j in lanes:
            i = index[t, j]
            acc[i] = acc[i] + x[j] if i in acc else x[j]
        x = np.array([acc.get(i, b.dtype.type(0)) + b[t, i] for i in range(len(x))], b.dtype)
        out[t] = x
    return out


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.linalg.norm(b.ravel()), 1e-300)
    return float(np.linalg.norm((a - b).ravel()) / scale)


def zero_nan(a):
    """``a`` with 0 where it is NaN (a complex NaN in either part is a NaN)."""
    return np.where(np.isnan(a), 0, a)


def with_indices_out_of_range(rng, K, batch=(3,), L=11, N=5):
    """Inputs whose sequence 1 has an index (or a selector, or a dictionary entry) out
    of range at steps 2 and 7, the other sequences none; d near 1 in magnitude."""
    inp = make_inputs(rng, batch=batch, L=L, N=N, K=K, unit=True)
    if K is None:
        inp["index"][1, 2, 3] = N
        inp["index"][1, 7, 0] = -1
    else:
        inp["maps"] = np.concatenate([inp["maps"], np.full(batch + (1, N), 0)], axis=-2)
        inp["maps"][1, K, 4] = -3  # entry K of sequence 1's dictionary sends lane 4 out of range
        inp["index"][1, 2] = K
        inp["index"][1, 7] = K + 1  # a selector out of range
    return inp
