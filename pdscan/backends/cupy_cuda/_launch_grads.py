"""Launch code of the gradients: the scan's VJP and the straight-through dictionary
form's contractions.

The VJP for N <= 128 (``run_vjp_pipe``): the pipelined scan of pdscan_pipe.cu run on the
adjoint recurrence for the carry (writing grad_d as it goes), and the
small kernels of pdscan_vjp.cu for the rest.  Beyond N = 128, or where the pipelined scan
does not apply, the team kernels' fused VJP (pdscan_kernels.cu) on the schedules of
``_launch.plan``.  The knobs (``use_pipe``, ``pipe_vjp``, ``vjp_fuse_grad_d``) are the
launcher's, read from ``_launch`` at each call as ``run_pipe`` is (tests set and watch
them there).
"""

from __future__ import annotations

import cupy

from ... import monoid
from . import _kernels as K
from . import _launch as launch
from ._launch import (NULL, _attr, _chain, _dictionary, _flags, _i32, _i64, _launch, _round16, _summaries, plan,
                      scan_smem)

#: warps (rows) a block of pd_vjp_grad_d (VJP_ROW_WARPS in pdscan_vjp.cu), and its blocks
#: per multiprocessor at most (it strides over the rows beyond)
VJP_ROW_WARPS, VJP_ROW_BLOCKS_PER_SM = 8, 64


def first_step_smem(N, itemsize):
    """Shared bytes of pd_vjp_first_step: N values and N lanes, each region padded to 16."""
    return _round16(N * itemsize) + _round16(4 * N)


def run_vjp_pipe(value, mode, ix, d, d_stride, x, x_stride, gx, gx_stride, x0, x0_stride,
                 grad_d, grad_b, grad_x0, S, L, N, reverse, conj):
    """The VJP through the pipelined scan.  grad_b is the carry g: g_t = grad_x[t] +
    A_next^T g_next from the recurrence's last step (where g = grad_x) back to its
    first, a scan of the transposed transforms against time, one step shorter than
    the sequence, from grad_x at the last step.  The scan also writes grad_d of the
    steps it covers, reading x_prev beside grad_x: one pass, 44 bytes per complex64
    element (in scatter mode its steps gather, and grad_d takes the state gathered; in
    gather mode they scatter, and grad_d takes x_prev at each lane's sigma).  grad_b's
    last step (grad_x), the first step's grad_d and grad_x0 come from a small kernel.
    ``vjp_fuse_grad_d`` False: grad_d from an element-wise pass after the scan instead
    (pdscan_vjp.cu), 56 bytes.  False where the pipelined scan does not apply (nothing
    launched)."""
    if launch.use_pipe is False or launch.pipe_vjp is False or N > K.PIPE_MAX_N:
        return False
    last = 0 if reverse else L - 1  # the recurrence's last step: the carry starts there
    fused = launch.vjp_fuse_grad_d
    if L > 1:
        # steps of the carry in memory order: the transform each applies, grad_x and
        # the carry written at its output row, and (fused) x_prev and grad_d at the
        # transform's row
        if reverse:  # g_t = grad_x[t] + A_{t-1}^T g_{t-1} for t = 1 .. L-1
            steps, step_d, b, out = ix, d, gx[..., 1:, :], grad_b[..., 1:, :]
            x_prev, grad_d_rows = x[..., 1:, :], grad_d
        else:  # g_t = grad_x[t] + A_{t+1}^T g_{t+1} for t = L-2 .. 0
            steps, step_d, b, out = ix.from_second_step(), d[..., 1:, :], gx, grad_b
            x_prev, grad_d_rows = x, grad_d[..., 1:, :]
        flags = _flags(reverse=not reverse, conj=conj, signed=ix.signed)
        if not launch.run_pipe(value, monoid.transpose_mode(mode), steps, step_d, d_stride, b, gx_stride,
                               gx[..., last, :], gx_stride, out, S, L - 1, N, flags, out_stride=L * N,
                               grad_d=(x_prev, x_stride, grad_d_rows, L * N) if fused else None):
            return False
    name_d, name_first = K.vjp_elementwise_names(value, ix.width, mode, ix.uses_maps)
    flags = _flags(reverse=reverse, conj=conj, signed=ix.signed)
    # grad_b at the last step, and the first step's grad_d (fused) and grad_x0; before
    # the element-wise pass, which reads every step's g
    K.kernel(name_first)((S,), (128,),
                         ix.args() + (d, _i64(d_stride), gx, _i64(gx_stride), grad_b, _i64(L * N),
                                      x0 if x0 is not None else NULL, _i64(x0_stride),
                                      grad_d if fused else NULL, _i64(L * N),
                                      grad_x0 if grad_x0 is not None else NULL, _i64(N),
                                      _i32(L), _i32(N), _i32(flags)),
                         shared_mem=first_step_smem(N, d.itemsize))
    if not fused:
        rows = S * L
        blocks = min(-(-rows // VJP_ROW_WARPS), VJP_ROW_BLOCKS_PER_SM * _attr("MultiProcessorCount"))
        K.kernel(name_d)((blocks,), (32 * VJP_ROW_WARPS,),
                         ix.args() + (grad_b, _i64(L * N), x, _i64(x_stride), x0 if x0 is not None else NULL,
                                      _i64(x0_stride), grad_d, _i64(L * N), _i64(rows), _i32(L), _i32(N),
                                      _i32(flags)))
    return True


def run_vjp(value, mode, ix, d, d_stride, x, x_stride, gx, gx_stride, x0, x0_stride,
            grad_d, grad_b, grad_x0, S, L, N, reverse, conj):
    """The VJP into grad_d, grad_b (S, L, N) and grad_x0 (S, N) or None: through the
    pipelined scan where it applies (``run_vjp_pipe``), else the team kernels' fused
    VJP."""
    if run_vjp_pipe(value, mode, ix, d, d_stride, x, x_stride, gx, gx_stride, x0, x0_stride,
                    grad_d, grad_b, grad_x0, S, L, N, reverse, conj):
        return
    e, threads = K.lanes_per_thread(N), K.team_size(N)
    itemsize = d.itemsize
    chunks, chunk = plan(S, L, N)
    adjoint_kind = monoid.transpose_mode(mode)
    if chunks > 1:
        # summaries of the carry recurrence h -> A^T (h + grad_x), walking the
        # forward's time order backwards, then their scan into each chunk's carry
        summaries = _summaries(S, chunks, N, d.dtype)
        flags = _flags(reverse=not reverse, pre_add=True, conj=conj, signed=ix.signed)
        _launch(K.scan_name(value, ix.width, adjoint_kind, ix.uses_maps, e, True), S * (chunks - 1),
                threads, scan_smem(N, itemsize, adjoint_kind, True, ix.k),
                ix.args() + (d, _i64(d_stride), gx, _i64(gx_stride), NULL, _i64(0), NULL, NULL, _i64(0))
                + summaries + (_i32(L), _i32(N), _i32(chunk), _i32(chunks - 1), _i32(chunks), _i32(flags)))
        chain = _chain(value, adjoint_kind, summaries, None, 0, _flags())
    else:
        chain = None
    flags = _flags(reverse=reverse, conj=conj, signed=ix.signed)
    _launch(K.vjp_name(value, ix.width, mode, ix.uses_maps, e), S * chunks, threads,
            4 * N * itemsize + 4 * ix.k * N,
            ix.args() + (d, _i64(d_stride), x, _i64(x_stride), gx, _i64(gx_stride),
                         x0 if x0 is not None else NULL, _i64(x0_stride),
                         chain if chain is not None else NULL,
                         grad_d, _i64(L * N), grad_b, _i64(L * N),
                         grad_x0 if grad_x0 is not None else NULL, _i64(N),
                         _i32(L), _i32(N), _i32(chunk), _i32(chunks), _i32(flags)))


def dictionary_grads(value, p, u, v, members):
    """grad_w (S, L, K) and grad_q (G, K, N, N), summed over each group of sequences in
    ``members`` (G, M) that share a dictionary, of the straight-through dictionary form
    from the rank-one factors u, v (S, L, N) (``pdscan_ste.cu``)."""
    u = cupy.ascontiguousarray(u.reshape(p.S, p.L, p.N))
    v = cupy.ascontiguousarray(v.reshape(p.S, p.L, p.N))
    members = cupy.ascontiguousarray(members, dtype=cupy.int64)
    G, M = members.shape
    selectors, sel_stride, maps, maps_stride = _dictionary(p, len(p.batch_shape))
    grad_w = cupy.empty((p.S, p.L, p.K), u.dtype)
    grad_q = cupy.empty((G, p.K, p.N, p.N), u.dtype)
    name_w, name_q = K.dict_grad_names(value)
    rows, warps = p.S * p.L, 8
    if rows:
        K.kernel(name_w)(((rows + warps - 1) // warps,), (32 * warps,),
                         (u, v, maps, _i64(maps_stride), _i64(rows), _i32(p.L), _i32(p.K), _i32(p.N), grad_w))
    threads = K.DICT_GRAD_Q_THREADS
    tiles = -(-(p.N * p.N) // (threads * K.DICT_GRAD_Q_PER_THREAD))
    if G * p.K:
        K.kernel(name_q)((G * p.K, tiles), (threads,),
                         (u, v, selectors, _i64(sel_stride), members, _i32(M), _i32(p.L), _i32(p.K), _i32(p.N),
                          grad_q))
    return grad_w, grad_q
