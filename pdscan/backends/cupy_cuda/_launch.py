"""Launch code: array layouts, the choice of schedule, and the kernel launches.

The forward for N <= 128 (``run_pipe``): the pipelined scan of pdscan_pipe.cu, a
block per sequence whose producer warps stage the inputs and decode the index
while its consumer warps run the recurrence; fewer sequences than about half the
multiprocessors are cut into chunks of time as below.  The VJP for N <= 128
(``_launch_grads.run_vjp_pipe``): the same scan run on the adjoint recurrence for
the carry (writing grad_d as it goes), and small kernels for the rest
(pdscan_vjp.cu).  The chunk summaries of gather kind follow each lane's path back
through its chunk instead of exchanging the state (pdscan_pipe_chase.cuh,
``pipe_chase``); where their scan would run one block a sequence, the replay runs
each chunk's earlier summaries as its first steps instead of a launch of that scan
(``pipe_fold_chain``), so the pipelined scan cut in time is two launches.  Everything else (N over 128) runs the team kernels of
pdscan_kernels.cu on one of two schedules (``plan``):

* **sequences**: one team (thread block) per sequence walks all of time: one pass
  over the data, the fastest when there are enough sequences to fill the GPU.
* **chunks**: time is cut into C chunks.  A first launch reduces every chunk
  but the last to its affine summary (transform, state from zero); the summaries
  are scanned per sequence (the same code, itself cut into chunks of about
  sqrt(C) steps when C is large) into each chunk's start state; a last launch
  replays the chunks from their starts.
  It reads the inputs twice (48 instead of 28 bytes per complex64 element) but
  runs S * C teams instead of S.

Every launch goes on CuPy's current stream and nothing waits for the device.
"""

from __future__ import annotations

import functools
import math
import os

import cupy
import numpy

from . import _kernels as K

#: teams per multiprocessor the schedule aims for (one-warp teams; 256-thread teams count
#: 8), and the shortest chunk: measured on the H100 (docs/benchmarks.md, "Chunk count"),
#: more and shorter chunks than one team a scheduler pays, as the teams are latency bound
TEAMS_PER_SM = int(os.environ.get("PDSCAN_CUDA_TEAMS_PER_SM", "64"))
MIN_CHUNK = int(os.environ.get("PDSCAN_CUDA_MIN_CHUNK", "32"))
#: chunk length forced by tests and benchmarks (None: chosen by shape; 0: never chunk)
force_chunk_len: int | None = None
#: the pipelined forward (pdscan_pipe.cu, N <= 128): None takes it wherever it applies,
#: False never (tests and benchmarks force the team schedules of ``plan`` with it)
use_pipe: bool | None = None
#: its tile length forced by tests (None: from PIPE_TILE_BYTES)
force_tile_len: int | None = None
#: its consumer warps forced by tests and benchmarks (None: ``_kernels.pipe_shape``'s
#: default)
pipe_consumer_warps: int | None = (int(os.environ["PDSCAN_CUDA_PIPE_CONSUMER_WARPS"])
                                   if os.environ.get("PDSCAN_CUDA_PIPE_CONSUMER_WARPS") else None)
#: gather mode's chunk summaries follow each lane's path back through its chunk (kind
#: "chase", pdscan_pipe_chase.cuh) instead of exchanging the state at every step (kind
#: "gather"); measured on the H200 (docs/benchmarks.md, "Chunk summaries by paths")
pipe_chase: bool = os.environ.get("PDSCAN_CUDA_PIPE_CHASE", "1") not in ("", "0")
#: the VJP through the pipelined scan (``_launch_grads.run_vjp_pipe``): None where it
#: applies (and ``use_pipe`` allows), False never (the team kernels' fused VJP)
pipe_vjp: bool | None = None
#: it writes grad_d from the carry's scan (False: an element-wise pass after it; for
#: benchmarks)
vjp_fuse_grad_d: bool = True
#: shared memory one tile of the pipelined scan's ring may take (sets the tile length)
PIPE_TILE_BYTES = int(os.environ.get("PDSCAN_CUDA_PIPE_TILE_BYTES", str(32 * 1024)))
#: fewer sequences than PIPE_CUT_BELOW times the multiprocessors are cut into chunks of
#: time (at least PIPE_MIN_CHUNK steps) for PIPE_BLOCKS_PER_SM blocks per multiprocessor,
#: three launches as in ``plan`` (two where the summaries' scan folds into the replay);
#: measured on the H200 (docs/benchmarks.md, "Schedules").
#: Cut, the time grows with S (two passes over the inputs); one block a sequence, it stays
#: that of one sequence up to a block per multiprocessor: they meet at about 0.6 of them
#: in scatter mode, 0.5 in gather mode ("When to cut time")
PIPE_BLOCKS_PER_SM = float(os.environ.get("PDSCAN_CUDA_PIPE_BLOCKS_PER_SM", "4"))
PIPE_MIN_CHUNK = int(os.environ.get("PDSCAN_CUDA_PIPE_MIN_CHUNK", "256"))
PIPE_CUT_BELOW = float(os.environ.get("PDSCAN_CUDA_PIPE_CUT_BELOW", "0.55"))
#: the scan of chunk summaries (``_chain``) of fewer sequences than multiprocessors, with
#: C >= CHAIN_MIN_STEPS summaries each, is itself cut into chunks of about
#: CHAIN_CHUNK_SCALE * sqrt(C) steps (0: never cut).  Its steps run one after another on
#: S blocks, and a summary of a long chunk crowds its lanes onto a few rows, so each
#: scatter step sums dozens of terms in order.  Cut, the longest path is about
#: (2 a + 1 / a) sqrt(C) steps (a the scale) instead of C; measured on the H200
#: (docs/benchmarks.md, "The scan of chunk summaries")
CHAIN_MIN_STEPS = int(os.environ.get("PDSCAN_CUDA_CHAIN_MIN_STEPS", "24"))
CHAIN_CHUNK_SCALE = float(os.environ.get("PDSCAN_CUDA_CHAIN_CHUNK_SCALE", "0.5"))
#: the pipelined replay of a scan cut in time starts each chunk from x0 with the summaries
#: of the chunks before it as its first steps (pdscan_pipe.cu's F_FOLD_CHAIN), instead of
#: a launch of their scan between the two launches; where that scan runs one block a
#: sequence (not cut, above) and the indexed form (the dictionary form's slots have no
#: step tables).  The same states bit for bit; measured on the H200 (docs/benchmarks.md,
#: "The summaries' scan folded into the replay")
pipe_fold_chain: bool = os.environ.get("PDSCAN_CUDA_PIPE_FOLD_CHAIN", "1") not in ("", "0")
#: scatter without float atomics (bitwise reproducible); gather mode always is
deterministic: bool = os.environ.get("PDSCAN_CUDA_DETERMINISTIC", "0") not in ("", "0")

NULL = numpy.uint64(0)
#: pd_scan_pipe's x_prev (pointer, stride, grain) and grad_d (pointer, stride) when it writes no grad_d
NO_GRAD_D = (NULL, numpy.int64(0), numpy.int32(0), NULL, numpy.int64(0))
SMEM_DEFAULT = 48 * 1024


@functools.lru_cache(maxsize=None)
def device_attribute(name, device_id):
    return cupy.cuda.Device(device_id).attributes[name]


def _attr(name):
    return device_attribute(name, cupy.cuda.runtime.getDevice())


def _i32(v):
    return numpy.int32(v)


def _i64(v):
    return numpy.int64(v)


def layout(a, nbatch):
    """(array, per-sequence stride in elements) addressing ``a`` (batch dims, then a
    C-contiguous tail) as base + s * stride + offset in tail: the batch dimensions
    flattened into one stride (0 when broadcast).  A copy only when the batch
    strides do not collapse or the tail is not contiguous."""
    if a is None:
        return None, 0
    item = a.itemsize
    expected = item
    for size, stride in zip(reversed(a.shape[nbatch:]), reversed(a.strides[nbatch:])):
        if size != 1 and stride != expected:
            return _contiguous(a, nbatch)
        expected *= size
    stride = None
    inner_extent = None
    for size, st in zip(reversed(a.shape[:nbatch]), reversed(a.strides[:nbatch])):
        if size == 1:
            continue
        if stride is None:
            stride, inner_extent = st, size
        elif st != stride * inner_extent or st < 0:
            return _contiguous(a, nbatch)
        else:
            inner_extent *= size
    if stride is None:
        stride = 0
    if stride < 0 or stride % item:
        return _contiguous(a, nbatch)
    return a, stride // item


def _contiguous(a, nbatch):
    a = cupy.ascontiguousarray(a)
    return a, math.prod(a.shape[nbatch:])


#: one pass for ``_safe_int32`` (as separate array operations it took five launches and
#: about 90 µs of host time a call, as much as the rest of a forward's launch path).  A
#: value known not to be negative is compared as unsigned 64-bit: exact for every integer
#: type, a uint64 of 2^63 or more too.
_SAFE_INT32 = cupy.ElementwiseKernel(
    "T a, int64 high", "int32 out",
    "out = (a >= 0 && (unsigned long long)a < (unsigned long long)high) ? (int)a : -1", "pd_safe_int32")


def _safe_int32(a, high):
    """int32 copy of an integer array with -1 where a value is outside [0, high)."""
    return _SAFE_INT32(a, high)


def _compact(a, nbatch, high=None):
    """``layout`` with the array cut down to the memory it addresses (for a batch
    broadcast, stride 0, the first sequence only, so that a conversion of it stays
    small), as (sequences, tail...); given ``high``, converted by ``_safe_int32``."""
    arr, stride = layout(a, nbatch)
    if stride == 0:
        arr = arr[(0,) * nbatch][None]
    elif arr.ndim != 1 + a.ndim - nbatch:  # (a copy where the batch has gaps)
        arr = cupy.ascontiguousarray(arr).reshape((-1,) + tuple(a.shape[nbatch:]))
    if high is not None:
        arr = _safe_int32(arr, high)
    # a copy (either above) is C-contiguous: its sequences lie a tail apart, whatever
    # the strides of the view it was made from
    if stride and arr.flags.c_contiguous:
        stride = math.prod(a.shape[nbatch:])
    return arr, stride


def _flags(reverse=False, pre_add=False, conj=False, signed=True):
    return ((K.F_REVERSE if reverse else 0) | (K.F_PRE_ADD if pre_add else 0)
            | (K.F_CONJ if conj else 0) | (K.F_DETERMINISTIC if deterministic else 0)
            | (K.F_SIGNED_INDEX if signed else 0))


def _cut_time(S, L, wanted, min_chunk, enough):
    """(chunks, chunk length): S sequences of L steps cut into chunks of at least
    ``min_chunk`` steps, enough of them for ``wanted`` units in all; not cut from
    ``enough`` sequences on, or when L is under two chunks.  ``force_chunk_len``
    overrides the rule."""
    if force_chunk_len is not None:
        chunk = force_chunk_len or L
        return -(-L // chunk), chunk
    if S >= enough or L < 2 * min_chunk:
        return 1, L
    chunks = min(-(-wanted // S), L // min_chunk)
    chunk = -(-L // chunks)
    return -(-L // chunk), chunk


def _given_chunks(L, chunk):
    """(chunks, chunk length) for a chunk length the caller chose; ``force_chunk_len``
    still overrides it (None: the caller chose none)."""
    if chunk is None or force_chunk_len is not None:
        return None
    return -(-L // chunk), chunk


def plan(S, L, N):
    """(chunks, chunk length) of the team kernels for S sequences of L steps."""
    teams_wanted = _attr("MultiProcessorCount") * TEAMS_PER_SM * 32 // K.team_size(N)
    return _cut_time(S, L, teams_wanted, MIN_CHUNK, teams_wanted)


class Indexing:
    """How the kernels read sigma_t: (index words, stride, width, signed) and, for the
    dictionary form, the int32 dictionary (maps, stride, K)."""

    def __init__(self, index, index_stride, width, signed, maps=None, maps_stride=0, k=0):
        self.index, self.index_stride, self.width, self.signed = index, index_stride, width, signed
        self.maps, self.maps_stride, self.k = maps, maps_stride, k

    @property
    def uses_maps(self):
        return self.maps is not None

    def args(self):
        return (self.index, _i64(self.index_stride),
                self.maps if self.maps is not None else NULL, _i64(self.maps_stride), _i32(self.k))

    def from_second_step(self):
        """The same indexing with time starting one step later (a view)."""
        index = self.index[..., 1:] if self.uses_maps else self.index[..., 1:, :]
        return Indexing(index, self.index_stride, self.width, self.signed, self.maps, self.maps_stride, self.k)


def _dictionary(p, nb):
    """(selectors, stride, maps, stride) of the dictionary form as the kernels read
    them: int32 selectors (S or 1, L), read as they are when int32 (the kernels check
    their range), and int32 maps (S or 1, K, N) with -1 where out of range."""
    selectors, sel_stride = _compact(p.index, nb, None if p.index.dtype == cupy.int32 else p.K)
    maps, maps_stride = _compact(p.maps, nb, p.N)
    return selectors, sel_stride, maps, maps_stride


def indexing(p, dtype_bytes, extra_smem_per_lane):
    """The ``Indexing`` of problem ``p``.  A dictionary too large for shared memory
    is expanded into per-step maps (int32) instead."""
    nb = len(p.batch_shape)
    if p.maps is None:
        index, stride = layout(p.index, nb)
        return Indexing(index, stride, index.itemsize, index.dtype.kind == "i")
    selectors, sel_stride, maps, maps_stride = _dictionary(p, nb)
    limit = _attr("MaxSharedMemoryPerBlockOptin")
    if p.K * p.N * 4 + extra_smem_per_lane * p.N <= limit:
        return Indexing(selectors, sel_stride, 4, True, maps, maps_stride, p.K)
    # expand: sigma[s, t] = maps[s, selector[s, t]] (-1 for a bad selector)
    S = p.S
    sel = cupy.broadcast_to(selectors, (S,) + selectors.shape[1:]) if sel_stride == 0 else selectors
    dic = cupy.broadcast_to(maps, (S,) + maps.shape[1:]) if maps_stride == 0 else maps
    safe = cupy.where(sel < 0, 0, sel)
    expanded = cupy.take_along_axis(dic, safe[:, :, None].astype(cupy.int64), axis=1)
    expanded = cupy.where(sel[:, :, None] < 0, -1, expanded).astype(cupy.int32)
    return Indexing(expanded, p.L * p.N, 4, True)


#: id(kernel) -> (kernel, the dynamic shared memory it was allowed): reading the
#: attribute back is a driver call per launch; the entry holds the kernel, so that its
#: id is not reused
_allowed_smem: dict = {}


def _launch(name, units, threads, smem, args):
    kern = K.kernel(name)
    if smem > SMEM_DEFAULT:
        allowed = _allowed_smem.get(id(kern))
        if allowed is None or allowed[1] < smem:
            if kern.max_dynamic_shared_size_bytes < smem:
                kern.max_dynamic_shared_size_bytes = smem
            _allowed_smem[id(kern)] = (kern, smem)
    kern((units,), (threads,), args, shared_mem=smem)


def scan_smem(N, itemsize, kind, track, k):
    extra = (2 * N * itemsize + 2 * N * 4) if (track and kind == "gather") else 0
    return 2 * N * itemsize + extra + 4 * k * N


def _round16(n):
    return (n + 15) & ~15


def _grain(a, stride, row_bytes):
    """The widest asynchronous copy (16, 8 or 4 bytes; 0: none) that divides every
    address a tile of ``a`` starts at."""
    step = stride * a.itemsize
    for grain in (16, 8, 4):
        if a.data.ptr % grain == 0 and step % grain == 0 and row_bytes % grain == 0:
            return grain
    return 0


def _summaries(S, chunks, N, dtype):
    """Empty (transform index, transform values, state from zero) arrays for the
    summaries of every chunk but the last."""
    shape = (S, chunks - 1, N)
    return cupy.empty(shape, cupy.int32), cupy.empty(shape, dtype), cupy.empty(shape, dtype)


def _chain_chunk(S, C):
    """The chunk length the scan of S sequences' C summaries is cut into (None: not cut)."""
    if CHAIN_MIN_STEPS and C >= CHAIN_MIN_STEPS and S < _attr("MultiProcessorCount"):
        return max(2, round(CHAIN_CHUNK_SCALE * math.sqrt(C)))
    return None


def _chain(value, kind, summaries, x0, x0_stride, flags):
    """The start states of every chunk but the first: the scan of the chunks'
    summaries (in the recurrence's order) from x0."""
    agg_index, agg_d, agg_b = summaries
    S, C, N = agg_index.shape
    chain = cupy.empty((S, C, N), agg_d.dtype)
    chunk = _chain_chunk(S, C)
    run_scan(value, kind, Indexing(agg_index, C * N, 4, True), agg_d, C * N, agg_b, C * N,
             x0, x0_stride, chain, S, C, N, flags, chunk)
    return chain


def pipe_plan(S, L):
    """(chunks, chunk length) of the pipelined scan for S sequences of L steps."""
    sms = _attr("MultiProcessorCount")
    return _cut_time(S, L, int(PIPE_BLOCKS_PER_SM * sms), PIPE_MIN_CHUNK, max(1, math.ceil(PIPE_CUT_BELOW * sms)))


def summary_kind(kind):
    """The pipelined scan's kind (``K.PIPE_KINDS``) for the chunk summaries of a scan
    of ``kind``."""
    return "chase" if kind == "gather" and pipe_chase else kind


def _pipe_rows(ix, itemsize, kind, N):
    """(lanes per row NB, d/b row pitch, a step's table) in bytes, as in pdscan_pipe.cu;
    ``kind`` one of ``K.PIPE_KINDS``."""
    cw, e = K.pipe_shape(N, pipe_consumer_warps)
    nb, w, r16 = -(-N // e) * e, cw * e, _round16
    # scatter: where each lane stores (u16), then a walk's lists: nb + 1 row starts and
    # nb lanes (u8), w words of lanes out of range; or, while ranking, a word and a
    # count (u8) a row; chase: no tables (its producers only copy)
    scatter = max(r16(r16(2 * nb) + r16(nb + 1) + r16(nb) + 4 * w), r16(4 * nb) + r16(nb))
    table = {"scatter": scatter, "gather": r16(4 * nb), "chase": 0}[kind]
    return nb, _round16(itemsize * nb), table


def pipe_smem(ix, itemsize, kind, track, N, tile, grad_d=False):
    """Shared bytes of a pd_scan_pipe block (the layout of pdscan_pipe.cu's pipe_smem)."""
    r16 = _round16
    nb, pitch, table = _pipe_rows(ix, itemsize, kind, N)
    slot = r16(4 * tile if ix.uses_maps else ix.width * tile * N) + (3 if grad_d else 2) * pitch * tile
    if not ix.uses_maps:
        slot += table * tile + (r16(tile) if kind == "scatter" else 0)
    smem = K.PIPE_STAGES * slot
    if ix.uses_maps:
        smem += r16(4 * ix.k * N) + table * (ix.k + 1) + (r16(ix.k + 1) if kind == "scatter" else 0)
    # two halves; scatter: K.PIPE_SCATTER_PLANES planes of nb rows and nb lane entries;
    # chase: none (its lanes follow their paths without an exchange)
    entries = {"gather": nb + 2, "chase": 0, "scatter": (K.PIPE_SCATTER_PLANES + 1) * nb}[kind]
    exchange = r16(itemsize * entries)
    smem += 2 * exchange
    if track and kind == "gather":
        smem += 2 * exchange + 2 * r16(4 * (nb + 2))
    return smem


def pipe_tile(ix, itemsize, kind, N, longest, units, grad_d=False):
    """The tile length of the pipelined scan: a tile's inputs and step tables in
    PIPE_TILE_BYTES, and small enough for the blocks of ``units`` to be resident
    together (up to 4 a multiprocessor), at most the longest unit."""
    if force_tile_len is not None:
        return max(1, min(force_tile_len, longest))
    _, pitch, table = _pipe_rows(ix, itemsize, kind, N)
    step = (4 if ix.uses_maps else ix.width * N + table + 1) + (3 if grad_d else 2) * pitch
    resident = min(4, max(1, -(-units // _attr("MultiProcessorCount"))))
    fixed = pipe_smem(ix, itemsize, kind, True, N, 0)  # (no tile: the same with grad_d)
    room = (_attr("MaxSharedMemoryPerMultiprocessor") // resident - 1024 - fixed) // K.PIPE_STAGES
    return max(1, min(64, PIPE_TILE_BYTES // step, room // step, longest))


def run_pipe(value, kind, ix, d, d_stride, b, b_stride, x0, x0_stride, out, S, L, N, flags, chunk=None,
             out_stride=None, grad_d=None):
    """The forward through pd_scan_pipe (chunked over time for few sequences, or in
    chunks of ``chunk`` steps) into ``out``, sequences ``out_stride`` elements apart
    (None: L N); False where it does not apply (N over 128, or shared memory too
    small).  ``grad_d``: (x_prev, its stride, grad_d, its stride), for the carry of a
    VJP, whose steps then write grad_d as well (pdscan_pipe.cu's GRAD_D)."""
    if use_pipe is False or N > K.PIPE_MAX_N:
        return False
    cw, e = K.pipe_shape(N, pipe_consumer_warps)
    chunks, chunk = _given_chunks(L, chunk) or pipe_plan(S, L)
    fused = grad_d is not None
    tile = pipe_tile(ix, d.itemsize, kind, N, chunk, S * chunks, fused)
    limit = _attr("MaxSharedMemoryPerBlockOptin")
    smem = pipe_smem(ix, d.itemsize, kind, False, N, tile, grad_d=fused)
    # (the summaries by paths take less shared memory than those of "gather")
    kind_summaries = summary_kind(kind)
    smem_summaries = pipe_smem(ix, d.itemsize, kind_summaries, True, N, tile) if chunks > 1 else 0
    if max(smem, smem_summaries) > limit:
        return False
    index_row = 4 if ix.uses_maps else ix.width * N
    row = d.itemsize * N
    grad_d_args = NO_GRAD_D
    if fused:
        x_prev, x_prev_stride, grad_d_out, grad_d_stride = grad_d
        grad_d_args = (x_prev, _i64(x_prev_stride), _i32(_grain(x_prev, x_prev_stride, row)),
                       grad_d_out, _i64(grad_d_stride))
    inputs = (ix.index, _i64(ix.index_stride), _i32(_grain(ix.index, ix.index_stride, index_row)),
              ix.maps if ix.maps is not None else NULL, _i64(ix.maps_stride), _i32(ix.k),
              d, _i64(d_stride), _i32(_grain(d, d_stride, row)), b, _i64(b_stride), _i32(_grain(b, b_stride, row)))
    chain, summaries = None, None
    fold = chunks > 1 and pipe_fold_chain and not ix.uses_maps and _chain_chunk(S, chunks - 1) is None
    if chunks > 1:
        # the summaries of every chunk but the last, then their scan into each chunk's
        # start (or, folded, the replay's first steps)
        summaries = _summaries(S, chunks, N, d.dtype)
        _launch(K.pipe_name(value, ix.width, kind_summaries, ix.uses_maps, e, cw, True), S * (chunks - 1),
                K.pipe_threads(cw), smem_summaries,
                inputs + (NULL, _i64(0), NULL, NULL, _i64(0)) + summaries + NO_GRAD_D
                + (_i32(L), _i32(N), _i32(chunk), _i32(chunks - 1), _i32(chunks), _i32(tile), _i32(flags)))
        if not fold:
            chain = _chain(value, kind, summaries, x0, x0_stride, flags & K.F_DETERMINISTIC | K.F_SIGNED_INDEX)
    _launch(K.pipe_name(value, ix.width, kind, ix.uses_maps, e, cw, False, fused), S * chunks, K.pipe_threads(cw),
            smem,
            inputs + (x0 if x0 is not None else NULL, _i64(x0_stride), chain if chain is not None else NULL,
                      out, _i64(L * N if out_stride is None else out_stride))
            + (summaries if fold else (NULL, NULL, NULL)) + grad_d_args
            + (_i32(L), _i32(N), _i32(chunk), _i32(chunks), _i32(chunks), _i32(tile),
               _i32(flags | (K.F_FOLD_CHAIN if fold else 0))))
    return True


def run_scan(value, kind, ix, d, d_stride, b, b_stride, x0, x0_stride, out, S, L, N, flags, chunk=None):
    """x = scan of (ix, d, b) from x0 into ``out`` (S, L, N) C-contiguous; ``chunk``: cut
    time into chunks of that many steps (None: as the shape says)."""
    if not flags & K.F_PRE_ADD:
        if run_pipe(value, kind, ix, d, d_stride, b, b_stride, x0, x0_stride, out, S, L, N, flags, chunk):
            return
    e, threads = K.lanes_per_thread(N), K.team_size(N)
    itemsize = d.itemsize
    chunks, chunk = _given_chunks(L, chunk) or plan(S, L, N)
    common = (_i32(L), _i32(N), _i32(chunk))
    if chunks > 1:
        summaries = _summaries(S, chunks, N, d.dtype)
        _launch(K.scan_name(value, ix.width, kind, ix.uses_maps, e, True), S * (chunks - 1), threads,
                scan_smem(N, itemsize, kind, True, ix.k),
                ix.args() + (d, _i64(d_stride), b, _i64(b_stride), NULL, _i64(0), NULL, NULL, _i64(0))
                + summaries + common + (_i32(chunks - 1), _i32(chunks), _i32(flags)))
        chain = _chain(value, kind, summaries, x0, x0_stride, flags & K.F_DETERMINISTIC | K.F_SIGNED_INDEX)
    else:
        chain = None
    _launch(K.scan_name(value, ix.width, kind, ix.uses_maps, e, False), S * chunks, threads,
            scan_smem(N, itemsize, kind, False, ix.k),
            ix.args() + (d, _i64(d_stride), b, _i64(b_stride),
                         x0 if x0 is not None else NULL, _i64(x0_stride),
                         chain if chain is not None else NULL, out, _i64(L * N), NULL, NULL, NULL)
            + common + (_i32(chunks), _i32(chunks), _i32(flags)))
