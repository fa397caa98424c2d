"""The PD monoid, written once in array-API style.

A *transform* is a pair (index, d): an integer map sigma of shape (..., N) and values
d of shape (..., N).  It stands for an N x N matrix A that is never built:

* ``"scatter"`` mode (A = P D, column one-hot):  (A x)[i] = sum_{j: sigma(j)=i} d[j] x[j]
* ``"gather"``  mode (A = D P^T, row one-hot):    (A x)[i] = d[i] x[sigma(i)]

scatter(sigma, d) is the transpose of gather(sigma, d).  An *affine element*
(index, d, b) is the map x -> A x + b.  Composition stays O(N):

* scatter: A2 A1 = (sigma2[sigma1], d2[sigma1] * d1)
* gather:  A2 A1 = (sigma1[sigma2], d2 * d1[sigma2])

Every function takes the namespace ``xp`` first and works with any number of
leading batch dimensions, which broadcast.  Only array-API operations are used
(1-D ``take``, ``argsort``, ``searchsorted``, ``concat``), so the same code runs on
NumPy, CuPy, PyTorch, jax.numpy and array-api-strict.  It is the second oracle of
the test suite (through ``associative_scan``) and the generic backend.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ._namespace import device as _device

MODES = ("scatter", "gather")


class Affine(NamedTuple):
    """x -> A x + b with A = (index, d) in ``mode``; b is None for a pure transform."""

    index: object
    d: object
    b: object
    mode: str


def check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: expected 'scatter' or 'gather', got {mode!r}")
    return mode


def transpose_mode(mode: str) -> str:
    """The mode of A^T for A in ``mode`` (same index and values)."""
    return "gather" if check_mode(mode) == "scatter" else "scatter"


def _broadcast_shapes(*shapes):
    ndim = max(len(s) for s in shapes)
    out = []
    for axis in range(ndim):
        sizes = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def default_index_dtype(xp):
    """The namespace's default indexing dtype (int64, or int32 in JAX without x64)."""
    try:
        return xp.__array_namespace_info__().default_dtypes()["indexing"]
    except (AttributeError, KeyError, TypeError):
        return xp.int64


def _row_offsets(xp, batch, target, length, dev):
    """For each position of ``target`` (a broadcast of ``batch``), the flat offset of
    the matching row of an array of shape batch + (length,)."""
    rows = xp.reshape(xp.arange(math.prod(batch), dtype=default_index_dtype(xp), device=dev), batch)
    rows = xp.broadcast_to(rows, target)
    return xp.reshape(rows * length, target + (1,))


def in_range(xp, index, length):
    """True where an index value names one of ``length`` lanes."""
    return (index >= 0) & (index < length)


def _missing(xp, dtype, dev):
    """What a read out of range gives: NaN for values, -1 (itself out of range) for
    the signed indices that ``gather`` composes."""
    if xp.isdtype(dtype, "integral"):
        return xp.full((), -1, dtype=dtype, device=dev)
    nan = complex("nan") if xp.isdtype(dtype, "complex floating") else float("nan")
    return xp.full((), nan, dtype=dtype, device=dev)


def gather(xp, x, index):
    """out[..., i] = x[..., index[..., i]] (batch dimensions broadcast).

    An index out of range reads nothing (in particular not a neighbouring row of the
    flattened array): NaN there, or -1 where x is an index, which stays out of range
    through later compositions.  Integer x is read as the default (signed) index type.
    """
    batch_x, length = tuple(x.shape[:-1]), x.shape[-1]
    if xp.isdtype(x.dtype, "integral"):
        x = xp.astype(x, default_index_dtype(xp), copy=False)
    target = _broadcast_shapes(batch_x, tuple(index.shape[:-1]))
    index = xp.astype(index, default_index_dtype(xp), copy=False)
    ok = in_range(xp, index, length)
    safe = xp.where(ok, index, xp.zeros_like(index))
    flat = _row_offsets(xp, batch_x, target, length, _device(x)) + safe
    out = xp.reshape(xp.take(xp.reshape(x, (-1,)), xp.reshape(flat, (-1,))), tuple(flat.shape))
    return xp.where(xp.broadcast_to(ok, tuple(flat.shape)), out, _missing(xp, x.dtype, _device(x)))


def scatter_add(xp, index, values, length):
    """out[..., i] = sum of values[..., j] over j with index[..., j] = i, out of shape
    (..., length).

    The array API has no scatter-add, so this sorts the (row, index) keys, sums each
    run of equal keys with a segmented Hillis-Steele scan (only equal keys are ever
    added, so no cancellation) and reads the last element of each run.  A value whose
    index is out of range lands nowhere: its key is -1, below every row's.
    """
    target = _broadcast_shapes(tuple(index.shape[:-1]), tuple(values.shape[:-1]))
    n = values.shape[-1]
    dev = _device(values)
    values = xp.broadcast_to(values, target + (n,))
    index = xp.astype(index, default_index_dtype(xp), copy=False)
    keys = _row_offsets(xp, target, target, length, dev) + index
    keys = xp.where(in_range(xp, index, length), keys, xp.full((), -1, dtype=keys.dtype, device=dev))
    keys = xp.reshape(xp.broadcast_to(keys, target + (n,)), (-1,))
    vals = xp.reshape(values, (-1,))
    order = xp.argsort(keys, stable=True)
    keys, vals = xp.take(keys, order), xp.take(vals, order)
    if keys.shape[0] == 0:
        return xp.zeros(target + (length,), dtype=vals.dtype, device=dev)
    shift = 1
    while shift < n:  # one run lies inside one row, so it is at most n long
        pad_k = xp.full((shift,), -1, dtype=keys.dtype, device=dev)
        pad_v = xp.zeros((shift,), dtype=vals.dtype, device=dev)
        same = xp.concat([pad_k, keys[:-shift]]) == keys
        vals = vals + xp.where(same, xp.concat([pad_v, vals[:-shift]]), pad_v[:1])
        shift *= 2
    wanted = xp.arange(math.prod(target) * length, dtype=keys.dtype, device=dev)
    last = xp.searchsorted(keys, wanted, side="right") - 1
    safe = xp.where(last >= 0, last, xp.zeros_like(last))
    present = (last >= 0) & (xp.take(keys, safe) == wanted)
    out = xp.where(present, xp.take(vals, safe), xp.zeros((), dtype=vals.dtype, device=dev))
    return xp.reshape(out, target + (length,))


def bad_steps(xp, index, length):
    """True, shape (..., 1), for each map (..., N) that sends a lane out of range."""
    return xp.any(~in_range(xp, index, length), axis=-1, keepdims=True)


def poison(xp, values, where):
    """``values`` with NaN wherever ``where`` holds (broadcast)."""
    return xp.where(where, _missing(xp, values.dtype, _device(values)), values)


def steps(xp, index, d, b, mode) -> Affine:
    """The steps of a scan as affine elements, index (..., L, N) signed.

    A step whose map sends a lane out of range (``check_index=False``) becomes
    x -> NaN (identity map, d and b NaN): its state is NaN throughout whatever came
    before, as in every backend's kernels, and its index is never dereferenced.
    Every element, and so every product of them, then has a map in range.
    """
    n = index.shape[-1]
    bad = bad_steps(xp, index, n)
    lanes = xp.arange(n, dtype=index.dtype, device=_device(index))
    return Affine(xp.where(bad, lanes, index), poison(xp, d, bad), poison(xp, b, bad), check_mode(mode))


def apply(xp, index, d, x, mode):
    """A x for the transform (index, d) in ``mode``."""
    if check_mode(mode) == "gather":
        return d * gather(xp, x, index)
    return scatter_add(xp, index, d * x, x.shape[-1])


def compose(xp, later, earlier, mode):
    """The transform ``later @ earlier`` (apply earlier first), each an (index, d) pair."""
    (i2, d2), (i1, d1) = later, earlier
    if check_mode(mode) == "scatter":
        return gather(xp, i2, i1), gather(xp, d2, i1) * d1
    return gather(xp, i1, i2), d2 * gather(xp, d1, i2)


def combine(xp, later: Affine, earlier: Affine) -> Affine:
    """The affine element ``later o earlier``: x -> A2 (A1 x + b1) + b2."""
    index, d = compose(xp, (later.index, later.d), (earlier.index, earlier.d), later.mode)
    b = apply(xp, later.index, later.d, earlier.b, later.mode) + later.b
    return Affine(index, d, b, later.mode)


def identity(xp, shape, dtype, mode, *, index_dtype=None, device=None) -> Affine:
    """The identity element of shape (..., N): index = arange(N), d = 1, b = 0."""
    n = shape[-1]
    dtype_of_index = default_index_dtype(xp) if index_dtype is None else index_dtype
    index = xp.broadcast_to(xp.arange(n, dtype=dtype_of_index, device=device), tuple(shape))
    d = xp.ones(tuple(shape), dtype=dtype, device=device)
    return Affine(index, d, xp.zeros(tuple(shape), dtype=dtype, device=device), check_mode(mode))


def transpose(element: Affine) -> Affine:
    """A^T as a transform: the same index and values read in the other mode."""
    return Affine(element.index, element.d, element.b, transpose_mode(element.mode))


def select_maps(xp, maps, selector):
    """index[..., t, :] = maps[..., selector[..., t], :] (the dictionary form)."""
    n = maps.shape[-1]
    k = maps.shape[-2]
    flat_maps = xp.reshape(maps, tuple(maps.shape[:-2]) + (k * n,))
    cols = xp.arange(n, dtype=default_index_dtype(xp), device=_device(maps))
    positions = xp.astype(selector, default_index_dtype(xp))[..., None] * n + cols
    # gather along the K*N axis, with time as an extra batch axis of the maps
    return gather(xp, flat_maps[..., None, :], positions)


def _time_slice(a, start, stop):
    return a[..., start:stop, :]


def _combine_along_time(xp, elems: Affine, later_slice, earlier_slice) -> Affine:
    later = Affine(*(_time_slice(a, *later_slice) for a in elems[:3]), elems.mode)
    earlier = Affine(*(_time_slice(a, *earlier_slice) for a in elems[:3]), elems.mode)
    return combine(xp, later, earlier)


def associative_scan(xp, elems: Affine, *, reverse=False) -> Affine:
    """Inclusive scan of affine elements along the time axis (axis -2).

    Forward: out[t] = e[t] o e[t-1] o ... o e[0].  Reverse: out[t] = e[t] o ... o e[L-1].
    Hillis-Steele doubling: log2(L) rounds of ``combine``, a tree order of products,
    so it checks the sequential backends through a different association.
    """
    length = elems.d.shape[-2]
    shift = 1
    while shift < length:
        if not reverse:  # positions t >= shift take e[t] o e[t - shift]
            head = [_time_slice(a, 0, shift) for a in elems[:3]]
            body = _combine_along_time(xp, elems, (shift, length), (0, length - shift))
            elems = Affine(*(xp.concat([h, m], axis=-2) for h, m in zip(head, body[:3])), elems.mode)
        else:  # positions t < L - shift take e[t] o e[t + shift]
            tail = [_time_slice(a, length - shift, length) for a in elems[:3]]
            body = _combine_along_time(xp, elems, (0, length - shift), (shift, length))
            elems = Affine(*(xp.concat([m, t], axis=-2) for m, t in zip(body[:3], tail)), elems.mode)
        shift *= 2
    return elems


def reduce(xp, elems: Affine, *, reverse=False) -> Affine:
    """One affine element equal to the whole sequence along axis -2 (the time axis is
    dropped): e[L-1] o ... o e[0], or e[0] o ... o e[L-1] with ``reverse``.

    Pairwise tree reduction: O(L) combines in log2(L) rounds.
    """
    length = elems.d.shape[-2]
    if length == 0:
        raise ValueError("reduce: the sequence is empty (L = 0) and has no element to return")
    while length > 1:
        half = length // 2
        first = Affine(*(a[..., 0 : 2 * half : 2, :] for a in elems[:3]), elems.mode)
        second = Affine(*(a[..., 1 : 2 * half : 2, :] for a in elems[:3]), elems.mode)
        pairs = combine(xp, first, second) if reverse else combine(xp, second, first)
        if length % 2:
            pairs = Affine(
                *(xp.concat([p, a[..., length - 1 :, :]], axis=-2) for p, a in zip(pairs[:3], elems[:3])),
                elems.mode,
            )
        elems, length = pairs, half + length % 2
    return Affine(*(a[..., 0, :] for a in elems[:3]), elems.mode)
