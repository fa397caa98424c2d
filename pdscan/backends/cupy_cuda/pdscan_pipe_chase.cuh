// The chunk summaries of gather mode's pipelined scan by following paths (KIND ==
// CHASE in pdscan_pipe.cu, always with TRACK): no exchange of the state.
//
// In gather mode x_t[i] = d_t[i] x_{t-1}[sigma_t(i)] + b_t[i]: the lane of a step
// depends on one lane of each earlier step, its path back.  So the state at a
// unit's end is the state before it taken along each lane's path back:
//   x_end[i] = acc + prod x_start[pos],
// where the path from (the unit's last step, i) back to its first adds each step's b
// at the path's lane times the product of the later steps' d (acc), multiplies up
// those d (prod) and ends at lane pos.  That is the unit's summary (its transform
// pos, prod and its state from zero acc): one path a lane, three shared-memory loads
// a step, and one barrier a tile, where the consumers free its slot.  The producers
// hand over the tiles from the unit's last to its first and only copy them (and
// conjugate d): there are no step tables to build.  Read in that order, the tiles the
// replay starts with are the ones the summaries read last, so the replay finds some
// of them in L2.
//
// The sums are grouped differently from the step-by-step recurrence (each b weighted
// by a product of d rather than nested) and kept in double precision, so a summary
// differs from GATHER's by rounding; a lane's sum runs along its path whatever the
// tiles, so it repeats bitwise for any tile length.
//
// Measured on the H200 (docs/benchmarks.md, "Chunk summaries by paths").  The replay
// of the chunks by paths (groups of a few steps, each step's state from its path back
// to the group's start) was no faster than the exchange, and is not kept.
#pragma once
#include "pdscan_common.cuh"
#include "pdscan_pipe_producer.cuh"

namespace pd {

constexpr int CHASE = 2;  // the pipelined scan's kind for gather-mode summaries by paths

// A path back from some step: its value is acc + prod x[pos] in terms of the state x
// before the steps it has gone through; ok is false once one of them named a lane
// out of range (the value is NaN then, as the step's own would be).  acc and prod are
// kept in double precision: a path runs through a whole chunk (hundreds of steps), and
// in the value type its product's rounding, which grows with the length, more than
// doubled the forward's error at the shapes cut in time (docs/benchmarks.md).
template <typename T>
struct lane_path {
  typedef typename in_double<T>::type wide;
  wide acc, prod;
  int pos;
  bool ok;
};

template <typename T>
__device__ __forceinline__ lane_path<T> path_from(int lane) {
  typedef typename lane_path<T>::wide wide;
  return {wide(), one_of(wide()), lane >= 0 ? lane : 0, lane >= 0};
}

// one step further back, through a step whose rows are d_row, b_row and whose
// index names lane sigma(pos) for lane pos (-1: out of range)
template <typename T, typename Sigma>
__device__ __forceinline__ void path_step(lane_path<T>& p, const T* d_row, const T* b_row, const Sigma& sigma) {
  const int to = sigma(p.pos);
  p.acc = add(p.acc, mul(p.prod, to_double(b_row[p.pos])));
  p.prod = mul(p.prod, to_double(d_row[p.pos]));
  p.ok = p.ok && to >= 0;
  p.pos = to >= 0 ? to : 0;
}

// The consumer warps' summary of a unit, in three parts that pdscan_pipe.cu's ring
// loop calls: each lane's path starts at the unit's last step (start_paths), goes back
// through tiles 0 .. tiles - 1, which come in that order (tile_at; chase_tile), and
// its sums at the unit's start are the summary (end_paths).
template <typename T, int E>
__device__ __forceinline__ void start_paths(lane_path<T> (&p)[E], int own, int N) {
#pragma unroll
  for (int e = 0; e < E; ++e) p[e] = path_from<T>(own + e < N ? own + e : -1);
}

// the paths back through a tile of `rows` steps (index words or selectors, d and b
// rows vp values apart), against the recurrence: down its rows, or up them in reverse
template <typename T, int IW, bool MAPS, int E>
__device__ __forceinline__ void chase_tile(lane_path<T> (&p)[E], const typename index_word<IW>::type* index,
                                           const T* dt, const T* bt, int vp, int rows, bool rev, bool is_signed,
                                           int N, int K, const int* maps) {
  typedef typename index_word<IW>::type word;
  for (int q = rows - 1; q >= 0; --q) {
    const int r = rev ? rows - 1 - q : q;
    const int* map = nullptr;
    if (MAPS) {
      const int sel = ((const int*)index)[r];
      map = (sel >= 0 && sel < K) ? maps + sel * N : nullptr;
    }
    const word* words = index + r * N;
    auto sigma = [&](int pos) -> int {
      if (MAPS) return map != nullptr ? map[pos] : -1;
      return lane_of<IW>(words[pos], is_signed, N);
    };
#pragma unroll
    for (int e = 0; e < E; ++e) path_step(p[e], dt + r * vp, bt + r * vp, sigma);
  }
}

// x, track_s, track_d: this thread's lanes of the state from zero and of the transform
// (the lane at the unit's start, the product of d) at the unit's end
template <typename T, int E>
__device__ __forceinline__ void end_paths(const lane_path<T> (&p)[E], T (&x)[E], int (&track_s)[E],
                                          T (&track_d)[E]) {
#pragma unroll
  for (int e = 0; e < E; ++e) {
    from_double(x[e], p[e].acc);
    from_double(track_d[e], p[e].prod);
    if (!p[e].ok) x[e] = track_d[e] = nan_of(T());
    track_s[e] = p[e].ok ? p[e].pos : -1;
  }
}

}  // namespace pd
