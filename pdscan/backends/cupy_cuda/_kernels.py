"""Kernel sources, template instantiation names and the compiled-kernel cache.

The kernels are templates over (value type, index width, kind/mode, maps form,
lanes per thread E, and for the scan whether it writes a chunk summary).  Each one
a call needs is compiled once by NVRTC through ``cupy.RawModule`` with its
template name as a name expression; CuPy keeps the binary in its on-disk kernel
cache, keyed by the source text, so the header is inlined into the source (an
edit to it changes the key).  This module imports CuPy only when compiling, so the
CI compile test can use the names and the source without it.
"""

from __future__ import annotations

import functools
import itertools
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ("pdscan_kernels.cu", "pdscan_pipe.cu", "pdscan_vjp.cu", "pdscan_ste.cu")
VALUE_TYPES = {
    "float32": "float",
    "float64": "double",
    "complex64": "pd::complex_t<float>",
    "complex128": "pd::complex_t<double>",
}
INDEX_WIDTHS = (1, 2, 4, 8)
KINDS = {"scatter": 0, "gather": 1}
LANES_PER_THREAD = (1, 2, 4, 16)  # E: see lanes_per_thread()
TEAM_THREADS = {1: 32, 2: 32, 4: 256, 16: 256}
MAX_N = 16 * 256

# run-time flags, as in pdscan_common.cuh
F_REVERSE, F_PRE_ADD, F_CONJ, F_DETERMINISTIC, F_SIGNED_INDEX, F_FOLD_CHAIN = 1, 2, 4, 8, 16, 32


def lanes_per_thread(n: int) -> int:
    """E, the state lanes each thread owns: one warp up to N = 64, then up to 256 threads."""
    if n <= 32:
        return 1
    if n <= 64:
        return 2
    if n <= 1024:
        return 4
    if n <= MAX_N:
        return 16
    raise ValueError(f"the CUDA backend takes N up to {MAX_N}, got N = {n}")


def team_size(n: int) -> int:
    """Threads per team: enough warps to give every lane an owner."""
    e = lanes_per_thread(n)
    threads = -(-n // e)
    return min(TEAM_THREADS[e], -(-threads // 32) * 32)


def scan_name(value: str, index_width: int, kind: str, maps: bool, e: int, track: bool) -> str:
    return (f"pd::pd_scan<{VALUE_TYPES[value]}, {index_width}, {KINDS[kind]}, "
            f"{'true' if maps else 'false'}, {e}, {'true' if track else 'false'}>")


def vjp_name(value: str, index_width: int, mode: str, maps: bool, e: int) -> str:
    return (f"pd::pd_vjp<{VALUE_TYPES[value]}, {index_width}, {KINDS[mode]}, "
            f"{'true' if maps else 'false'}, {e}>")


def vjp_elementwise_names(value: str, index_width: int, mode: str, maps: bool) -> tuple[str, str]:
    """The VJP's element-wise part after the pipelined scan of its carry: grad_d of
    every step (gather mode), and the first step's grad_d and grad_x0."""
    args = f"{VALUE_TYPES[value]}, {index_width}, {KINDS[mode]}, {'true' if maps else 'false'}"
    return f"pd::pd_vjp_grad_d<{args}>", f"pd::pd_vjp_first_step<{args}>"


#: -DNAME=VALUE flags for NVRTC (kernel variants for experiments), as NAME: VALUE
DEFINES = dict((flag.split("=", 1) + ["1"])[:2] for flag in os.environ.get("PDSCAN_CUDA_DEFINES", "").split(",")
               if flag)

#: The pipelined forward (pdscan_pipe.cu): CW consumer warps whose threads own E lanes
#: each (N <= 32 CW E), the shapes compiled (CW E <= 4, so N <= 128), and the ring of
#: tiles that its producer warps fill
PIPE_SHAPES = ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (4, 1))
PIPE_MAX_N = 128
#: the pipelined scan's kinds: gather mode exchanges the state at every step, as
#: scatter mode does; its chunk summaries may instead follow each lane's path back
#: through its chunk ("chase", pdscan_pipe_chase.cuh: summaries only)
PIPE_KINDS = {"scatter": 0, "gather": 1, "chase": 2}
PIPE_SCATTER_PLANES = 8  # RCAP in pdscan_pipe_producer.cuh: a row's sources exchanged at fixed places


def pipe_shape(n: int, consumer_warps: int | None = None) -> tuple[int, int]:
    """(CW, E) of the pipelined forward for N = n <= PIPE_MAX_N: CW consumer warps, E
    lanes a thread, the fewest that cover N.  By default one warp up to N = 32 and two
    beyond (measured on the H200: two warps took 7 to 13 % off the scatter forward at
    N = 64 and 128 and cost 17 % at N = 32; four were slower; docs/benchmarks.md)."""
    cw = consumer_warps or (1 if n <= 32 else 2)
    for c, e in PIPE_SHAPES:
        if c == cw and 32 * c * e >= n:
            return c, e
    raise ValueError(f"no pipelined shape with {cw} consumer warps for N = {n}")


def pipe_threads(cw: int) -> int:
    return 32 * (cw + PIPE_PRODUCERS)


def pipe_name(value: str, index_width: int, kind: str, maps: bool, e: int, cw: int, track: bool,
              grad_d: bool = False) -> str:
    """The pipelined scan (producer and consumer warps per sequence or chunk); with
    ``grad_d``, the carry of a VJP that writes grad_d too."""
    return (f"pd::pd_scan_pipe<{VALUE_TYPES[value]}, {index_width}, {PIPE_KINDS[kind]}, "
            f"{'true' if maps else 'false'}, {e}, {cw}, {'true' if track else 'false'}, "
            f"{'true' if grad_d else 'false'}>")


#: (i, j) pairs of the dictionary gradient each thread of pd_dict_grad_q sums
DICT_GRAD_Q_PER_THREAD = 4
#: its block size (DICT_GRAD_Q_THREADS in pdscan_ste.cu)
DICT_GRAD_Q_THREADS = 256


def dict_grad_names(value: str) -> tuple[str, str]:
    """The straight-through dictionary form's contractions (grad_w, grad_q)."""
    return (f"pd::pd_dict_grad_w<{VALUE_TYPES[value]}>",
            f"pd::pd_dict_grad_q<{VALUE_TYPES[value]}, {DICT_GRAD_Q_PER_THREAD}>")


def all_names(*, every_e: bool = False):
    """The instantiations the launcher can ask for.  With ``every_e=False`` (what CI
    compiles): every value type x index width x mode for the scan and the VJP at
    E = 2 and for the VJP's element-wise half; the summary and dictionary variants
    with int32 words for every value type; every E for complex64 / int32 (the axes
    are independent of one another); the straight-through contractions for every
    value type."""
    names = set()
    default_pipe_shapes = {pipe_shape(n) for n in (32, 64, 128)}
    for value, width, kind, maps, track in itertools.product(
            VALUE_TYPES, INDEX_WIDTHS, KINDS, (False, True), (False, True)):
        if maps and width != 4:
            continue  # the dictionary form always reads int32 selectors
        for e in LANES_PER_THREAD:
            wanted = every_e or (value == "complex64" and width == 4) or (
                e == 2 and ((not maps and not track) or width == 4))
            if wanted:
                names.add(scan_name(value, width, kind, maps, e, track))
                for cw, pe in PIPE_SHAPES:
                    # every shape for complex64 / int32; elsewhere the defaults' shapes
                    if pe == e and (every_e or (value == "complex64" and width == 4)
                                    or (cw, pe) in default_pipe_shapes):
                        names.add(pipe_name(value, width, kind, maps, e, cw, track))
                        if track and kind == "gather":  # the summaries by paths
                            names.add(pipe_name(value, width, "chase", maps, e, cw, track))
                        if not track:  # the VJP's carry, writing grad_d
                            names.add(pipe_name(value, width, kind, maps, e, cw, track, grad_d=True))
                if not track:
                    names.add(vjp_name(value, width, kind, maps, e))
        if not track:
            names.update(vjp_elementwise_names(value, width, kind, maps))
    for value in VALUE_TYPES:
        names.update(dict_grad_names(value))
    return sorted(names)


HEADERS = ("pdscan_common.cuh", "pdscan_pipe_producer.cuh", "pdscan_pipe_planes.cuh",
           "pdscan_pipe_chase.cuh")  # in include order


def source() -> str:
    """The kernels' translation unit with the headers inlined (NVRTC gets one string)."""
    def body(name):
        text = (HERE / name).read_text().replace("#pragma once", "")
        for header in HEADERS:
            text = text.replace(f'#include "{header}"', "")
        return text

    # a source directory of an older build (``use_sources``) may lack a later file:
    # its kernels are then missing from the module, and asking for one fails there
    return "\n".join(body(name) for name in HEADERS + SOURCES if (HERE / name).exists())


def _read_defines():
    """What follows from DEFINES: the NVRTC options and the pipelined scan's ring (the
    defaults of pdscan_pipe.cu where a define is absent)."""
    global NVRTC_OPTIONS, PIPE_STAGES, PIPE_PRODUCERS
    NVRTC_OPTIONS = ("--std=c++17",) + tuple(f"-D{name}={value}" for name, value in DEFINES.items()) + (
        ("-lineinfo",) if os.environ.get("PDSCAN_CUDA_LINEINFO", "0") not in ("", "0") else ())  # compute-sanitizer
    PIPE_STAGES = int(DEFINES.get("PD_PIPE_STAGES", 6))
    PIPE_PRODUCERS = int(DEFINES.get("PD_PIPE_PRODUCERS", 3))


_read_defines()


def set_defines(defines: dict[str, str]) -> None:
    """Compile the kernels from now on with these -D defines instead of
    PDSCAN_CUDA_DEFINES' (tuning runs compare variants in one process)."""
    DEFINES.clear()
    DEFINES.update(defines)
    _read_defines()
    _compiled.cache_clear()


def use_sources(directory) -> None:
    """Compile the kernels from now on from the .cu/.cuh files in ``directory``
    instead of this package's (A/B runs compare kernel builds in one process)."""
    global HERE
    HERE = Path(directory).resolve()
    _compiled.cache_clear()


def kernel(name: str):
    """The compiled kernel ``name`` (a template instantiation) on the current device."""
    import cupy

    return _compiled(name, cupy.cuda.runtime.getDevice())


@functools.lru_cache(maxsize=None)
def _compiled(name: str, device_id: int):
    import cupy

    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=source(), options=NVRTC_OPTIONS, name_expressions=[name])
        return module.get_function(name)
