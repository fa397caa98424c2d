"""The examples run and check themselves."""

import pathlib
import runpy

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parents[1] / "examples").glob("*.py"))
# state_tracking trains for minutes and takes arguments, state_tracking_probe reads its
# saved weights; their smoke tests are in tests/test_state_tracking_smoke.py
CPU_EXAMPLES = [p for p in EXAMPLES if "gpu" not in p.stem and not p.stem.startswith("state_tracking")]


@pytest.mark.parametrize("path", CPU_EXAMPLES, ids=[p.stem for p in CPU_EXAMPLES])
def test_example_runs(path):
    runpy.run_path(str(path), run_name="__main__")
