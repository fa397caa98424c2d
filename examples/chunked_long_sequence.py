"""A long sequence split into chunks that are summarised independently.

Each chunk reduces to one affine map (pdscan.reduce); a short scan over those maps
gives every chunk's start state; each chunk is then scanned from its start state.
The chunks could live on different devices or workers: only O(N) per chunk moves.

    python examples/chunked_long_sequence.py
"""

import numpy as np

import pdscan


def chunked_scan(index, d, b, x0, chunk, mode="scatter"):
    L = d.shape[-2]
    starts = range(0, L, chunk)
    summaries = [pdscan.reduce(index[..., s : s + chunk, :], d[..., s : s + chunk, :], b[..., s : s + chunk, :],
                               mode=mode) for s in starts]
    states, state = [], x0
    for summary in summaries:  # each chunk's start state, from the summaries alone
        states.append(state)
        state = pdscan.step(summary.index, summary.d, summary.b, state, mode=mode)
    parts = [pdscan.scan(index[..., s : s + chunk, :], d[..., s : s + chunk, :], b[..., s : s + chunk, :], start,
                         mode=mode) for s, start in zip(starts, states)]
    return np.concatenate(parts, axis=-2)


def main():
    rng = np.random.default_rng(0)
    L, N = 20_000, 32
    index = rng.integers(0, N, size=(L, N), dtype=np.int32)
    d = (rng.uniform(0.9, 1.0, (L, N)) * np.exp(2j * np.pi * rng.uniform(size=(L, N)))).astype(np.complex128)
    b = rng.normal(size=(L, N)) + 1j * rng.normal(size=(L, N))
    x0 = np.zeros(N, np.complex128)
    whole = pdscan.scan(index, d, b, x0)
    pieces = chunked_scan(index, d, b, x0, chunk=3_000)
    err = np.abs(pieces - whole).max() / np.abs(whole).max()
    print(f"L={L}, N={N}, 7 chunks: max relative difference to the whole scan {err:.1e}")
    assert err < 1e-10


if __name__ == "__main__":
    main()
