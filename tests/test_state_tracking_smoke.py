"""examples/state_tracking.py in miniature: a tiny PD-SSM learns parity on short
sequences within a few seconds, with either framework (the full runs and their
results are in docs/state_tracking.md)."""

import math
import pathlib
import runpy

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "state_tracking.py"
# one length only, so that JAX compiles the training step once
TINY = dict(layers=1, d_model=16, state_size=4, dict_size=3, steps=150, lr=1e-2, batch=32, train_min=4,
            train_max=4, curriculum=0.0, test_lengths=(4,), test_size=256)


@pytest.fixture(scope="module")
def example():
    return runpy.run_path(str(EXAMPLE))


def test_task_labels(example):
    rng = np.random.default_rng(0)
    x, y = example["batch"]("modular", rng, 4, 6)
    assert x.shape == (4, 6) and (x[:, 0] == 8).all()  # BOS, then an odd-length expression (5 tokens)
    # 1 + 2 * 3 = 2, 1 - 1 - 1 = 4, 0 * 1 + 4 * 3 - 2 = 0 (mod 5): '+' 5, '-' 6, '*' 7
    exprs = np.array([[1, 5, 2, 7, 3, 5, 0], [1, 6, 1, 6, 1, 5, 0], [0, 7, 1, 5, 4, 7, 3]])
    np.testing.assert_array_equal(example["_modular"](exprs), [2, 4, 2])
    np.testing.assert_array_equal(example["_modular"](np.array([[0, 7, 1, 5, 4, 7, 3, 6, 2]])), [0])
    perms = example["_a5"]()[0]  # A5: an element times its inverse is the identity, element 0
    assert len(perms) == 60 and perms[0] == (0, 1, 2, 3, 4)
    inverse = [perms.index(tuple(np.argsort(p))) for p in perms]
    tokens = np.array([[g, inverse[g]] for g in range(60)])
    np.testing.assert_array_equal(example["_a5_product"](tokens)[:, -1], np.zeros(60))


def test_a5_generator_words(example):
    """a5_gen: the two tokens are a 3-cycle and a 5-cycle; the labels are the products of
    the words' permutations, composed here directly, and reach every element of A5."""
    perms = example["_a5"]()[0]
    gens = [perms[g] for g in example["_A5_GENERATORS"]]
    moved = sorted(sum(p[i] != i for i in range(5)) for p in gens)
    assert moved == [3, 5]
    rng = np.random.default_rng(1)
    x, y = example["batch"]("a5_gen", rng, 2000, 12)
    assert x.shape == (2000, 13) and (x[:, 0] == 2).all() and y.shape == (2000, 12)
    for word, labels in zip(x[:50, 1:], y[:50]):
        state = tuple(range(5))
        for t, token in enumerate(word):
            g = gens[token]
            state = tuple(g[state[i]] for i in range(5))  # the new element applied last
            assert perms[labels[t]] == state
    assert len(np.unique(y[:, -1])) == 60  # the two generate the whole group


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_parity_loss_falls_and_accuracy_beats_chance(example, framework):
    pytest.importorskip(framework)
    if framework == "torch":
        import torch

        torch.set_num_threads(1)
    r = example["run"]("parity", framework, log=lambda s: None, **TINY)
    losses = r["losses"]
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])
    assert r["test_accuracy"][4] > 0.8  # chance is 0.5


@pytest.mark.parametrize("task", ["parity", "modular"])
def test_jax_padding_changes_nothing(task, monkeypatch):
    """The JAX training pads each batch to a multiple of PAD_TO steps (one compilation
    per padded shape): the losses equal those of unpadded batches (PAD_TO = 1), for a
    task labelled at the last step and one labelled at every prefix, lengths 3 to 12."""
    pytest.importorskip("jax")
    example = runpy.run_path(str(EXAMPLE))
    assert example["_padded"](np.zeros((2, 5), np.int64), np.zeros((2, 4), np.int64))[1].shape == (2, 7)
    cfg = dict(TINY, heads=2, steps=12, train_min=3, train_max=12, curriculum=0.0, test_size=16)
    runs = {}
    for pad_to in (1, 8):
        monkeypatch.setitem(example["_padded"].__globals__, "PAD_TO", pad_to)
        runs[pad_to] = example["run"](task, "jax", log=lambda s: None, **cfg)["losses"]
    np.testing.assert_allclose(runs[8], runs[1], rtol=1e-5)

@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_saved_weights_reload_and_probe(framework, tmp_path):
    """``--save`` writes weights that state_tracking_probe.py loads into the torch model
    (from either framework) and that reproduce the run's test accuracy; the edits of D_t
    and b_t reach every layer and leave the loaded model as it was."""
    pytest.importorskip(framework)
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    probe = runpy.run_path(str(EXAMPLE.with_name("state_tracking_probe.py")))
    example = probe["EXAMPLE"]
    path = tmp_path / "weights.npz"
    tiny = dict(TINY, layers=2, heads=2, steps=40, zeroed=(), frozen=())  # B trained, so that "b 0" shows
    r = example["run"]("parity", framework, log=lambda s: None, save=str(path), **tiny)
    model, cfg = probe["load"](path)
    assert cfg["task"] == "parity" and cfg["framework"] == framework and cfg["layers"] == 2
    acc = probe["accuracy"](model, cfg, [4], tiny["test_size"])
    # the same test sequences; JAX's float32 rounding may turn over a near-tie, torch's may not
    assert abs(acc[4] - r["test_accuracy"][4]) <= (0 if framework == "torch" else 2 / tiny["test_size"])

    rows = probe["token_table"](model)
    assert len(rows) == (2 + 1) * 2  # two bits and BOS, two heads
    assert all(0 < row["mag_min"] <= row["mag_mean"] < 1 and 0 <= row["phase_mean"] <= math.pi for row in rows)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name, parts in probe["EDITS"].items():
        edited = probe["edited"](model, parts)
        for layer in edited.layers:
            u = torch.randn(5, tiny["d_model"])
            with torch.no_grad():
                d = torch.sigmoid(torch.einsum("ld,hnd->hln", u, layer.mag_w) + layer.mag_b[:, None])
                phase = torch.sigmoid(torch.einsum("ld,hnd->hln", u, layer.phase_w) + layer.phase_b[:, None])
            assert ("magnitude" in parts) == bool((d == 1).all()), name
            assert ("phase" in parts) == bool((phase < 1e-15).all()), name
            assert ("b" in parts) == bool((layer.B_re == 0).all() and (layer.B_im == 0).all()), name
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
