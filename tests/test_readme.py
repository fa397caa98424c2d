"""The README's usage example runs as written."""

import pathlib
import re

import numpy as np
import pytest

import pdscan


def test_readme_example_runs():
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["x"].shape == (4, 1024, 64)
    assert np.isfinite(scope["x"]).all()
    assert scope["total"].d.shape == (4, 64)
    # the VJP is given the output of the scan it differentiates
    index, d, b = (scope[k] for k in ("index", "d", "b"))
    x = pdscan.scan(index, d, b, backend="numpy")
    want = pdscan.scan_vjp(index, d, b, None, x, np.ones_like(x), backend="numpy")
    np.testing.assert_allclose(scope["grad_d"], want[0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scope["grad_b"], want[1], rtol=1e-3, atol=1e-3)


def test_layers_doc_example_runs():
    """docs/layers.md's example: both frameworks' layers, and parameters moved between them."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    text = (pathlib.Path(__file__).parents[1] / "docs" / "layers.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, "docs/layers.md", "exec"), scope)
    assert scope["y"].shape == (8, 100, 64)
    torch_y = scope["torch_layer"](scope["u"]).detach().numpy()
    np.testing.assert_allclose(np.asarray(scope["layer"].apply(scope["params"], scope["u"].numpy())), torch_y,
                               rtol=1e-4, atol=1e-4)
