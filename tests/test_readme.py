"""The README's usage example runs as written."""

import pathlib
import re

import numpy as np


def test_readme_example_runs():
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["x"].shape == (4, 1024, 64)
    assert np.isfinite(scope["x"]).all()
    assert scope["total"].d.shape == (4, 64)
