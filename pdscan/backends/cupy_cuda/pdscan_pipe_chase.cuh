// The chunk summaries of gather mode's pipelined scan by following paths (KIND ==
// CHASE in pdscan_pipe.cu, always with TRACK): no exchange of the state at every step.
//
// In gather mode x_t[i] = d_t[i] x_{t-1}[sigma_t(i)] + b_t[i]: the lane of a step
// depends on one lane of each earlier step, its path back.  So the state after a
// tile is the state before it taken along each lane's path back through the tile:
//   x_end[i] = acc + prod x_start[pos],
// where the path from (the tile's last step, i) back to its first adds each step's b
// at the path's lane times the product of the later steps' d (acc), multiplies up
// those d (prod) and ends at lane pos.  A summary (the unit's transform and its
// state from zero) composes each tile's paths with the unit so far: one path a
// lane through the tile, three shared-memory loads a step, and one barrier a tile
// instead of one a step.  The producers only copy the tiles (and conjugate d): there
// are no step tables to build.
//
// The sums are grouped differently from the step-by-step recurrence (each b weighted
// by a product of d rather than nested), so a summary differs from GATHER's by
// rounding; it is fixed by the tile length, so it repeats bitwise.
//
// Measured on the H200 (docs/benchmarks.md, "Chunk summaries by paths"): 2-5 % off
// the forward and the scatter-mode VJP at the shapes cut in time.  The replay of the
// chunks by paths (groups of a few steps, each step's state from its path back to
// the group's start) was no faster than the exchange, and is not kept.
#pragma once
#include "pdscan_common.cuh"
#include "pdscan_pipe_producer.cuh"

namespace pd {

constexpr int CHASE = 2;  // the pipelined scan's kind for gather-mode summaries by paths

// A path back from some step: its value is acc + prod x[pos] in terms of the state x
// before the steps it has gone through; ok is false once one of them named a lane
// out of range (the value is NaN then, as the step's own would be).
template <typename T>
struct lane_path {
  T acc, prod;
  int pos;
  bool ok;
};

template <typename T>
__device__ __forceinline__ lane_path<T> path_from(int lane) {
  return {T(), one_of(T()), lane >= 0 ? lane : 0, lane >= 0};
}

// one step further back, through a step whose rows are d_row, b_row and whose
// index names lane sigma(pos) for lane pos (-1: out of range)
template <typename T, typename Sigma>
__device__ __forceinline__ void path_step(lane_path<T>& p, const T* d_row, const T* b_row, const Sigma& sigma) {
  const int to = sigma(p.pos);
  p.acc = add(p.acc, mul(p.prod, b_row[p.pos]));
  p.prod = mul(p.prod, d_row[p.pos]);
  p.ok = p.ok && to >= 0;
  p.pos = to >= 0 ? to : 0;
}

// The consumer warps' summary of a unit (tiles 0 .. tiles - 1 from the ring).  x,
// track_s, track_d: this thread's lanes own .. own + E - 1 of the state from zero and
// of the transform (the lane at the unit's start, the product of d), at the unit's
// start (zero, identity) and at its end on return.
template <typename T, int IW, bool MAPS, int E, int CW, typename Layout, typename TileAt>
__device__ __forceinline__ void chase_summary(const Layout& sm, int tiles, const TileAt& tile_at, bool rev,
                                              bool is_signed, int N, int K, int own, T (&x)[E], int (&track_s)[E],
                                              T (&track_d)[E]) {
  typedef typename index_word<IW>::type word;
  const int NB = sm.NB;
  const int vp = sm.values_pitch / (int)sizeof(T);
  // the summary so far, at the tile's start: two halves, one read while the other is
  // written
  auto state = [&](int h) { return (T*)(sm.exchange + h * sm.exchange_stride); };
  auto track_d_half = [&](int h) { return (T*)(sm.track_d + h * sm.exchange_stride); };
  auto track_s_half = [&](int h) { return (int*)(sm.track_s + h * round16(4LL * (NB + 2))); };
  auto publish = [&](int h) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (own + e < N) {
        state(h)[own + e] = x[e];
        track_s_half(h)[own + e] = track_s[e];
        track_d_half(h)[own + e] = track_d[e];
      }
    }
    consumer_sync<CW>();
  };
  int half = 0;
  publish(half);
  for (int j = 0; j < tiles; ++j) {
    const int sl = j % PIPE_STAGES;
    long long t_lo;
    const int rows = tile_at(j, t_lo);
    const word* index = sm.index(sl);
    const T* dt = sm.d(sl);
    const T* bt = sm.b(sl);
    named_sync<CW>(full_barrier(sl));
    // every lane's path from the tile's last step back to its first (the recurrence
    // runs down the rows in reverse)
    lane_path<T> p[E];
#pragma unroll
    for (int e = 0; e < E; ++e) p[e] = path_from<T>(own + e < N ? own + e : -1);
    for (int q = rows - 1; q >= 0; --q) {
      const int r = rev ? rows - 1 - q : q;
      const int* map = nullptr;
      if (MAPS) {
        const int sel = ((const int*)index)[r];
        map = (sel >= 0 && sel < K) ? sm.maps + sel * N : nullptr;
      }
      const word* words = index + r * N;
      auto sigma = [&](int pos) -> int {
        if (MAPS) return map != nullptr ? map[pos] : -1;
        return lane_of<IW>(words[pos], is_signed, N);
      };
#pragma unroll
      for (int e = 0; e < E; ++e) path_step(p[e], dt + r * vp, bt + r * vp, sigma);
    }
    // composed with the summary at the tile's start (x[pos] read either way: a select
    // rather than a branch around the load)
    const T* xs = state(half);
    const int* ss = track_s_half(half);
    const T* ds = track_d_half(half);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (own + e < N) {
        const int pos = p[e].pos;
        const T value = add(p[e].acc, mul(p[e].prod, xs[pos]));
        x[e] = p[e].ok ? value : nan_of(T());
        track_s[e] = p[e].ok ? ss[pos] : -1;
        track_d[e] = p[e].ok ? mul(p[e].prod, ds[pos]) : nan_of(T());
      }
    }
    half ^= 1;
    publish(half);
    if (j + PIPE_STAGES < tiles) named_arrive<CW>(empty_barrier(sl));
  }
}

}  // namespace pd
