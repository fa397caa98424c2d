"""The CUDA backend against the NumPy reference, on a GPU (skipped without one).

Every comparison draws fresh random inputs (with scatter collisions), poisons the
outputs with NaN first, and checks that the inputs are left as they were.  Every
schedule runs (``SCHEDULES``): the pipelined scan (by shape; chunked, with tiles
shorter than a chunk; whole sequences in short tiles), the three-launch chunked
scan and the pass per sequence of the team kernels, with lengths that divide no
tile or chunk.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from oracles import edge_integers, lane_order_problem, random_maps, random_unit_values, random_values

import pdscan
from pdscan._problem import prepare
from pdscan.backends import numpy_ref

cupy = pytest.importorskip("cupy")
try:
    HAVE_GPU = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # noqa: BLE001 - no driver
    HAVE_GPU = False
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU")]

from pdscan.backends.cupy_cuda import _launch, external_stream  # noqa: E402

MODES = ["scatter", "gather"]
TOLERANCE = {np.complex64: 1e-5, np.float32: 1e-5, np.complex128: 1e-12, np.float64: 1e-12}


#: (forced chunk length, pipelined scan, its forced tile length, its consumer warps,
#: gather mode's chunk summaries by paths) of each schedule the tests run
SCHEDULES = {
    "auto": (None, None, None, None, True),              # chosen by shape: the pipelined scan for N <= 128
    "pipe_chunks7_tiles3": (7, True, 3, None, True),     # pipelined: chunks of 7 steps in tiles of 3
    "pipe_tiles5": (0, True, 5, None, True),             # pipelined: whole sequences, tiles of 5 steps
    "pipe_1warp_chunks7_tiles3": (7, True, 3, 1, True),  # one consumer warp, two lanes a thread at N = 37
    "pipe_4warps_tiles5": (0, True, 5, 4, True),         # four consumer warps, most threads idle at N = 37
    "pipe_exchange_summaries_chunks9_tiles7": (9, True, 7, None, False),  # gather summaries step by step
    "chunks7": (7, False, None, None, True),             # team kernels, three launches: summaries, their scan, a replay
    "sequences": (0, False, None, None, True),           # team kernels: one team walks a whole sequence
}


@pytest.fixture(params=list(SCHEDULES))
def schedule(request, monkeypatch):
    chunk, pipe, tile, consumer_warps, chase = SCHEDULES[request.param]
    monkeypatch.setattr(_launch, "force_chunk_len", chunk)
    monkeypatch.setattr(_launch, "use_pipe", pipe)
    monkeypatch.setattr(_launch, "force_tile_len", tile)
    monkeypatch.setattr(_launch, "pipe_consumer_warps", consumer_warps)
    monkeypatch.setattr(_launch, "pipe_chase", chase)
    return request.param


def inputs(rng, batch, L, N, dtype=np.complex64, index_dtype=np.int32, K=None, x0=True):
    real = np.float32 if np.dtype(dtype) in (np.complex64, np.float32) else np.float64
    out = dict(
        index=random_maps(rng, batch + ((L,) if K else (L, N)), K or N, index_dtype),
        d=random_unit_values(rng, batch + (L, N), dtype),
        b=random_values(rng, batch + (L, N), dtype),
        x0=random_values(rng, batch + (N,), dtype) if x0 else None,
        maps=random_maps(rng, batch + (K, N), N, index_dtype) if K else None,
    )
    del real
    return out


def rel_err(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert not np.isnan(got).any(), "NaN in the output: an element was not written"
    return np.linalg.norm((got - want).ravel()) / max(np.linalg.norm(want.ravel()), 1e-30)


def on_gpu(host):
    return {k: (None if v is None else cupy.asarray(v)) for k, v in host.items()}


def forward_both(host, out_poison=True, dev=None, **kw):
    """The CUDA forward of ``host`` (on the device as ``dev``, else copied there) and
    the reference's."""
    dev = on_gpu(host) if dev is None else dev
    p = prepare(dev["index"], dev["d"], dev["b"], dev["x0"], maps=dev["maps"], **kw)
    out = cupy.full(p.batch_shape + (p.L, p.N), np.nan, p.dtype) if out_poison else None
    got = pdscan.backends.get("cuda").forward(p, out=out)
    ref_p = prepare(host["index"], host["d"], host["b"], host["x0"], maps=host["maps"], **kw)
    want = numpy_ref.BACKEND.forward(ref_p)
    for k, v in host.items():  # inputs untouched
        if v is not None:
            np.testing.assert_array_equal(cupy.asnumpy(dev[k]), v)
    return cupy.asnumpy(got), want


def vjp_both(host, conjugate, dev=None, **kw):
    rng = np.random.default_rng(7)
    ref_p = prepare(host["index"], host["d"], host["b"], host["x0"], maps=host["maps"], **kw)
    x = numpy_ref.BACKEND.forward(ref_p)
    grad_x = random_values(rng, x.shape, x.dtype)
    want = numpy_ref.BACKEND.vjp(ref_p, x, grad_x, conjugate=conjugate)
    dev = on_gpu(host) if dev is None else dev
    p = prepare(dev["index"], dev["d"], dev["b"], dev["x0"], maps=dev["maps"], **kw)
    outs = tuple(None if w is None else cupy.full(w.shape, np.nan, w.dtype) for w in want)
    got = pdscan.backends.get("cuda").vjp(p, cupy.asarray(x), cupy.asarray(grad_x), conjugate=conjugate,
                                          out=outs)
    return [None if g is None else cupy.asnumpy(g) for g in got], want


def assert_vjp_matches(host, conjugate, tolerance, **kw):
    """Every gradient of vjp_both within ``tolerance`` (relative) of the reference's
    (grad_x0 only where there is an x0)."""
    got, want = vjp_both(host, conjugate, **kw)
    for g, w in zip(got, want):
        if w is not None:
            assert rel_err(g, w) <= tolerance


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 3])
@pytest.mark.parametrize("x0", [True, False])
def test_forward_matches_reference(schedule, mode, reverse, K, x0):
    rng = np.random.default_rng()
    host = inputs(rng, (3, 2), 61, 37, np.complex128, K=K, x0=x0)
    got, want = forward_both(host, mode=mode, reverse=reverse)
    assert rel_err(got, want) <= 1e-12


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("K", [None, 4])
@pytest.mark.parametrize("conjugate", [False, True])
def test_vjp_matches_reference(schedule, mode, reverse, K, conjugate):
    rng = np.random.default_rng()
    host = inputs(rng, (5,), 45, 70, np.complex128, K=K)
    assert_vjp_matches(host, conjugate, 1e-12, mode=mode, reverse=reverse)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                         np.int64, np.uint64])
def test_dtypes(dtype, index_dtype):
    rng = np.random.default_rng()
    host = inputs(rng, (4,), 33, 20, dtype, index_dtype)
    for mode in MODES:
        got, want = forward_both(host, mode=mode)
        assert rel_err(got, want) <= TOLERANCE[dtype]
        assert_vjp_matches(host, True, TOLERANCE[dtype] * 10, mode=mode)


@pytest.mark.parametrize("L, N", [(1, 5), (2, 40), (9, 1), (1, 1), (130, 1024), (40, 700), (17, 33), (300, 64),
                                  (257, 128)])
def test_sizes(schedule, L, N):
    rng = np.random.default_rng()
    host = inputs(rng, (2,), L, N, np.complex64)
    for mode in MODES:
        got, want = forward_both(host, mode=mode)
        assert rel_err(got, want) <= 1e-5
        assert_vjp_matches(host, False, 1e-4, mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_broadcast_batch(schedule, mode):
    """d shared by every sequence, maps per head, x0 per batch row: zero-copy strides."""
    rng = np.random.default_rng()
    L, N = 50, 24
    host = dict(index=random_maps(rng, (3, L), 5, np.int64),
                d=random_unit_values(rng, (L, N), np.complex128),
                b=random_values(rng, (2, 3, L, N), np.complex128),
                x0=random_values(rng, (2, 1, N), np.complex128),
                maps=random_maps(rng, (3, 5, N), N, np.int16))
    got, want = forward_both(host, mode=mode)
    assert rel_err(got, want) <= 1e-12
    assert_vjp_matches(host, True, 1e-12, mode=mode)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "uint32", "int64", "uint64"])
def test_dictionary_conversion_is_exact_at_the_edges(dtype):
    """The launcher's int32 conversion on the device: in-range values kept, every other
    one -1, among them 64-bit values whose low 32 bits are in range."""
    high = 100
    values = np.array(edge_integers(dtype, high), dtype=object).astype(dtype)
    got = cupy.asnumpy(_launch._safe_int32(cupy.asarray(values), high))
    want = np.array([int(v) if 0 <= int(v) < high else -1 for v in values], np.int32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int16])
def test_dictionary_views_with_gaps_between_sequences(schedule, mode, index_dtype):
    """Selectors and maps sliced out of larger arrays on the device (every other head):
    forward and VJP as the reference's on the same values; int16 ones are converted, and
    the conversion's sequences lie closer together than the view's."""
    rng = np.random.default_rng()
    L, N, K = 40, 24, 5
    wide = dict(index=random_maps(rng, (2, 6, L), K, index_dtype), maps=random_maps(rng, (2, 6, K, N), N, index_dtype))
    host = dict(d=random_unit_values(rng, (2, 3, L, N), np.complex128),
                b=random_values(rng, (2, 3, L, N), np.complex128), x0=None)
    dev = on_gpu(host)
    for k, v in wide.items():
        host[k], dev[k] = v[:, ::2], cupy.asarray(v)[:, ::2]
    assert not dev["maps"].flags.c_contiguous
    got, want = forward_both(host, dev=dev, mode=mode)
    assert rel_err(got, want) <= 1e-12
    assert_vjp_matches(host, True, 1e-12, dev=dev, mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_last_sequence_ends_at_the_end_of_its_allocation(schedule, mode, reverse):
    """Inputs of the exact size, so that the data ends at the allocation's end (a read
    past the end would fault under compute-sanitizer and in the tests there): the
    forward, and the VJP, whose carry reads the index and d from the second step on."""
    rng = np.random.default_rng()
    host = inputs(rng, (3,), 29, 48, np.complex64)
    ref_p = prepare(host["index"], host["d"], host["b"], host["x0"], mode=mode, reverse=reverse)
    want = numpy_ref.BACKEND.forward(ref_p)
    grad_x = random_values(rng, want.shape, want.dtype)
    want_grads = numpy_ref.BACKEND.vjp(ref_p, want, grad_x, conjugate=True)
    with cupy.cuda.using_allocator(None):  # plain cudaMalloc: allocations of the exact size
        dev = on_gpu(host)
        p = prepare(dev["index"], dev["d"], dev["b"], dev["x0"], mode=mode, reverse=reverse)
        backend = pdscan.backends.get("cuda")
        got = cupy.asnumpy(backend.forward(p))
        grads = backend.vjp(p, cupy.asarray(want), cupy.asarray(grad_x), conjugate=True)
        grads = [cupy.asnumpy(g) for g in grads]
    assert rel_err(got, want) <= 1e-5
    for g, w in zip(grads, want_grads):
        assert rel_err(g, w) <= 1e-4


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("K", [None, 3])
def test_out_of_range_index_without_check_is_nan(schedule, mode, K):
    rng = np.random.default_rng()
    host = inputs(rng, (2,), 40, 16, np.complex64, np.int64, K=K)
    bad_step = 23
    if K:
        host["index"][1, bad_step] = 7
    else:
        host["index"][1, bad_step, 3] = -5
    dev = on_gpu(host)
    x = pdscan.scan(dev["index"], dev["d"], dev["b"], dev["x0"], maps=dev["maps"], mode=mode,
                    backend="cuda", check_index=False)
    x = cupy.asnumpy(x)
    assert np.isnan(x[1, bad_step]).any()
    assert not np.isnan(x[1, :bad_step]).any() and not np.isnan(x[0]).any()
    # nothing reached the other sequence, nor the steps before: the reference's values
    # (which, bounds-safe too, makes the bad step's whole state NaN)
    want = pdscan.scan(host["index"], host["d"], host["b"], host["x0"], maps=host["maps"], mode=mode,
                       backend="numpy", check_index=False)
    assert np.isnan(want[1, bad_step]).all()
    assert np.max(np.abs(x[0] - want[0])) <= 1e-4 * np.max(np.abs(want[0]))
    assert np.max(np.abs(x[1, :bad_step] - want[1, :bad_step])) <= 1e-4 * np.max(np.abs(want[1, :bad_step]))
    grads = pdscan.scan_vjp(dev["index"], dev["d"], dev["b"], dev["x0"], cupy.asarray(np.nan_to_num(x)),
                            cupy.ones(x.shape, x.dtype), maps=dev["maps"], mode=mode, backend="cuda",
                            check_index=False)
    assert np.isnan(cupy.asnumpy(grads[0])[1]).any()
    cupy.cuda.get_current_stream().synchronize()  # a fault would surface here


@pytest.mark.parametrize("mode", MODES)
def test_bitwise_repeatable(schedule, mode, monkeypatch):
    """Gather is deterministic as it is; scatter with the deterministic option."""
    monkeypatch.setattr(_launch, "deterministic", True)
    rng = np.random.default_rng()
    host = inputs(rng, (8,), 200, 128, np.complex64)
    host["index"] = random_maps(rng, (8, 200, 128), 4, np.int32)  # heavy collisions
    runs = [forward_both(host, mode=mode)[0] for _ in range(3)]
    assert rel_err(runs[0], forward_both(host, mode=mode)[1]) <= 1e-5
    for r in runs[1:]:
        np.testing.assert_array_equal(r.view(np.uint8), runs[0].view(np.uint8))
    grads = [vjp_both(host, True, mode=mode)[0] for _ in range(3)]
    for g in grads[1:]:
        for a, b in zip(g, grads[0]):
            if a is not None:
                np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_external_stream_wraps_the_pointer_without_deprecation():
    """The adapters hand CuPy a framework's stream as a raw pointer."""
    made = cupy.cuda.Stream(non_blocking=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        wrapped = external_stream(made.ptr, cupy.cuda.Device().id)
    assert wrapped.ptr == made.ptr
    with wrapped:
        assert cupy.cuda.get_current_stream().ptr == made.ptr
        x = cupy.arange(10) * 2
    made.synchronize()
    assert int(x.sum()) == 90


def test_runs_on_the_current_stream():
    rng = np.random.default_rng()
    host = inputs(rng, (4,), 100, 32, np.complex64)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        dev = on_gpu(host)
        x = pdscan.scan(dev["index"], dev["d"], dev["b"], dev["x0"], backend="cuda", check_index=False)
    stream.synchronize()
    want = numpy_ref.BACKEND.forward(prepare(host["index"], host["d"], host["b"], host["x0"]))
    assert rel_err(cupy.asnumpy(x), want) <= 1e-5


def test_more_than_2_to_the_31_elements():
    """64-bit offsets: 2^31 + 4096 output elements from broadcast inputs (every
    sequence the same), float32; the last sequence must equal the first."""
    free, _ = cupy.cuda.runtime.memGetInfo()
    S, L, N = 2**19 + 1, 64, 64
    if free < 3 * 4 * S * L * N:
        pytest.skip("not enough GPU memory")
    rng = np.random.default_rng()
    host = inputs(rng, (1,), L, N, np.float32)
    dev = on_gpu(host)
    big = {k: cupy.broadcast_to(v, (S,) + v.shape[1:]) for k, v in dev.items() if v is not None}
    x = pdscan.scan(big["index"], big["d"], big["b"], big["x0"], backend="cuda", check_index=False)
    want = numpy_ref.BACKEND.forward(prepare(host["index"], host["d"], host["b"], host["x0"]))[0]
    assert rel_err(cupy.asnumpy(x[-1]), want) <= 1e-5
    assert rel_err(cupy.asnumpy(x[2**18]), want) <= 1e-5
    del x
    gx = cupy.broadcast_to(cupy.ones((1, L, N), cupy.float32), (S, L, N))
    xs = cupy.broadcast_to(cupy.asarray(numpy_ref.BACKEND.forward(
        prepare(host["index"], host["d"], host["b"], host["x0"]))), (S, L, N))
    gd, gb, g0 = pdscan.backends.get("cuda").vjp(
        prepare(big["index"], big["d"], big["b"], big["x0"], check_index=False), xs, gx, conjugate=False)
    ref = numpy_ref.BACKEND.vjp(prepare(host["index"], host["d"], host["b"], host["x0"]),
                                cupy.asnumpy(xs[:1]), np.ones((1, L, N), np.float32), conjugate=False)
    assert rel_err(cupy.asnumpy(gd[-1]), ref[0][0]) <= 1e-5
    assert rel_err(cupy.asnumpy(g0[-1]), ref[2][0]) <= 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk, tile", [(2, None), (8, 3), (33, 5), (None, None)])
@pytest.mark.parametrize("consumer_warps", [None, 1])
@pytest.mark.parametrize("chase", [True, False])
def test_pipelined_scan_with_hundreds_of_chunks(mode, chunk, tile, consumer_warps, chase, monkeypatch):
    """Few sequences cut into hundreds or thousands of chunks (their summaries'
    scan chunked again, recursively), tiles that divide no chunk, a short last one;
    the VJP, whose carry runs through the same scan (conjugated, in the adjoint's kind);
    gather kind's summaries by paths and through the exchange (``pipe_chase``)."""
    monkeypatch.setattr(_launch, "use_pipe", True)
    monkeypatch.setattr(_launch, "pipe_chase", chase)
    monkeypatch.setattr(_launch, "force_chunk_len", chunk)
    monkeypatch.setattr(_launch, "force_tile_len", tile)
    monkeypatch.setattr(_launch, "pipe_consumer_warps", consumer_warps)
    rng = np.random.default_rng()
    host = inputs(rng, (3,), 5003, 64, np.complex64, K=None)
    got, want = forward_both(host, mode=mode)
    assert rel_err(got, want) <= 1e-4
    got, want = forward_both(host, mode=mode, reverse=True)
    assert rel_err(got, want) <= 1e-4
    for reverse in (False, True):
        assert_vjp_matches(host, True, 1e-4, mode=mode, reverse=reverse)


@pytest.mark.parametrize("mode", MODES)
def test_chunked_results_do_not_depend_on_the_tiles(mode, monkeypatch):
    """With the chunks fixed, the forward (both directions) and the VJP come out bit for
    bit the same for any tile length and consumer warps: every step keeps the order of
    its sums, and gather kind's summaries follow each lane's path through its whole
    chunk, not tile by tile.  Gather mode's forward and scatter mode's VJP (its carry is
    of gather kind) take those summaries."""
    monkeypatch.setattr(_launch, "use_pipe", True)
    monkeypatch.setattr(_launch, "deterministic", True)
    monkeypatch.setattr(_launch, "force_chunk_len", 33)
    rng = np.random.default_rng()
    host = inputs(rng, (2,), 701, 64, np.complex64)
    runs = []
    for tile, consumer_warps in ((3, None), (5, 1), (None, None)):
        monkeypatch.setattr(_launch, "force_tile_len", tile)
        monkeypatch.setattr(_launch, "pipe_consumer_warps", consumer_warps)
        run = []
        for reverse in (False, True):
            got, want = forward_both(host, mode=mode, reverse=reverse)
            assert rel_err(got, want) <= 1e-5
            run.append(got)
        run += [g for g in vjp_both(host, True, mode=mode)[0] if g is not None]
        runs.append(run)
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tile, consumer_warps, chase", [(2, None, True), (5, 1, False), (None, None, True)])
def test_summaries_folded_into_the_replay_match_their_scan(mode, tile, consumer_warps, chase, monkeypatch):
    """The replay that runs the summaries of the chunks before each chunk as its first
    steps (``pipe_fold_chain``, pdscan_pipe.cu's F_FOLD_CHAIN) comes out bit for bit as
    the replay from their scan (the launch it replaces; seen not to run), NaN for NaN
    where an index is out of range: the forward both ways, with and without x0, and the
    conjugated VJP, whose carry takes the fold too (grad_d written as it goes).  Ten
    summaries a sequence, in tiles of 2 (five summary tiles before the chunk's own), 5,
    or the shape's own; a last chunk shorter than the others."""
    monkeypatch.setattr(_launch, "use_pipe", True)
    monkeypatch.setattr(_launch, "force_chunk_len", 37)  # 400 steps: 11 chunks, the last of 30
    monkeypatch.setattr(_launch, "force_tile_len", tile)
    monkeypatch.setattr(_launch, "pipe_consumer_warps", consumer_warps)
    monkeypatch.setattr(_launch, "pipe_chase", chase)
    chains = []
    chain = _launch._chain

    def spy(*args):
        chains.append(args[2][0].shape)
        return chain(*args)

    monkeypatch.setattr(_launch, "_chain", spy)
    rng = np.random.default_rng()
    host = inputs(rng, (3,), 400, 50, np.complex64)
    good = on_gpu(host)
    bad = on_gpu(host)
    bad["index"][1, 150, 7] = 50  # a lane out of range in the fifth chunk of sequence 1
    backend = pdscan.backends.get("cuda")
    grad_x = cupy.asarray(random_values(rng, (3, 400, 50), np.complex64))

    def outputs(dev):
        outs = []
        for reverse in (False, True):
            for x0 in (dev["x0"], None):
                p = prepare(dev["index"], dev["d"], dev["b"], x0, mode=mode, reverse=reverse, check_index=False)
                x = backend.forward(p, out=cupy.full((3, 400, 50), np.nan, np.complex64))
                outs.append(cupy.asnumpy(x))
                outs += [cupy.asnumpy(g) for g in backend.vjp(p, x, grad_x, conjugate=True) if g is not None]
        return outs

    monkeypatch.setattr(_launch, "pipe_fold_chain", True)
    folded = [outputs(good), outputs(bad)]
    got, want = forward_both(host, mode=mode, reverse=True)
    assert rel_err(got, want) <= 1e-5
    assert chains == [], "the summaries' scan ran"
    monkeypatch.setattr(_launch, "pipe_fold_chain", False)
    scanned = [outputs(good), outputs(bad)]
    assert (10, 50) in [shape[1:] for shape in chains], "the summaries' scan did not run"
    for run_folded, run_scanned in zip(folded, scanned):
        for a, b in zip(run_folded, run_scanned):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    assert not any(np.isnan(a).any() for a in folded[0])
    assert np.isnan(folded[1][0][1, 150:]).any() and not np.isnan(folded[1][0][1, :150]).any()
    assert not np.isnan(folded[1][0][[0, 2]]).any()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pipe_vjp", [None, False])
def test_vjp_takes_the_pipelined_scan_where_it_applies(mode, pipe_vjp, monkeypatch):
    """Up to N = 128 the VJP's carry runs through the pipelined scan (one step short of
    L, in the adjoint's kind, writing grad_d), unless ``pipe_vjp`` is False; beyond,
    the team kernels."""
    monkeypatch.setattr(_launch, "pipe_vjp", pipe_vjp)
    calls = []
    run_pipe = _launch.run_pipe

    def spy(value, kind, ix, d, d_stride, b, b_stride, x0, x0_stride, out, S, L, N, flags, **kw):
        calls.append((kind, L, N, kw.get("grad_d") is not None))
        return run_pipe(value, kind, ix, d, d_stride, b, b_stride, x0, x0_stride, out, S, L, N, flags, **kw)

    monkeypatch.setattr(_launch, "run_pipe", spy)
    rng = np.random.default_rng()
    for N in (128, 129):
        host = inputs(rng, (4,), 50, N, np.complex64)
        assert_vjp_matches(host, False, 1e-4, mode=mode)
    adjoint = "gather" if mode == "scatter" else "scatter"
    assert calls == ([] if pipe_vjp is False else [(adjoint, 49, 128, True)])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_vjp_with_grad_d_apart(mode, reverse, monkeypatch):
    """The VJP with grad_d from the element-wise pass instead of the carry's scan
    (``vjp_fuse_grad_d`` False, the benchmarks' comparison), chunked."""
    monkeypatch.setattr(_launch, "vjp_fuse_grad_d", False)
    monkeypatch.setattr(_launch, "force_chunk_len", 9)
    rng = np.random.default_rng()
    host = inputs(rng, (3,), 40, 50, np.complex128)
    assert_vjp_matches(host, True, 1e-12, mode=mode, reverse=reverse)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pipe", [None, False])
def test_scan_of_chunk_summaries_cut_into_chunks(mode, pipe, monkeypatch):
    """Long sequences on the shape's own plan: the scan of their chunk summaries is cut
    into chunks of its own (and is seen to be: ``run_scan`` is called with a chunk
    length), the forward (reverse, x0) and the VJP match the reference, at a length that
    divides no chunk."""
    monkeypatch.setattr(_launch, "use_pipe", pipe)
    monkeypatch.setattr(_launch, "force_chunk_len", None)
    monkeypatch.setattr(_launch, "CHAIN_MIN_STEPS", 24)
    chunk_lengths = []
    run_scan = _launch.run_scan

    def spy(*args):
        chunk_lengths.append(args[14] if len(args) > 14 else None)
        return run_scan(*args)

    monkeypatch.setattr(_launch, "run_scan", spy)
    rng = np.random.default_rng()
    host = inputs(rng, (2,), 7683, 64, np.complex128)
    got, want = forward_both(host, mode=mode, reverse=True)
    assert rel_err(got, want) <= 1e-12
    assert [c for c in chunk_lengths if c is not None], "the summaries' scan was not cut"
    chunk_lengths.clear()
    assert_vjp_matches(host, True, 1e-12, mode=mode)
    assert [c for c in chunk_lengths if c is not None], "the VJP's summaries' scan was not cut"


def force_pipe(monkeypatch, tile, consumer_warps=None):
    """The pipelined scan over whole sequences in tiles of ``tile`` steps; a forward
    it does not take (its shared memory over the limit) fails the test rather than
    falling back to the team kernels unseen."""
    monkeypatch.setattr(_launch, "use_pipe", True)
    monkeypatch.setattr(_launch, "force_tile_len", tile)
    monkeypatch.setattr(_launch, "force_chunk_len", 0)
    monkeypatch.setattr(_launch, "pipe_consumer_warps", consumer_warps)
    run_pipe = _launch.run_pipe

    def must_run(*args, **kwargs):
        assert run_pipe(*args, **kwargs), "the pipelined scan did not take this forward"
        return True

    monkeypatch.setattr(_launch, "run_pipe", must_run)


def test_pipelined_scan_takes_unaligned_and_narrow_inputs(monkeypatch):
    """int8 index words with odd N (no 4-byte copies), and d offset by one element
    in its allocation (8-byte copies only); the VJP with x and grad_x offset too."""
    force_pipe(monkeypatch, 5)
    rng = np.random.default_rng()
    host = inputs(rng, (2,), 41, 7, np.complex64, np.int8)
    dev = on_gpu(host)

    def offset(a):  # a copy of ``a`` one element into its allocation
        big = cupy.zeros(a.size + 1, a.dtype)
        big[1:] = a.ravel()
        return big[1:].reshape(a.shape)

    d_off = offset(dev["d"])
    for mode in MODES:
        p = prepare(dev["index"], d_off, dev["b"], dev["x0"], mode=mode)
        got = cupy.asnumpy(pdscan.backends.get("cuda").forward(p))
        ref_p = prepare(host["index"], host["d"], host["b"], host["x0"], mode=mode)
        want = numpy_ref.BACKEND.forward(ref_p)
        assert rel_err(got, want) <= 1e-5
        grad_x = random_values(rng, want.shape, want.dtype)
        grads = pdscan.backends.get("cuda").vjp(p, offset(cupy.asarray(want)), offset(cupy.asarray(grad_x)),
                                                conjugate=True)
        for g, w in zip(grads, numpy_ref.BACKEND.vjp(ref_p, want, grad_x, conjugate=True)):
            assert rel_err(cupy.asnumpy(g), w) <= 1e-5


@pytest.mark.parametrize("defines", [{"PD_PIPE_PRODUCERS": "2"}, {"PD_PIPE_PRODUCERS": "1", "PD_PIPE_STAGES": "4"}])
def test_pipelined_scan_with_other_producer_counts(defines, monkeypatch):
    """Other PD_PIPE_PRODUCERS and PD_PIPE_STAGES (compile-time defines; 3 and 6 by
    default): other slot owners and barrier counts, chunked and not, both modes, and
    the VJP."""
    from pdscan.backends.cupy_cuda import _kernels

    saved = dict(_kernels.DEFINES)
    _kernels.set_defines({**saved, **defines})
    try:
        monkeypatch.setattr(_launch, "use_pipe", True)
        rng = np.random.default_rng()
        host = inputs(rng, (3,), 301, 64, np.complex64, K=None)
        for chunk, tile in [(0, 5), (37, 4)]:
            monkeypatch.setattr(_launch, "force_chunk_len", chunk)
            monkeypatch.setattr(_launch, "force_tile_len", tile)
            for mode in MODES:
                got, want = forward_both(host, mode=mode, reverse=chunk > 0)
                assert rel_err(got, want) <= 1e-5
                assert_vjp_matches(host, True, 1e-4, mode=mode, reverse=chunk == 0)
    finally:
        _kernels.set_defines(saved)


@pytest.mark.parametrize("consumer_warps", [None, 1])
def test_pipelined_scan_sums_any_number_of_sources(consumer_warps, monkeypatch):
    """Rows with more sources than the step table holds (all 64 lanes onto 2 rows)
    walk their lists of sources; steps mixing both kinds follow one another."""
    force_pipe(monkeypatch, 11, consumer_warps)
    rng = np.random.default_rng()
    host = inputs(rng, (2,), 97, 64, np.complex128)
    crowded = rng.random(97) < 0.5
    host["index"][:, crowded] = random_maps(rng, (2, int(crowded.sum()), 64), 2, np.int32)
    got, want = forward_both(host, mode="scatter")
    assert rel_err(got, want) <= 1e-12


# complex128 rows of 128 lanes leave no room for tiles of 5 steps: complex64 there
@pytest.mark.parametrize("N, consumer_warps, dtype", [(64, None, np.complex128), (64, 1, np.complex128),
                                                      (100, None, np.complex128), (128, None, np.complex64),
                                                      (128, 1, np.complex64)])
def test_pipelined_scan_sums_a_row_in_lane_order(N, consumer_warps, dtype, monkeypatch):
    """Scatter sums each row's sources in lane order, bit for bit (lane_order_problem):
    crowded rows through the walk of their source lists, whose loads go out eight at a
    time, across batches and 32-lane groups; permuted steps through the planes."""
    force_pipe(monkeypatch, 5, consumer_warps)
    host, want = lane_order_problem(np.random.default_rng(), 23, N, dtype)
    got, _ = forward_both(host, mode="scatter")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("N, consumer_warps", [(64, None), (64, 1), (100, None), (100, 1), (100, 2), (128, None),
                                               (128, 1)])
def test_pipelined_scan_ranks_sources_across_warp_halves(N, consumer_warps, monkeypatch):
    """Each step sends a random set of c lanes, spread over every 32-lane group, onto
    one row (c from 1 to N, around the table's 4 and 8 entries) and permutes the
    rest: a row's rank count carries from one group of lanes to the next."""
    force_pipe(monkeypatch, 7, consumer_warps)
    rng = np.random.default_rng()
    L = 60
    # complex128 rows of 100 lanes and more leave no room for 7-step tiles: complex64
    dtype = np.complex128 if N <= 64 else np.complex64
    host = inputs(rng, (2,), L, N, dtype)
    counts = [1, 2, 3, 4, 5, 7, 8, 9, 12, 31, 33, N]
    for s in range(2):
        for t in range(L):
            c = counts[(t + s) % len(counts)]
            lanes = rng.permutation(N)
            row = int(rng.integers(N))
            others = rng.permutation(np.setdiff1d(np.arange(N), [row]))[:N - c]
            host["index"][s, t, lanes[:c]] = row
            host["index"][s, t, lanes[c:]] = others
    got, want = forward_both(host, mode="scatter")
    assert rel_err(got, want) <= TOLERANCE[dtype]
    got, want = forward_both(host, mode="scatter", reverse=True)
    assert rel_err(got, want) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "float64"])
@pytest.mark.parametrize("batch_q, N, K", [((), 70, 5), ((3,), 33, 3), ((1,), 5, 9), ((2, 1), 6, 4),
                                           ((2, 3), 9, 3)])
def test_straight_through_dictionary_contractions(dtype, batch_q, N, K):
    """The fused grad_w / grad_Q kernels equal the array form that defines them
    (pdscan.ste._dictionary_grads), over several (i, j) tiles, N not a multiple of
    32; a dictionary shared by all sequences, one per head (the layers'), one per
    row of the batch and one per sequence, so that grad_Q sums over groups of 6, 2,
    3 and 1 sequences; 37 steps of 6 sequences make the selector batches of 256
    (sequence, step) pairs end inside a sequence.  Outputs come from a NaN-poisoned pool."""
    from pdscan import ste
    from pdscan.backends.cupy_cuda import BACKEND

    rng = np.random.default_rng(N + K)
    batch, L = (2, 3), 37
    w = cupy.asarray(rng.normal(size=batch + (L, K)))
    Q = cupy.asarray(rng.random(batch_q + (K, N, N)))
    d = cupy.asarray(random_values(rng, batch + (L, N), dtype))
    b = cupy.asarray(random_values(rng, batch + (L, N), dtype))
    p = ste._dictionary_problem(w, Q, d, b, None, "scatter", False)
    u = cupy.asarray(random_values(rng, batch + (L, N), dtype))
    v = cupy.asarray(random_values(rng, batch + (L, N), dtype))
    members, groups = ste._dictionary_members(p, Q)
    assert members.shape == (math.prod(groups), 6 // math.prod(groups))
    want = ste._dictionary_grads(p, u, v, members)
    poison = cupy.full(1 << 22, cupy.nan)  # freed blocks the kernels' outputs will reuse
    del poison
    got = BACKEND.dictionary_grads(p, u, v, members)
    for g, w_, name in zip(got, want, ("grad_w", "grad_Q")):
        assert g.shape == w_.shape, name
        assert bool(cupy.isfinite(g).all()), name
        tol = 1e-5 if dtype == "complex64" else 1e-12
        assert float(cupy.abs(g - w_).max()) <= tol * float(cupy.abs(w_).max()), name