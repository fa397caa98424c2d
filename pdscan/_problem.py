"""Input checking and normalisation: every entry point goes through ``prepare``.

A backend never sees raw user input: it gets a ``ScanProblem`` whose arrays are
broadcast (as views) to one batch shape, whose values share one dtype, and whose
index values are known to be in range (unless the caller opted out, in which case
kernels must still be bounds-safe).  All errors are raised here, before any work,
and name the argument and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from array_api_compat import is_torch_namespace

from . import monoid
from ._namespace import common_library, concrete_bool, is_traced, namespace, device as _device

VALUE_DTYPES = ("float32", "float64", "complex64", "complex128")


@dataclass(frozen=True)
class ScanProblem:
    """A checked scan: arrays broadcast to ``batch_shape`` and cast to ``dtype``.

    index: batch + (L, N), or batch + (L,) selectors into ``maps`` (batch + (K, N)).
    d, b:  batch + (L, N).      x0: batch + (N,) or None (zeros).
    """

    library: str
    xp: object
    index: object
    maps: object
    d: object
    b: object
    x0: object
    mode: str
    reverse: bool
    batch_shape: tuple
    L: int
    N: int
    K: int
    dtype: object

    @property
    def S(self) -> int:
        """The number of independent sequences (the flattened batch)."""
        return math.prod(self.batch_shape)

    @property
    def empty(self) -> bool:
        return self.S == 0 or self.L == 0 or self.N == 0

    def time_order(self) -> range:
        """The steps in the order the recurrence visits them."""
        return range(self.L - 1, -1, -1) if self.reverse else range(self.L)

    def flat(self, name):
        """The array ``name`` with the batch dimensions flattened into one axis of
        length S (a view when the layout allows; broadcast inputs are copied)."""
        a = getattr(self, name)
        if a is None:
            return None
        tail = tuple(a.shape[len(self.batch_shape) :])
        return self.xp.reshape(a, (self.S,) + tail)

    def replace(self, **changes) -> "ScanProblem":
        return ScanProblem(**{**self.__dict__, **changes})


def _dtype_name(xp, dtype) -> str | None:
    for name in VALUE_DTYPES:
        if dtype == getattr(xp, name):
            return name
    return None


def _shape(a):
    return tuple(a.shape)


def _broadcast_batch(batches: dict):
    try:
        return monoid._broadcast_shapes(*batches.values())
    except ValueError:
        detail = ", ".join(f"{n} {s}" for n, s in batches.items())
        raise ValueError(f"the leading (batch) dimensions do not broadcast: {detail}") from None


def _first_bad(xp, bad, name, shape, low, high, got, unsigned=False):
    """Raise naming the first position where ``bad`` holds (only on the error path)."""
    flat = xp.reshape(xp.astype(bad, xp.int8), (-1,))
    pos = int(xp.argmax(flat))
    where = []
    for size in reversed(shape):
        where.append(pos % size)
        pos //= size
    where = tuple(reversed(where))
    value = int(got[where])
    if value < 0 and unsigned:  # a uint64 read as int64 (``_comparable``)
        value += 2**64
    raise ValueError(f"{name}: values must lie in [{low}, {high}); {name}[{', '.join(map(str, where))}] = {value}")


def check_range(xp, a, name, high):
    """Raise if any value of the integer array ``a`` is outside [0, high).  Traced
    values (inside jax.jit) cannot be checked: the kernels stay bounds-safe."""
    if math.prod(a.shape) == 0 or is_traced(a):
        return
    c = _comparable(xp, a)
    too_high = concrete_bool(xp.max(c) >= high)
    if too_high is None:  # abstract under jax.jit: nothing to check
        return
    too_low = not xp.isdtype(c.dtype, "unsigned integer") and concrete_bool(xp.min(c) < 0)
    if too_low or too_high:
        _first_bad(xp, (c < 0) | (c >= high), name, _shape(a), 0, high, c,
                   unsigned=xp.isdtype(a.dtype, "unsigned integer"))


def _comparable(xp, a):
    """``a`` in a dtype that its library can compare and reduce: torch implements few
    operations for uint16 to uint64, so those are read as int64 (a uint64 value of
    2^63 or more turns negative, out of range all the same)."""
    wide_unsigned = xp.isdtype(a.dtype, "unsigned integer") and a.dtype != xp.uint8
    return xp.astype(a, xp.int64) if wide_unsigned and is_torch_namespace(xp) else a


def integer_dtype_error(name, dtype) -> TypeError:
    return TypeError(f"{name}: expected an integer dtype (int8 to int64, uint8 to uint64), got {dtype}")


def value_dtype_error(name, dtype) -> TypeError:
    swapped = getattr(dtype, "byteorder", "=") in "<>"  # NumPy: only a non-native order shows
    order = " in the machine's byte order" if swapped else ""
    return TypeError(f"{name}: expected float32, float64, complex64 or complex128{order}, got {dtype}")


def check_flag(value, name):
    """Raise unless ``value`` is a Python bool: an option that picks code (and, under
    jax.jit, a static argument), where a truthy array or string is a mistake."""
    if not isinstance(value, bool):
        kind = type(value)
        where = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
        raise TypeError(f"{name}: expected a Python bool, got {where}{kind.__name__} {value!r}")


def check_positive(value, name):
    """Raise unless ``value`` is a finite positive Python number (not a bool): a
    hyperparameter such as the softmax temperature, static under jax.jit."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive number, got {value!r}")


def check_options(mode, reverse):
    """The scan's options that pick code (static arguments under jax.jit, plain
    Python values under torch.compile): ``mode`` and ``reverse``."""
    monoid.check_mode(mode)
    check_flag(reverse, "reverse")


def _check_integer(xp, a, name):
    if not xp.isdtype(a.dtype, "integral"):
        raise integer_dtype_error(name, a.dtype)


def _check_values(xp, a, name):
    if _dtype_name(xp, a.dtype) is None:
        raise value_dtype_error(name, a.dtype)


def _check_ndim(a, name, ndim, layout):
    if a.ndim < ndim:
        raise ValueError(f"{name}: expected shape {layout}, got {_shape(a)}")


def _check_map_sizes(maps, N, d):
    """The dictionary's shape (..., K, N)."""
    _check_ndim(maps, "maps", 2, f"(..., K, N) = (..., K, {N})")
    if _shape(maps)[-1] != N:
        raise ValueError(f"maps: expected shape (..., K, N) with N = {N} to match d {_shape(d)}, got {_shape(maps)}")


def check_sizes(index, d, b, x0, maps):
    """The scan's checks of L and N; returns (L, N).  Plain comparisons only (nothing
    hashes a size), so that sizes torch.compile made symbolic go through them too,
    each comparison a guard: a call whose sizes disagree traces again and raises."""
    _check_ndim(d, "d", 2, "(..., L, N)")
    _check_ndim(b, "b", 2, "(..., L, N)")
    L, N = _shape(d)[-2:]
    if _shape(b)[-2:] != (L, N):
        raise ValueError(f"b: expected shape (..., L, N) = (..., {L}, {N}) to match d {_shape(d)}, got {_shape(b)}")
    if maps is None:
        _check_ndim(index, "index", 2, f"(..., L, N) = (..., {L}, {N})")
        if _shape(index)[-2:] != (L, N):
            raise ValueError(
                f"index: expected shape (..., L, N) = (..., {L}, {N}) to match d {_shape(d)}, got {_shape(index)}"
            )
    else:
        _check_map_sizes(maps, N, d)
        _check_ndim(index, "index", 1, f"(..., L) = (..., {L}) when maps are given")
        if _shape(index)[-1] != L:
            raise ValueError(
                f"index: expected shape (..., L) = (..., {L}) when maps are given (d is {_shape(d)}), got {_shape(index)}"
            )
    if x0 is not None:
        _check_ndim(x0, "x0", 1, f"(..., N) = (..., {N})")
        if _shape(x0)[-1] != N:
            raise ValueError(f"x0: expected shape (..., N) = (..., {N}) to match d {_shape(d)}, got {_shape(x0)}")
    return L, N


def _check_index_values(xp, index, maps, N):
    """Index values in [0, N), or selectors in [0, K) and maps in [0, N)."""
    if maps is None:
        check_range(xp, index, "index", N)
    else:
        check_range(xp, index, "index", _shape(maps)[-2])
        check_range(xp, maps, "maps", N)


def prepare(index, d, b, x0=None, *, maps=None, mode="scatter", reverse=False, check_index=True,
            extra=None) -> ScanProblem:
    """Check the arguments of a scan and return the normalised ``ScanProblem``.

    ``extra`` maps more argument names to arrays that must come from the same
    library (for example x and grad_x of a VJP); they are only type-checked here.
    """
    check_options(mode, reverse)
    check_flag(check_index, "check_index")
    named = dict(index=index, d=d, b=b, x0=x0, maps=maps, **(extra or {}))
    library = common_library(named)
    xp = namespace(*named.values())

    _check_integer(xp, index, "index")
    _check_values(xp, d, "d")
    _check_values(xp, b, "b")
    if maps is not None:
        _check_integer(xp, maps, "maps")
    if x0 is not None:
        _check_values(xp, x0, "x0")
    L, N = check_sizes(index, d, b, x0, maps)
    K = 0 if maps is None else _shape(maps)[-2]
    batches = {"d": _shape(d)[:-2], "b": _shape(b)[:-2],
               "index": _shape(index)[:-2] if maps is None else _shape(index)[:-1]}
    if maps is not None:
        batches["maps"] = _shape(maps)[:-2]
    if x0 is not None:
        batches["x0"] = _shape(x0)[:-1]
    batch = _broadcast_batch(batches)

    # a traced JAX value reports no device; it is checked when it is concrete
    devices = {n: _device(a) for n, a in named.items() if a is not None and not is_traced(a)}
    if len({str(v) for v in devices.values()}) > 1:
        detail = ", ".join(f"{n} on {v}" for n, v in devices.items())
        raise ValueError(f"all arrays must be on one device ({detail})")

    try:
        dtype = xp.result_type(*(a.dtype for a in (d, b, x0) if a is not None))
    except Exception:  # noqa: BLE001 - the namespaces raise different types here
        raise TypeError(f"d, b and x0: dtypes {d.dtype}, {b.dtype} do not promote to a common type") from None

    if check_index:
        _check_index_values(xp, index, maps, N)

    def broadcast(a, tail):  # the array itself when it has the shape already (most calls)
        shape = batch + tail
        return a if _shape(a) == shape else xp.broadcast_to(a, shape)

    def cast(a, tail):
        return broadcast(a if a.dtype == dtype else xp.astype(a, dtype), tail)

    return ScanProblem(
        library=library,
        xp=xp,
        index=broadcast(index, (L,) if maps is not None else (L, N)),
        maps=None if maps is None else broadcast(maps, (K, N)),
        d=cast(d, (L, N)),
        b=cast(b, (L, N)),
        x0=None if x0 is None else cast(x0, (N,)),
        mode=mode,
        reverse=reverse,
        batch_shape=batch,
        L=L,
        N=N,
        K=K,
        dtype=dtype,
    )


def prepare_step(index, d, b, x, *, maps=None, mode="scatter", check_index=True) -> ScanProblem:
    """Check the arguments of one step (``pdscan.step``: index (..., N) or a selector
    (...), d, b, x (..., N)) under their own names, and return them as a scan of one
    step from x (L = 1, x as x0)."""
    monoid.check_mode(mode)
    check_flag(check_index, "check_index")
    if x is None:
        raise TypeError("x: expected an array of shape (..., N), got None")
    named = dict(index=index, d=d, b=b, x=x, maps=maps)
    common_library(named)
    xp = namespace(*named.values())
    _check_integer(xp, index, "index")
    for name in ("d", "b", "x"):
        _check_values(xp, named[name], name)
        _check_ndim(named[name], name, 1, "(..., N)")
    N = _shape(d)[-1]
    for name in ("b", "x"):
        if _shape(named[name])[-1] != N:
            raise ValueError(f"{name}: expected shape (..., N) = (..., {N}) to match d {_shape(d)}, "
                             f"got {_shape(named[name])}")
    batches = {"d": _shape(d)[:-1], "b": _shape(b)[:-1], "x": _shape(x)[:-1]}
    if maps is None:
        _check_ndim(index, "index", 1, f"(..., N) = (..., {N})")
        if _shape(index)[-1] != N:
            raise ValueError(f"index: expected shape (..., N) = (..., {N}) to match d {_shape(d)}, got {_shape(index)}")
        batches["index"] = _shape(index)[:-1]
    else:
        _check_integer(xp, maps, "maps")
        _check_map_sizes(maps, N, d)
        batches["index"] = _shape(index)
        batches["maps"] = _shape(maps)[:-2]
    _broadcast_batch(batches)
    if check_index:
        _check_index_values(xp, index, maps, N)
    lifted_index = index[..., None, :] if maps is None else index[..., None]
    return prepare(lifted_index, d[..., None, :], b[..., None, :], x, maps=maps, mode=mode, check_index=False)


def check_like_output(p: ScanProblem, a, name):
    """Check that ``a`` (x or grad_x of a VJP) has the scan's output shape; cast it."""
    want = p.batch_shape + (p.L, p.N)
    if a is None:
        raise TypeError(f"{name}: expected an array of the scan's output shape {want}, got None")
    _check_values(p.xp, a, name)
    if _shape(a) != want:
        raise ValueError(f"{name}: expected the scan's output shape {want}, got {_shape(a)}")
    return a if a.dtype == p.dtype else p.xp.astype(a, p.dtype)


def unbroadcast(xp, grad, like):
    """Sum ``grad`` over the dimensions that broadcasting added to ``like`` and cast it
    to ``like``'s dtype (the real part for a real input)."""
    shape = _shape(like)
    extra = grad.ndim - len(shape)
    if extra:
        grad = xp.sum(grad, axis=tuple(range(extra)))
    expanded = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if expanded:
        grad = xp.sum(grad, axis=expanded, keepdims=True)
    if not xp.isdtype(like.dtype, "complex floating") and xp.isdtype(grad.dtype, "complex floating"):
        grad = xp.real(grad)
    return grad if grad.dtype == like.dtype else xp.astype(grad, like.dtype)
