"""Numba CPU backend: the scan and its fused VJP, parallel over sequences or time.

Two schedules, chosen by shape (``plan``):

* **sequences**: ``prange`` over the S independent sequences, each a sequential
  loop over time with its state in a small buffer: one pass over the data.
* **chunks**: when there are fewer sequences than threads (one long sequence), time
  is cut into chunks.  Each chunk is first reduced to its affine transform with the
  PD monoid (in parallel), a short sequential pass over the chunk summaries gives
  every chunk's start state, and the chunks are replayed from those (in parallel).
  The VJP does the same for the adjoint recurrence h_t = A_t^T (grad_x_t + h_next).

Memory beyond the outputs: O(threads * N), plus O(chunks * N) on the chunked path.

Specialisations: the kernels are compiled lazily per (value dtype, index dtype):
4 value dtypes x 7 index dtypes (uint64 maps are read as int64), each for the forward and the VJP, and for the
summary kernels of the chunked path.  Selectors of the dictionary form are cast to
int64 (an (S, L) array: cheap), arrays are made C-contiguous, and mode, direction,
conjugation and the dictionary form are run-time flags.  Numba also types an
array's read-only flag (broadcast inputs are read-only views), which can double a
signature; nothing else multiplies the count.  Everything is compiled with ``cache=True``: a second process loads
the machine code from numba's cache instead of compiling.

Threads: numba's default threading layer (TBB, OpenMP or its workqueue, whichever
is installed) with ``numba.get_num_threads()`` threads; set NUMBA_NUM_THREADS or
call ``numba.set_num_threads`` to change it.

Bounds safety: an index outside [0, N) (possible only with check_index=False) is
never dereferenced; the state of the step that uses it becomes NaN, and so does
everything that depends on it.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

#: per thread, at least this many steps per chunk before the chunked schedule pays off
MIN_CHUNK_STEPS = 64
#: the chunked schedule is used when there are at least this many threads per sequence
CHUNKED_MIN_THREADS_PER_SEQUENCE = 4
#: chunks per thread on the chunked schedule (more chunks balance the load better)
CHUNKS_PER_THREAD = 4

_JIT = dict(cache=True, nogil=True, boundscheck=False, fastmath=False)


# ------------------------------------------------------------------ per-step primitives


@njit(**_JIT)
def _row(table, selectors, s, t, use_maps):
    """sigma_t of sequence s: table[s, selectors[s, t]] (dictionary) or table[s, t]."""
    if use_maps:
        k = selectors[s, t]
        if k < 0 or k >= table.shape[1]:
            return table[s, 0], False
        return table[s, k], True
    return table[s, t], True


@njit(**_JIT)
def _step(scatter, sigma, ok, d, b, state, nxt, out):
    """nxt = A state + b (out receives it too); NaN where the map is out of range."""
    n = state.shape[0]
    if scatter:
        for i in range(n):
            nxt[i] = 0
        for j in range(n):
            i = sigma[j]
            if ok and 0 <= i < n:
                nxt[i] += d[j] * state[j]
            else:
                nxt[:] = np.nan
                break
        for i in range(n):
            v = nxt[i] + b[i]
            nxt[i] = v
            out[i] = v
    else:
        for i in range(n):
            j = sigma[i]
            if ok and 0 <= j < n:
                v = d[i] * state[j] + b[i]
            else:
                v = state[0] * np.nan
            nxt[i] = v
            out[i] = v


@njit(**_JIT)
def _flush(v, tiny):
    """v, or 0 once |v| < tiny.  A product of many |d| < 1 otherwise settles on a
    subnormal number, and subnormal arithmetic is some 60 times slower on x86; a
    chunk summary whose factor is below tiny contributes nothing measurable."""
    return v * 0 if abs(v.real) < tiny and abs(v.imag) < tiny else v


@njit(**_JIT)
def _compose(scatter, sigma, ok, d, acc_sigma, acc_d, tmp_sigma, tmp_d, tiny):
    """acc = (sigma, d) o acc, in place (the PD monoid's composition)."""
    n = acc_d.shape[0]
    if scatter:  # (sigma[acc_sigma], d[acc_sigma] * acc_d)
        for j in range(n):
            i = acc_sigma[j]
            k = sigma[i] if ok else -1
            if 0 <= k < n:
                acc_sigma[j] = k
                acc_d[j] = _flush(d[i] * acc_d[j], tiny)
            else:
                acc_sigma[j] = 0
                acc_d[j] = acc_d[j] * np.nan
    else:  # (acc_sigma[sigma], d * acc_d[sigma])
        for i in range(n):
            j = sigma[i] if ok else -1
            if 0 <= j < n:
                tmp_sigma[i] = acc_sigma[j]
                tmp_d[i] = _flush(d[i] * acc_d[j], tiny)
            else:
                tmp_sigma[i] = 0
                tmp_d[i] = acc_d[0] * np.nan
        acc_sigma[:] = tmp_sigma
        acc_d[:] = tmp_d


@njit(**_JIT)
def _apply_summary(scatter, sigma, d, c, state, nxt):
    """nxt = A state + c for a chunk summary (indices already in range)."""
    n = state.shape[0]
    if scatter:
        for i in range(n):
            nxt[i] = c[i]
        for j in range(n):
            nxt[sigma[j]] += d[j] * state[j]
    else:
        for i in range(n):
            nxt[i] = d[i] * state[sigma[i]] + c[i]


# ------------------------------------------------------------------ forward


@njit(**_JIT)
def _forward_span(table, selectors, use_maps, d, b, scatter, s, t_first, count, step, state, spare, out):
    """Run ``count`` steps of sequence s from t_first (step +1 or -1), from ``state``.

    Each step writes its state straight into its output row and reads the previous
    one back from there (it is still in cache), so no state is copied."""
    n = state.shape[0]
    t = t_first
    prev = state
    for _ in range(count):
        sigma, ok = _row(table, selectors, s, t, use_maps)
        row, dt, bt = out[s, t], d[s, t], b[s, t]
        bad = not ok
        if scatter:
            for i in range(n):
                row[i] = bt[i]
            for j in range(n):
                i = sigma[j]
                if 0 <= i < n:
                    row[i] += dt[j] * prev[j]
                else:
                    bad = True
        else:
            for i in range(n):
                j = sigma[i]
                if not 0 <= j < n:
                    j = 0
                    bad = True
                row[i] = dt[i] * prev[j] + bt[i]
        if bad:  # an out-of-range map (check_index=False): poison, never dereference
            row[:] = np.nan
        prev = row
        t += step
    return prev


@njit(parallel=True, **_JIT)
def _forward_sequences(table, selectors, use_maps, d, b, x0, has_x0, scatter, reverse, out):
    S, L, N = d.shape
    for s in prange(S):
        state = np.zeros(N, d.dtype)
        spare = np.empty(N, d.dtype)
        if has_x0:
            state[:] = x0[s]
        if reverse:
            _forward_span(table, selectors, use_maps, d, b, scatter, s, L - 1, L, -1, state, spare, out)
        else:
            _forward_span(table, selectors, use_maps, d, b, scatter, s, 0, L, 1, state, spare, out)


@njit(parallel=True, **_JIT)
def _chunk_summaries(table, selectors, use_maps, d, b, scatter, transposed, reverse, chunk, n_chunks,
                     conj, tiny, sum_sigma, sum_d, sum_c):
    """Each chunk's affine summary (sigma, d, c): the chunk's steps composed in
    processing order.  ``transposed`` composes A_t^T and feeds A_t^T b_t (the
    adjoint's h_t = A_t^T (g_in_t + h_next)), with d conjugated when ``conj``."""
    S, L, N = d.shape
    for task in prange(S * n_chunks):
        s = task // n_chunks
        c = task % n_chunks
        lo = c * chunk
        hi = min(L, lo + chunk)
        acc_sigma = np.arange(N).astype(sum_sigma.dtype)
        acc_d = np.ones(N, d.dtype)
        acc_c = np.zeros(N, d.dtype)
        tmp_sigma = np.empty(N, sum_sigma.dtype)
        tmp_d = np.empty(N, d.dtype)
        spare = np.empty(N, d.dtype)
        sink = np.empty(N, d.dtype)
        zeros = np.zeros(N, d.dtype)
        dd = np.empty(N, d.dtype)
        mode = scatter != transposed  # A^T of scatter is gather and back
        for k in range(hi - lo):
            t = (hi - 1 - k) if reverse else (lo + k)
            sigma, ok = _row(table, selectors, s, t, use_maps)
            for i in range(N):
                dd[i] = np.conj(d[s, t, i]) if conj else d[s, t, i]
            if transposed:  # acc_c <- A^T (acc_c + b_t)
                for i in range(N):
                    spare[i] = acc_c[i] + b[s, t, i]
                _step(mode, sigma, ok, dd, zeros, spare, acc_c, sink)
            else:
                _step(mode, sigma, ok, dd, b[s, t], acc_c, spare, sink)
                acc_c, spare = spare, acc_c
            _compose(mode, sigma, ok, dd, acc_sigma, acc_d, tmp_sigma, tmp_d, tiny)
        sum_sigma[s, c] = acc_sigma
        sum_d[s, c] = acc_d
        sum_c[s, c] = acc_c


@njit(**_JIT)
def _chunk_starts(sum_sigma, sum_d, sum_c, x0, has_x0, mode_scatter, reverse, starts, finals):
    """starts[s, c]: the state entering chunk c (in processing order); finals[s]: the
    state leaving the last chunk."""
    S, C, N = sum_d.shape
    for s in range(S):
        state = np.zeros(N, sum_d.dtype)
        nxt = np.empty(N, sum_d.dtype)
        if has_x0:
            state[:] = x0[s]
        for k in range(C):
            c = C - 1 - k if reverse else k
            starts[s, c] = state
            _apply_summary(mode_scatter, sum_sigma[s, c], sum_d[s, c], sum_c[s, c], state, nxt)
            state, nxt = nxt, state
        finals[s] = state


@njit(parallel=True, **_JIT)
def _forward_replay(table, selectors, use_maps, d, b, scatter, reverse, chunk, n_chunks, starts, out):
    S, L, N = d.shape
    for task in prange(S * n_chunks):
        s = task // n_chunks
        c = task % n_chunks
        lo = c * chunk
        hi = min(L, lo + chunk)
        state = starts[s, c].copy()
        spare = np.empty(N, d.dtype)
        if reverse:
            _forward_span(table, selectors, use_maps, d, b, scatter, s, hi - 1, hi - lo, -1, state, spare, out)
        else:
            _forward_span(table, selectors, use_maps, d, b, scatter, s, lo, hi - lo, 1, state, spare, out)


# ------------------------------------------------------------------ VJP


@njit(**_JIT)
def _vjp_span(table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, reverse, conj, s, lo, hi,
              carry, spare, zero_row, grad_d, grad_b):
    """The adjoint over steps [lo, hi) of sequence s, latest (in forward order) first,
    entering with carry = A_next^T g_next; returns the carry leaving the span."""
    L, N = d.shape[1], d.shape[2]
    for k in range(hi - lo):
        t = (lo + k) if reverse else (hi - 1 - k)  # the adjoint visits the forward order backwards
        sigma, ok = _row(table, selectors, s, t, use_maps)
        tp = t + 1 if reverse else t - 1  # the step whose state this one starts from
        if 0 <= tp < L:
            prev = x[s, tp]
        elif has_x0:
            prev = x0[s]
        else:
            prev = zero_row
        dt, gx, gd, gb = d[s, t], grad_x[s, t], grad_d[s, t], grad_b[s, t]
        g = gb  # the adjoint state is grad_b: build it in place and read it back from there
        for i in range(N):
            g[i] = gx[i] + carry[i]
        bad = not ok
        if scatter:  # grad_d[j] = g[sigma(j)] prev[j]; carry[j] = d[j] g[sigma(j)]
            for j in range(N):
                i = sigma[j]
                if 0 <= i < N:
                    gs = g[i]
                else:
                    gs = g[0]
                    bad = True
                if conj:
                    gd[j] = gs * np.conj(prev[j])
                    spare[j] = np.conj(dt[j]) * gs
                else:
                    gd[j] = gs * prev[j]
                    spare[j] = dt[j] * gs
        else:  # grad_d[i] = g[i] prev[sigma(i)]; carry[sigma(i)] += d[i] g[i]
            for i in range(N):
                spare[i] = 0
            for i in range(N):
                j = sigma[i]
                if not 0 <= j < N:
                    j = 0
                    bad = True
                if conj:
                    gd[i] = g[i] * np.conj(prev[j])
                    spare[j] += np.conj(dt[i]) * g[i]
                else:
                    gd[i] = g[i] * prev[j]
                    spare[j] += dt[i] * g[i]
        if bad:  # an out-of-range map (check_index=False): poison, never dereference
            gd[:] = np.nan
            spare[:] = np.nan
        carry, spare = spare, carry
    return carry


@njit(parallel=True, **_JIT)
def _vjp_sequences(table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, reverse, conj,
                   grad_d, grad_b, grad_x0):
    S, L, N = d.shape
    for s in prange(S):
        carry = np.zeros(N, d.dtype)
        spare = np.empty(N, d.dtype)
        carry = _vjp_span(table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, reverse, conj, s, 0, L,
                          carry, spare, np.zeros(N, d.dtype), grad_d, grad_b)
        grad_x0[s] = carry


@njit(parallel=True, **_JIT)
def _vjp_replay(table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, reverse, conj, chunk, n_chunks,
                carries, grad_d, grad_b):
    S, L, N = d.shape
    for task in prange(S * n_chunks):
        s = task // n_chunks
        c = task % n_chunks
        lo = c * chunk
        hi = min(L, lo + chunk)
        carry = carries[s, c].copy()
        spare = np.empty(N, d.dtype)
        _vjp_span(table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, reverse, conj, s, lo, hi,
                  carry, spare, np.zeros(N, d.dtype), grad_d, grad_b)


# ------------------------------------------------------------------ the backend


#: tests set this to force the chunked schedule with chunks of this many steps
FORCE_CHUNK_STEPS = None


def plan(S, L):
    """The chunk length for the chunked schedule, or None to go over sequences."""
    if FORCE_CHUNK_STEPS is not None:
        return max(1, int(FORCE_CHUNK_STEPS))
    threads = numba.get_num_threads()
    # a chunk summary costs about three replays, so cutting time pays off only
    # when each sequence gets several threads
    if threads < CHUNKED_MIN_THREADS_PER_SEQUENCE * S or L < 2 * MIN_CHUNK_STEPS:
        return None
    per_sequence = min(-(-threads * CHUNKS_PER_THREAD // S), L // MIN_CHUNK_STEPS)
    return -(-L // per_sequence)


def _contiguous(a):
    return np.ascontiguousarray(a)


def _kernel_arrays(p):
    """The maps table, selectors and flag, and d as contiguous (S, ...) arrays."""
    if p.maps is None:
        table = _contiguous(p.flat("index"))
        selectors = np.zeros((1, 1), np.int64)
        use_maps = False
    else:
        table = _contiguous(p.flat("maps"))
        selectors = _contiguous(p.flat("index")).astype(np.int64, copy=False)
        use_maps = True
    if table.dtype.byteorder not in "=|":
        table = table.astype(table.dtype.newbyteorder("="))
    if table.dtype == np.uint64:
        # uint64 does not mix with signed arithmetic in numba; reading the same bits
        # as int64 turns values >= 2**63 negative, which the range checks still catch
        table = table.view(np.int64)
    return table, selectors, use_maps, _contiguous(p.flat("d"))


def _x0(p):
    if p.x0 is None:
        return np.zeros((1, 1), p.dtype), False
    return _contiguous(p.flat("x0")), True


def _output(out, shape, dtype):
    """A C-contiguous (S, L, N) array to write into: ``out`` itself when it allows."""
    if out is not None and out.flags.c_contiguous and out.dtype == dtype:
        return out.reshape(shape), out
    return np.empty(shape, dtype), out


def _finish(result, out, batch_shape):
    full = result.reshape(batch_shape + result.shape[1:])
    if out is not None and not np.shares_memory(out, result):
        out[...] = full
        return out
    return out if out is not None else full


class NumbaBackend:
    name = "numba"
    writes_out = True

    def forward(self, p, out=None):
        table, selectors, use_maps, d = _kernel_arrays(p)
        b = _contiguous(p.flat("b"))
        x0, has_x0 = _x0(p)
        S, L, N = p.S, p.L, p.N
        result, out = _output(out, (S, L, N), p.dtype)
        scatter = p.mode == "scatter"
        chunk = plan(S, L)
        if chunk is None:
            _forward_sequences(table, selectors, use_maps, d, b, x0, has_x0, scatter, p.reverse, result)
        else:
            n_chunks = -(-L // chunk)
            sums = _summary_buffers(S, n_chunks, N, p.dtype)
            _chunk_summaries(table, selectors, use_maps, d, b, scatter, False, p.reverse, chunk, n_chunks,
                             False, _tiny(p.dtype), *sums)
            starts = np.empty((S, n_chunks, N), p.dtype)
            finals = np.empty((S, N), p.dtype)
            _chunk_starts(*sums, x0, has_x0, scatter, p.reverse, starts, finals)
            _forward_replay(table, selectors, use_maps, d, b, scatter, p.reverse, chunk, n_chunks, starts, result)
        return _finish(result, out, p.batch_shape)

    def vjp(self, p, x, grad_x, *, conjugate=False, out=None):
        table, selectors, use_maps, d = _kernel_arrays(p)
        x = _contiguous(np.reshape(x, (p.S, p.L, p.N)))
        grad_x = _contiguous(np.reshape(grad_x, (p.S, p.L, p.N)))
        x0, has_x0 = _x0(p)
        S, L, N = p.S, p.L, p.N
        out_d, out_b, out_x0 = out if out is not None else (None, None, None)
        grad_d, out_d = _output(out_d, (S, L, N), p.dtype)
        grad_b, out_b = _output(out_b, (S, L, N), p.dtype)
        grad_x0 = np.empty((S, N), p.dtype)
        scatter = p.mode == "scatter"
        conj = bool(conjugate) and p.dtype.kind == "c"
        chunk = plan(S, L)
        if chunk is None:
            _vjp_sequences(table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, p.reverse, conj,
                           grad_d, grad_b, grad_x0)
        else:
            # the adjoint carry h_t = A_t^T (grad_x_t + h_next) is itself a chunked scan,
            # in the transposed mode and the other direction
            n_chunks = -(-L // chunk)
            sums = _summary_buffers(S, n_chunks, N, p.dtype)
            _chunk_summaries(table, selectors, use_maps, d, grad_x, scatter, True, not p.reverse, chunk, n_chunks,
                             conj, _tiny(p.dtype), *sums)
            carries = np.empty((S, n_chunks, N), p.dtype)
            no_x0 = np.zeros((1, 1), p.dtype)
            _chunk_starts(*sums, no_x0, False, not scatter, not p.reverse, carries, grad_x0)
            _vjp_replay(table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter, p.reverse, conj, chunk,
                        n_chunks, carries, grad_d, grad_b)
        grads = (_finish(grad_d, out_d, p.batch_shape), _finish(grad_b, out_b, p.batch_shape))
        if p.x0 is None:
            return grads + (None,)
        return grads + (_finish(grad_x0, out_x0, p.batch_shape),)


def _tiny(dtype):
    """The flush threshold of chunk summaries: 2**24 times the smallest normal number."""
    return float(np.finfo(dtype).tiny) * 2.0**24


def _summary_buffers(S, n_chunks, N, dtype):
    return (np.empty((S, n_chunks, N), np.int64), np.empty((S, n_chunks, N), dtype),
            np.empty((S, n_chunks, N), dtype))


BACKEND = NumbaBackend()
