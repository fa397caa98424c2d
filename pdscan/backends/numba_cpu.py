"""Numba CPU backend: the scan and its fused VJP, parallel over sequences or time.

The kernels are in ``numba_cpu_kernels``; this module picks a schedule and lays
out the arrays.  Two schedules, chosen by shape (``plan``):

* **sequences** (otherwise): ``prange`` over the S independent sequences, each
  a sequential loop over time: one pass over the data.
* **chunks** (several threads per sequence, e.g. one long sequence): time is cut
  into chunks.  Phase 1, in parallel: chunk 0 runs directly from x0 while chunks
  1 .. C-2 are each reduced to their affine transform with the PD monoid.  Phase 2,
  sequential and short: the summaries carry chunk 0's final state to every chunk's
  start.  Phase 3, in parallel: chunks 1 .. C-1 replay from their start states.
  Running chunk 0 directly instead of summarising it lets phase 1 do useful work
  on every thread, which is what makes two threads pay off on one sequence; chunk
  0 is shorter than the others (``FIRST_CHUNK_SHARE``) because a summary step
  costs less than a step that writes its output.
  The VJP does the same for the adjoint carry h_t = A_t^T (grad_x_t + h_next),
  in the adjoint's order (time reversed).

Memory beyond the outputs: O(threads * N) work buffers, plus O(chunks * N) for the
chunk summaries and start states.

Specialisations: two parallel kernels (``forward_phase``, ``vjp_phase``; the
schedule's phase is a run-time argument), each compiled lazily once per (value
dtype, index width) pair that is used: 4 value dtypes x 2 index widths (int32,
int64) = at most 8 signatures per kernel, 16 in all.  int32 and int64 indices are
read in place; uint32 and uint64 are reinterpreted as int32 and int64 (a view:
values >= 2**31 or 2**63 turn negative and are caught by the range checks, as they
are out of range for any N anyway); int8, uint8, int16 and uint16 are widened to
int32 (a copy of the index only).  Dictionary selectors are cast to int64 (an
(S, L) array: cheap).  Every input reaches the kernels as a read-only view
(numba types the read-only flag, which would otherwise double the signatures, and
a read-only array cannot be written by mistake); outputs are C-contiguous.  Mode,
direction, conjugation and the dictionary form are run-time flags whose branches
sit outside the inner loops.  Everything is compiled with ``cache=True``: a second
process loads the machine code from numba's on-disk cache (``__pycache__`` next
to the kernels) instead of compiling; a cold start compiles each signature in
some seconds.

Threads: numba's default threading layer (TBB, then OpenMP, then numba's own
workqueue, whichever is installed; ``numba.threading_layer()`` says which ran)
with ``numba.get_num_threads()`` threads.  Set NUMBA_NUM_THREADS, or call
``numba.set_num_threads`` (per calling thread), to change the count, and
NUMBA_THREADING_LAYER to pick the layer.

Bounds safety: an index outside [0, N) (possible only with check_index=False) is
never dereferenced; the state of the step that uses it becomes NaN, and so does
everything that depends on it.
"""

from __future__ import annotations

import numba
import numpy as np

from . import numba_cpu_kernels as kernels

#: fewest steps per sequence for the chunked schedule; below it the phases'
#: overhead outweighs the parallelism
MIN_CHUNKED_STEPS = 4096
#: the chunked schedule needs at least this many threads per sequence to win.  A
#: summary step costs about rho replayed steps (measured on this project's x86
#: machine with one thread: rho ~ 3.5 for the forward, whose replay is cheap, and
#: ~ 1 for the VJP, whose replay writes two outputs); with P threads per sequence
#: the chunked time is (1 + rho) / (rho + P) of one sequence's, so the forward
#: needs P >= 4 to gain a worthwhile 40% and the VJP gains a third already at P = 2.
MIN_THREADS_PER_SEQUENCE = {"forward": 4, "vjp": 2}
#: chunk 0's length relative to the other chunks: rho, so that phase 1 is balanced
FIRST_CHUNK_SHARE = {"forward": 3.5, "vjp": 1.0}
#: tests set this to force the chunked schedule with chunks of this many steps
FORCE_CHUNK_STEPS = None


def plan(S, L, kind="forward"):
    """(first, chunk): chunk 0's length and the others' for the chunked schedule,
    or None for one task per sequence."""
    if FORCE_CHUNK_STEPS is not None:
        steps = max(1, int(FORCE_CHUNK_STEPS))
        return steps, steps
    threads = numba.get_num_threads()
    per_sequence = threads // max(S, 1)  # chunks each phase runs in parallel per sequence
    if per_sequence < MIN_THREADS_PER_SEQUENCE[kind] or L < MIN_CHUNKED_STEPS:
        return None
    share = FIRST_CHUNK_SHARE[kind]
    chunk = -int(-L // (per_sequence + share))
    first = max(1, L - per_sequence * chunk)
    return first, chunk


def _n_chunks(L, first, chunk):
    return 1 + max(0, -(-(L - first) // chunk))


#: index dtypes read in place (as the dtype on the right): the kernels' index widths
_INDEX_VIEWS = {np.dtype(np.int32): np.int32, np.dtype(np.int64): np.int64,
                np.dtype(np.uint32): np.int32, np.dtype(np.uint64): np.int64}


def _readonly(a):
    """A C-contiguous read-only view (or copy, when the layout needs one) of ``a``."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder not in "=|":
        a = a.astype(a.dtype.newbyteorder("="))
    view = a.view()
    view.flags.writeable = False
    return view


def _index_table(a):
    """The index (or maps) as int32 or int64, read in place where the width allows."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder not in "=|":
        a = a.astype(a.dtype.newbyteorder("="))
    width = _INDEX_VIEWS.get(a.dtype)
    return _readonly(a.view(width) if width is not None else a.astype(np.int32))


def _kernel_arrays(p):
    """The maps table, selectors and flag, and d, as read-only contiguous (S, ...) arrays."""
    if p.maps is None:
        return _index_table(p.flat("index")), _NO_SELECTORS, False, _readonly(p.flat("d"))
    selectors = _readonly(np.asarray(p.flat("index")).astype(np.int64))
    return _index_table(p.flat("maps")), selectors, True, _readonly(p.flat("d"))


_NO_SELECTORS = _readonly(np.zeros((1, 1), np.int64))


def _x0(p):
    if p.x0 is None:
        return _readonly(np.zeros((1, 1), p.dtype)), False
    return _readonly(p.flat("x0")), True


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


def _tiny(dtype):
    """The flush threshold of chunk summaries: 2**24 times the smallest normal number."""
    return float(np.finfo(dtype).tiny) * 2.0**24


def _no_chunks(dtype):
    """Placeholder summary and start buffers for the SEQUENCES phase (one chunk)."""
    return _summary_buffers(1, 1, 1, dtype) + (np.zeros((1, 1, 1), dtype),)


def _summary_buffers(S, n_chunks, N, dtype):
    return (np.zeros((S, n_chunks, N), np.int64), np.empty((S, n_chunks, N), dtype),
            np.empty((S, n_chunks, N), dtype))


class NumbaBackend:
    name = "numba"
    writes_out = True

    def forward(self, p, out=None):
        table, selectors, use_maps, d = _kernel_arrays(p)
        b = _readonly(p.flat("b"))
        x0, has_x0 = _x0(p)
        S, L, N = p.S, p.L, p.N
        result, out = _output(out, (S, L, N), p.dtype)
        scatter, forward = p.mode == "scatter", not p.reverse
        spans = plan(S, L, "forward")
        if spans is None or _n_chunks(L, *spans) < 2:
            kernels.forward_phase(kernels.SEQUENCES, table, selectors, use_maps, d, b, x0, has_x0, scatter, forward,
                                  1, 1, 0.0, *_no_chunks(p.dtype), result)
        else:
            first, chunk = spans
            n_chunks = _n_chunks(L, first, chunk)
            chunks = _summary_buffers(S, n_chunks, N, p.dtype) + (np.empty((S, n_chunks, N), p.dtype),)
            for phase in (kernels.CHUNKS_FIRST, kernels.CHUNKS_REPLAY):
                if phase == kernels.CHUNKS_REPLAY:  # the chunks' start states, in order
                    kernels.chain_starts(*chunks[:3], scatter, chunks[3])
                kernels.forward_phase(phase, table, selectors, use_maps, d, b, x0, has_x0, scatter, forward, first,
                                      chunk, _tiny(p.dtype), *chunks, result)
        return _finish(result, out, p.batch_shape)

    def vjp(self, p, x, grad_x, *, conjugate=False, out=None):
        table, selectors, use_maps, d = _kernel_arrays(p)
        x = _readonly(np.reshape(x, (p.S, p.L, p.N)))
        grad_x = _readonly(np.reshape(grad_x, (p.S, p.L, p.N)))
        x0, has_x0 = _x0(p)
        S, L, N = p.S, p.L, p.N
        out_d, out_b, out_x0 = out if out is not None else (None, None, None)
        grad_d, out_d = _output(out_d, (S, L, N), p.dtype)
        grad_b, out_b = _output(out_b, (S, L, N), p.dtype)
        grad_x0 = np.empty((S, N), p.dtype)
        scatter = p.mode == "scatter"
        adjoint_forward = p.reverse  # the adjoint runs against the scan's direction
        conj = bool(conjugate) and p.dtype.kind == "c"
        spans = plan(S, L, "vjp")
        if spans is None or _n_chunks(L, *spans) < 2:
            kernels.vjp_phase(kernels.SEQUENCES, table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter,
                              adjoint_forward, conj, 1, 1, 0.0, *_no_chunks(p.dtype), grad_d, grad_b, grad_x0)
        else:
            first, chunk = spans
            n_chunks = _n_chunks(L, first, chunk)
            chunks = _summary_buffers(S, n_chunks, N, p.dtype) + (np.empty((S, n_chunks, N), p.dtype),)
            for phase in (kernels.CHUNKS_FIRST, kernels.CHUNKS_REPLAY):
                if phase == kernels.CHUNKS_REPLAY:  # the adjoint's transforms A_t^T are in the other mode
                    kernels.chain_starts(*chunks[:3], not scatter, chunks[3])
                kernels.vjp_phase(phase, table, selectors, use_maps, d, x, x0, has_x0, grad_x, scatter,
                                  adjoint_forward, conj, first, chunk, _tiny(p.dtype), *chunks, grad_d, grad_b,
                                  grad_x0)
        grads = (_finish(grad_d, out_d, p.batch_shape), _finish(grad_b, out_b, p.batch_shape))
        if p.x0 is None:
            return grads + (None,)
        return grads + (_finish(grad_x0, out_x0, p.batch_shape),)

    def dictionary_grads(self, p, u, v, members):
        """The straight-through dictionary form's grad_w at the full batch shape and
        grad_Q (G, K, N, N), one per group of sequences in ``members`` (``pdscan.ste``),
        from the rank-one factors, each in one parallel pass."""
        table, selectors, _, _ = _kernel_arrays(p)
        u = _readonly(np.reshape(u, (p.S, p.L, p.N)))
        v = _readonly(np.reshape(v, (p.S, p.L, p.N)))
        members = _readonly(np.asarray(members, np.int64))
        grad_w = np.empty((p.S, p.L, p.K), u.dtype)
        grad_q = np.empty((members.shape[0], p.K, p.N, p.N), u.dtype)
        kernels.dictionary_grad_w(table, u, v, grad_w)
        kernels.dictionary_grad_q(selectors, members, u, v, grad_q)
        return grad_w.reshape(p.batch_shape + (p.L, p.K)), grad_q


BACKEND = NumbaBackend()
