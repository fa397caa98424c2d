"""CI without a GPU: every kernel instantiation the CUDA backend can launch must
compile with nvcc for sm_80 and sm_90 (skipped only when nvcc is missing).

One generated translation unit per architecture, the kernels' source as NVRTC gets
it (``_kernels.source()``: the headers inlined, in their order), takes the address of
every instantiation (which makes nvcc instantiate and compile each).  ptxas runs at
-O0 to keep the test short on two cores; a kernel that does not
compile fails the same way at any level.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from pdscan.backends.cupy_cuda import _kernels

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")


def translation_unit(names):
    table = ",\n  ".join(f"(const void*)&{name}" for name in names)
    return f"{_kernels.source()}\nconst void* pdscan_every_kernel[] = {{\n  {table}\n}};\n"


def compile_for(arch, source_path, tmp_path):
    cmd = [NVCC, f"-arch={arch}", "--std=c++17", "-Xptxas", "-O0", "-c", str(source_path), "-o",
           str(tmp_path / f"{arch}.o")]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_the_names_cover_every_dtype_index_and_mode():
    names = _kernels.all_names()
    for value in _kernels.VALUE_TYPES.values():
        for width in _kernels.INDEX_WIDTHS:
            for kind in (0, 1):
                assert f"pd::pd_scan<{value}, {width}, {kind}, false, 2, false>" in names
                assert f"pd::pd_vjp<{value}, {width}, {kind}, false, 2>" in names
    for e in _kernels.LANES_PER_THREAD:
        assert f"pd::pd_scan<pd::complex_t<float>, 4, 0, true, {e}, true>" in names


def test_every_kernel_compiles(tmp_path):
    source_path = tmp_path / "every_kernel.cu"
    source_path.write_text(translation_unit(_kernels.all_names()))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda arch: (arch, compile_for(arch, source_path, tmp_path)),
                                ["sm_80", "sm_90"]))
    for arch, proc in results:
        assert proc.returncode == 0, f"{arch}:\n{proc.stderr[-4000:]}"
