"""The njit kernels of the Numba backend (``numba_cpu`` holds the glue and the notes).

All kernels live in this one file on purpose: numba's on-disk cache checks only the
source file of the function it loads, so a kernel calling a helper from another
file would keep running stale machine code after that helper changed.

Arrays are (S, L, N) C-contiguous; ``table``/``selectors``/``use_maps`` give sigma_t
(see ``_map_row``).  Time is addressed by *position* in processing order: position
k of a span that runs ``forward`` in time is t = k, otherwise t = L - 1 - k.
Chunk c covers positions [_chunk_lo(c), _chunk_hi(c)): chunk 0 has ``first``
steps (it runs directly while the others are summarised), the others ``chunk``.

Inner loops are split so that the arithmetic runs over contiguous arrays (where
LLVM vectorises it) and only the index-driven gather or scatter-add is scalar.
Every index is range-checked before use (one predictable branch): a bad index
poisons the step with NaN and is never dereferenced.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_JIT = dict(cache=True, nogil=True, boundscheck=False, fastmath=False)

#: chunk summaries flush tiny factors to zero every this many steps (see _flush_tiny)
FLUSH_EVERY = 8


@njit(**_JIT)
def _map_row(table, selectors, s, t, use_maps):
    """(sigma_t, ok) of sequence s: table[s, selectors[s, t]] (dictionary form) or
    table[s, t]; ok is False for an out-of-range selector (then sigma is row 0)."""
    if use_maps:
        k = selectors[s, t]
        if k < 0 or k >= table.shape[1]:
            return table[s, 0], False
        return table[s, k], True
    return table[s, t], True


@njit(**_JIT)
def _time(position, forward, L):
    return position if forward else L - 1 - position


@njit(**_JIT)
def _chunk_lo(c, first, chunk):
    return 0 if c == 0 else first + (c - 1) * chunk


@njit(**_JIT)
def _chunk_hi(c, first, chunk, L):
    return min(L, first) if c == 0 else min(L, first + c * chunk)


# ------------------------------------------------------------------ one step


@njit(**_JIT)
def _apply(scatter, sigma, d, prev, b, row, tmp):
    """row = A prev + b with A = (sigma, d) in the given mode; True if an index was
    out of range (row is then left for the caller to poison)."""
    n = row.shape[0]
    bad = False
    if scatter:
        for j in range(n):
            tmp[j] = d[j] * prev[j]
        for i in range(n):
            row[i] = b[i]
        for j in range(n):
            i = sigma[j]
            if 0 <= i < n:
                row[i] += tmp[j]
            else:
                bad = True
    else:
        for i in range(n):
            j = sigma[i]
            if not 0 <= j < n:
                j = 0
                bad = True
            tmp[i] = prev[j]
        for i in range(n):
            row[i] = d[i] * tmp[i] + b[i]
    return bad


@njit(**_JIT)
def _compose(scatter, sigma, d, acc_sigma, acc_d, new_sigma, new_d):
    """(new_sigma, new_d) = (sigma, d) o (acc_sigma, acc_d), the PD monoid's product.
    acc_sigma is always in range; a bad sigma gives NaN factors."""
    n = acc_d.shape[0]
    if scatter:  # (sigma[acc_sigma], d[acc_sigma] * acc_d)
        for j in range(n):
            i = acc_sigma[j]
            k = sigma[i]
            if 0 <= k < n:
                new_sigma[j] = k
                new_d[j] = d[i] * acc_d[j]
            else:
                new_sigma[j] = 0
                new_d[j] = acc_d[j] * np.nan
    else:  # (acc_sigma[sigma], d * acc_d[sigma])
        for i in range(n):
            j = sigma[i]
            if 0 <= j < n:
                new_sigma[i] = acc_sigma[j]
                new_d[i] = d[i] * acc_d[j]
            else:
                new_sigma[i] = 0
                new_d[i] = acc_d[0] * np.nan


@njit(**_JIT)
def _flush_tiny(v, tiny):
    """Zero the factors below ``tiny``.  A product of many |d| < 1 otherwise settles
    on subnormal numbers, whose arithmetic is some 60 times slower on x86; a factor
    below tiny contributes nothing measurable to the chunk's transform."""
    for i in range(v.shape[0]):
        if abs(v[i].real) < tiny and abs(v[i].imag) < tiny:
            v[i] = 0


# ------------------------------------------------------------------ spans


@njit(**_JIT)
def _forward_span(table, selectors, use_maps, d, b, scatter, s, lo, hi, forward, state, tmp, out):
    """Steps at positions [lo, hi) of sequence s from ``state``; each step writes its
    output row and the next step reads it back from cache (no state copies)."""
    L = d.shape[1]
    prev = state
    for k in range(lo, hi):
        t = _time(k, forward, L)
        sigma, ok = _map_row(table, selectors, s, t, use_maps)
        row = out[s, t]
        if _apply(scatter, sigma, d[s, t], prev, b[s, t], row, tmp) or not ok:
            row[:] = np.nan  # out-of-range index (check_index=False)
        prev = row
    return prev


@njit(**_JIT)
def _vjp_span(table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, forward, conj, s, lo, hi,
              carry, spare, tmp, tmp2, grad_d, grad_b):
    """The adjoint at positions [lo, hi) of sequence s (its processing order runs
    against the forward's), entering with carry = A_next^T g_next; returns the carry
    leaving the span."""
    L = d.shape[1]
    for k in range(lo, hi):
        t = _time(k, forward, L)
        tp = t - 1 if not forward else t + 1  # the step whose state this one starts from
        sigma, ok = _map_row(table, selectors, s, t, use_maps)
        args = (scatter, conj, sigma, ok, d[s, t], grad_x[s, t], carry, spare, tmp, tmp2, grad_d[s, t], grad_b[s, t])
        if 0 <= tp < L:
            _vjp_step(*args, x[s, tp], True)
        elif has_x0:
            _vjp_step(*args, x0[s], True)
        else:  # the first step starts from a zero state
            _vjp_step(*args, carry, False)
        carry, spare = spare, carry
    return carry


@njit(**_JIT)
def _vjp_step(scatter, conj, sigma, ok, dt, gx, carry, spare, tmp, tmp2, gd, g, prev, has_prev):
    """One adjoint step: g = grad_x_t + carry (built in grad_b's row), grad_d, and
    spare = A_t^T g, the carry for the step before."""
    N = g.shape[0]
    for i in range(N):
        g[i] = gx[i] + carry[i]
    bad = not ok
    if scatter:
        # grad_d[j] = g[sigma(j)] prev[j]; carry[j] = d[j] g[sigma(j)]
        for j in range(N):
            i = sigma[j]
            if not 0 <= i < N:
                i = 0
                bad = True
            tmp[j] = g[i]
        if not has_prev:  # the first step starts from a zero state
            gd[:] = 0
        elif conj:
            for j in range(N):
                gd[j] = tmp[j] * np.conj(prev[j])
        else:
            for j in range(N):
                gd[j] = tmp[j] * prev[j]
        if conj:
            for j in range(N):
                spare[j] = np.conj(dt[j]) * tmp[j]
        else:
            for j in range(N):
                spare[j] = dt[j] * tmp[j]
    else:
        # grad_d[i] = g[i] prev[sigma(i)]; carry[sigma(i)] += d[i] g[i]
        if not has_prev:
            gd[:] = 0
        else:
            for i in range(N):
                j = sigma[i]
                if not 0 <= j < N:
                    j = 0
                    bad = True
                tmp[i] = prev[j]
            if conj:
                for i in range(N):
                    gd[i] = g[i] * np.conj(tmp[i])
            else:
                for i in range(N):
                    gd[i] = g[i] * tmp[i]
        if conj:
            for i in range(N):
                tmp2[i] = np.conj(dt[i]) * g[i]
        else:
            for i in range(N):
                tmp2[i] = dt[i] * g[i]
        for j in range(N):
            spare[j] = 0
        for i in range(N):
            j = sigma[i]
            if 0 <= j < N:
                spare[j] += tmp2[i]
            else:
                bad = True
    if bad:  # an out-of-range index (check_index=False): poison, never dereference
        gd[:] = np.nan
        spare[:] = np.nan


@njit(**_JIT)
def _summarise(table, selectors, use_maps, d, b, scatter, adjoint, conj, s, lo, hi, forward, tiny,
               sum_sigma, sum_d, sum_c, c):
    """sum_*[s, c]: the affine transform (sigma, d, c) of the steps at positions [lo, hi) of
    sequence s, composed in processing order.  Forward: x <- A_t x + b_t.  Adjoint
    (``adjoint``): h <- A_t^T (h + b_t) with A_t^T, the other mode, conjugated when
    ``conj``; b is then grad_x."""
    L, N = d.shape[1], d.shape[2]
    mode = scatter != adjoint
    acc_sigma = np.arange(N)
    new_sigma = np.empty(N, np.int64)
    acc_d = np.ones(N, d.dtype)
    new_d = np.empty(N, d.dtype)
    acc_c = np.zeros(N, d.dtype)
    spare = np.empty(N, d.dtype)
    tmp = np.empty(N, d.dtype)
    factors = np.empty(N, d.dtype)
    shift = np.zeros(N, d.dtype)  # b_t, or zero for the adjoint
    for k in range(lo, hi):
        t = _time(k, forward, L)
        sigma, ok = _map_row(table, selectors, s, t, use_maps)
        dt, bt = d[s, t], b[s, t]
        # copy the step into work buffers so that every helper call below has one
        # signature (inputs are read-only arrays, buffers are not): fewer compiles
        if adjoint and conj:
            for i in range(N):
                factors[i] = np.conj(dt[i])
        else:
            factors[:] = dt
        if adjoint:  # h <- A^T (h + grad_x_t)
            for i in range(N):
                tmp[i] = acc_c[i] + bt[i]
        else:  # x <- A x + b_t
            tmp[:] = acc_c
            shift[:] = bt
        bad = _apply(mode, sigma, factors, tmp, shift, spare, new_d)
        _compose(mode, sigma, factors, acc_sigma, acc_d, new_sigma, new_d)
        if bad or not ok:
            spare[:] = np.nan
            new_d[:] = np.nan
        acc_c, spare = spare, acc_c
        acc_sigma, new_sigma = new_sigma, acc_sigma
        acc_d, new_d = new_d, acc_d
        if (k - lo) % FLUSH_EVERY == FLUSH_EVERY - 1:
            _flush_tiny(acc_d, tiny)
    sum_sigma[s, c] = acc_sigma
    sum_d[s, c] = acc_d
    sum_c[s, c] = acc_c


@njit(**_JIT)
def chain_starts(sum_sigma, sum_d, sum_c, mode_scatter, starts):
    """starts[s, c + 1] = T_c starts[s, c] for the summarised chunks 1 .. C-2
    (starts[s, 1], the state leaving the directly run chunk 0, is given)."""
    S, C, N = starts.shape
    for s in range(S):
        for c in range(1, C - 1):
            state, nxt = starts[s, c], starts[s, c + 1]
            sigma, dc = sum_sigma[s, c], sum_d[s, c]
            if mode_scatter:
                nxt[:] = sum_c[s, c]
                for j in range(N):
                    nxt[sigma[j]] += dc[j] * state[j]
            else:
                for i in range(N):
                    nxt[i] = dc[i] * state[sigma[i]] + sum_c[s, c, i]


# ------------------------------------------------------------------ parallel drivers
# One parallel kernel per direction, the phase a run-time argument: each prange
# kernel costs seconds of compilation, so there are two, not six.

SEQUENCES, CHUNKS_FIRST, CHUNKS_REPLAY = 0, 1, 2


@njit(**_JIT)
def _tasks(phase, S, n_chunks):
    """The number of parallel tasks of a phase."""
    return S if phase == SEQUENCES else S * (n_chunks - 1)


@njit(parallel=True, **_JIT)
def forward_phase(phase, table, selectors, use_maps, d, b, x0, has_x0, scatter, forward, first, chunk, tiny,
                  sum_sigma, sum_d, sum_c, starts, out):
    """SEQUENCES: one task per sequence.  CHUNKS_FIRST: chunk 0 runs from x0 (its
    final state goes to starts[s, 1]) while chunks 1 .. C-2 are summarised (chunk
    C-1's summary is never needed).  CHUNKS_REPLAY: chunks 1 .. C-1 replay from
    starts.  The loop body is one call: parfor lowering then has little to do."""
    for task in prange(_tasks(phase, d.shape[0], starts.shape[1])):
        _forward_task(phase, task, table, selectors, use_maps, d, b, x0, has_x0, scatter, forward, first, chunk,
                      tiny, sum_sigma, sum_d, sum_c, starts, out)


@njit(**_JIT)
def _forward_task(phase, task, table, selectors, use_maps, d, b, x0, has_x0, scatter, forward, first, chunk, tiny,
                  sum_sigma, sum_d, sum_c, starts, out):
    S, L, N = d.shape
    n_chunks = starts.shape[1]
    per_sequence = 1 if phase == SEQUENCES else n_chunks - 1
    s = task // per_sequence
    c = task % per_sequence + (1 if phase == CHUNKS_REPLAY else 0)
    tmp = np.empty(N, d.dtype)
    if phase == CHUNKS_FIRST and c > 0:
        _summarise(table, selectors, use_maps, d, b, scatter, False, False, s, _chunk_lo(c, first, chunk),
                   _chunk_hi(c, first, chunk, L), forward, tiny, sum_sigma, sum_d, sum_c, c)
    elif phase == CHUNKS_REPLAY:
        _forward_span(table, selectors, use_maps, d, b, scatter, s, _chunk_lo(c, first, chunk),
                      _chunk_hi(c, first, chunk, L), forward, starts[s, c].copy(), tmp, out)
    else:
        state = x0[s].copy() if has_x0 else np.zeros(N, d.dtype)
        hi = L if phase == SEQUENCES else _chunk_hi(0, first, chunk, L)
        last = _forward_span(table, selectors, use_maps, d, b, scatter, s, 0, hi, forward, state, tmp, out)
        if phase == CHUNKS_FIRST:
            starts[s, 1] = last


@njit(parallel=True, **_JIT)
def vjp_phase(phase, table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, forward, conj, first, chunk,
              tiny, sum_sigma, sum_d, sum_c, carries, grad_d, grad_b, grad_x0):
    """The VJP's phases as ``forward_phase``'s, over the adjoint's order (``forward``
    is the adjoint's direction in time): carries[s, c] enters chunk c, and the
    carry leaving the last chunk is grad_x0."""
    for task in prange(_tasks(phase, d.shape[0], carries.shape[1])):
        _vjp_task(phase, task, table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, forward, conj, first,
                  chunk, tiny, sum_sigma, sum_d, sum_c, carries, grad_d, grad_b, grad_x0)


@njit(**_JIT)
def _vjp_task(phase, task, table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, forward, conj, first, chunk,
              tiny, sum_sigma, sum_d, sum_c, carries, grad_d, grad_b, grad_x0):
    S, L, N = d.shape
    n_chunks = carries.shape[1]
    per_sequence = 1 if phase == SEQUENCES else n_chunks - 1
    s = task // per_sequence
    c = task % per_sequence + (1 if phase == CHUNKS_REPLAY else 0)
    if phase == CHUNKS_FIRST and c > 0:
        _summarise(table, selectors, use_maps, d, grad_x, scatter, True, conj, s, _chunk_lo(c, first, chunk),
                   _chunk_hi(c, first, chunk, L), forward, tiny, sum_sigma, sum_d, sum_c, c)
    else:
        if phase == CHUNKS_REPLAY:
            lo, hi, carry = _chunk_lo(c, first, chunk), _chunk_hi(c, first, chunk, L), carries[s, c].copy()
        else:
            hi = L if phase == SEQUENCES else _chunk_hi(0, first, chunk, L)
            lo, carry = 0, np.zeros(N, d.dtype)
        carry = _vjp_span(table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, forward, conj, s, lo,
                          hi, carry, np.empty(N, d.dtype), np.empty(N, d.dtype), np.empty(N, d.dtype), grad_d,
                          grad_b)
        if phase == CHUNKS_FIRST:
            carries[s, 1] = carry
        elif phase == SEQUENCES or c == n_chunks - 1:
            grad_x0[s] = carry


@njit(parallel=True, **_JIT)
def dictionary_grad_w(table, u, v, grad_w):
    """The straight-through dictionary form's router gradient (``pdscan.ste``) from
    the rank-one factors u, v (S, L, N): grad_w[s, t, k] = sum_j u[s, t, table[s, k, j]]
    v[s, t, j].  Out-of-range entries add nothing."""
    S, L, N = u.shape
    K = table.shape[1]
    for s in prange(S):
        for t in range(L):
            for k in range(K):
                acc = u[s, t, 0] * 0
                for j in range(N):
                    i = table[s, k, j]
                    if i >= 0 and i < N:
                        acc += u[s, t, i] * v[s, t, j]
                grad_w[s, t, k] = acc


@njit(parallel=True, **_JIT)
def dictionary_grad_q(selectors, members, u, v, grad_q):
    """grad_q[g, k] = the sum of u_t v_t^T over the steps t that chose k
    (selectors[s, t] = k) of the sequences s = members[g, :] sharing dictionary g, in
    that order; a selector out of range matches no k.  One task per (g, k)."""
    G, M = members.shape
    K, N = grad_q.shape[1], grad_q.shape[2]
    L = u.shape[1]
    for task in prange(G * K):
        g, k = task // K, task % K
        out = grad_q[g, k]
        out[:, :] = 0
        for m in range(M):
            s = members[g, m]
            row = selectors[s]
            for t in range(L):
                if row[t] != k:
                    continue
                for i in range(N):
                    ui = u[s, t, i]
                    for j in range(N):
                        out[i, j] += ui * v[s, t, j]
