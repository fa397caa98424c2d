"""The GPU test runner's split (tests/run_gpu_shards.py): every collected test in
exactly one shard, in collection order, the CUDA file's in near-equal runs."""

from __future__ import annotations

import pytest

from run_gpu_shards import BIG_FILE, split


@pytest.mark.parametrize("big, other, shards", [(582, 9, 12), (5, 0, 12), (0, 4, 3), (13, 2, 1)])
def test_split_covers_every_test_once_in_order(big, other, shards):
    ids = [f"{BIG_FILE}::test_{i}" for i in range(big)]
    ids[big // 2:big // 2] = [f"tests/test_jax.py::test_{i}" for i in range(other)]  # another file among them
    runs = split(ids, shards)
    assert all(runs)
    assert sorted(sum(runs, [])) == sorted(ids)
    big_runs = [run for run in runs if run[0].startswith(BIG_FILE)]
    assert [i for run in big_runs for i in run] == [i for i in ids if i.startswith(BIG_FILE)]
    assert all(i.startswith(BIG_FILE) for run in big_runs for i in run)
    if big:
        assert len(big_runs) == min(big, shards)
        sizes = [len(run) for run in big_runs]
        assert max(sizes) - min(sizes) <= 1
    assert len(runs) - len(big_runs) == (1 if other else 0)
