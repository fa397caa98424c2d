"""Which array library an input comes from, without importing any library.

array-api-compat's ``is_*_array`` helpers look at ``sys.modules`` only, so asking
"is this a torch tensor?" never imports torch.  Everything in the core goes
through these few functions.
"""

from __future__ import annotations

import sys

import array_api_compat as aac

#: library names in the order they are probed; "array_api" is any other namespace
LIBRARIES = ("numpy", "cupy", "torch", "jax", "array_api")


#: library_of and namespace by the arrays' types, which decide both: the probes of
#: array-api-compat cost microseconds each, and every call asks for several arrays
_LIBRARY_OF_TYPE: dict = {}
_NAMESPACE_OF_TYPES: dict = {}


def library_of(x) -> str:
    """The name of the array library that ``x`` belongs to (see ``LIBRARIES``)."""
    kind = type(x)
    library = _LIBRARY_OF_TYPE.get(kind)
    if library is None:
        library = _LIBRARY_OF_TYPE[kind] = _probe_library(x)
    return library


def _probe_library(x) -> str:
    if aac.is_numpy_array(x):
        return "numpy"
    if aac.is_cupy_array(x):
        return "cupy"
    if aac.is_torch_array(x):
        return "torch"
    if aac.is_jax_array(x):
        return "jax"
    if aac.is_array_api_obj(x):
        return "array_api"
    raise TypeError(f"expected an array, got {type(x).__name__}")


def common_library(named: dict) -> str:
    """The one library shared by all non-None arrays in ``named`` (name -> array).

    Mixing libraries is a TypeError naming the arguments: pdscan never converts
    between libraries (or devices) behind the user's back.
    """
    libs = {}
    for name, x in named.items():
        if x is None:
            continue
        try:
            libs[name] = library_of(x)
        except TypeError:
            raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from None
    kinds = set(libs.values())
    if len(kinds) > 1:
        detail = ", ".join(f"{n} is {lib}" for n, lib in libs.items())
        raise TypeError(f"arrays from different libraries cannot be mixed ({detail})")
    return kinds.pop()


def namespace(*arrays):
    """The array-API namespace of the arrays (compat-wrapped for numpy, cupy, torch)."""
    arrays = [a for a in arrays if a is not None]
    kinds = tuple(type(a) for a in arrays)
    xp = _NAMESPACE_OF_TYPES.get(kinds)
    if xp is None:
        xp = _NAMESPACE_OF_TYPES[kinds] = aac.array_namespace(*arrays)
    return xp


def device(x):
    return aac.device(x)


def is_traced(x) -> bool:
    """True for an abstract value inside a JAX transformation (jit, grad, vmap):
    it has no values to check and no device to report."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.core.Tracer)


def _torch_values_hidden(x) -> bool:
    """True while torch traces (torch.compile's fake tensors have no values) or
    captures a CUDA graph (reading a value back would synchronise)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor):
        return False
    if torch.compiler.is_compiling():
        return True
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def concrete_bool(x):
    """bool(x), or None where x has no value to read: under a JAX transformation
    (where even an operation on a concrete array is abstract), while torch.compile
    traces, or during CUDA graph capture."""
    if _torch_values_hidden(x):
        return None
    jax = sys.modules.get("jax")
    if jax is None:
        return bool(x)
    try:
        return bool(x)
    except jax.errors.ConcretizationTypeError:
        return None
