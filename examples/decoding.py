"""Autoregressive decoding with an O(N) state: one pdscan.step per token equals the
scan over the whole sequence (here with a Flash PD-SSM dictionary of K maps).

    python examples/decoding.py
"""

import numpy as np

import pdscan


def main():
    rng = np.random.default_rng(0)
    heads, L, N, K = 4, 64, 16, 8
    maps = rng.integers(0, N, size=(heads, K, N), dtype=np.int16)  # one dictionary per head
    choice = rng.integers(0, K, size=(heads, L), dtype=np.int16)  # one map per step
    d = (0.95 * np.exp(2j * np.pi * rng.uniform(size=(heads, L, N)))).astype(np.complex64)
    b = (rng.normal(size=(heads, L, N)) + 0j).astype(np.complex64)

    state = np.zeros((heads, N), np.complex64)
    decoded = []
    for t in range(L):
        state = pdscan.step(choice[:, t], d[:, t], b[:, t], state, maps=maps)
        decoded.append(state)
    decoded = np.stack(decoded, axis=1)
    scanned = pdscan.scan(choice, d, b, maps=maps)
    err = np.abs(decoded - scanned).max() / np.abs(scanned).max()
    print(f"{L} decoding steps vs one scan, {heads} heads: max relative difference {err:.1e}")
    assert err < 1e-5


if __name__ == "__main__":
    main()
