// What a consumer of the pipelined scan (pdscan_pipe.cu) reads after a scatter step's
// exchange barrier: the sum of a row's sources from the planes they were stored in,
// or, on a crowded step, from the walk of the row's list of sources.
#pragma once
#include "pdscan_common.cuh"
#include "pdscan_pipe_producer.cuh"

namespace pd {

// acc = the sum of the first P planes of a scatter exchange half at the thread's E
// rows, `plane_at[k]` bytes into the half (in lane order: plane k holds each row's
// k-th source), and those entries cleared for the half's next use; all P loads go
// out before the first add.
template <int P, typename T, int E>
__device__ __forceinline__ void sum_planes(T (&acc)[E], unsigned char* half, const int (&plane_at)[RCAP], bool active) {
  if (!active) return;  // a thread past the last lane: its acc is never stored
  pack<T, E> term[P];
#pragma unroll
  for (int k = 0; k < P; ++k) term[k] = *(const pack<T, E>*)(half + plane_at[k]);
  const T zero[E] = {};
#pragma unroll
  for (int k = 0; k < P; ++k) store_pack<T, E>((T*)(half + plane_at[k]), zero);
#pragma unroll
  for (int e = 0; e < E; ++e) {
    acc[e] = term[0].v[e];
#pragma unroll
    for (int k = 1; k < P; ++k) acc[e] = add(acc[e], term[k].v[e]);
  }
}

// A scatter step that walks its source lists: element e is the sum, in lane order, of
// the terms of every source of row at + e (order[start[row]] .. before
// order[start[row + 1]] in the step's table at byte `table_at` of shared memory; the
// lanes' terms at `by_lane_at`), NaN where that row's own lane is out of range.  Loads
// go out WALK_BATCH at a time, all before their adds, so a crowded row costs a few load
// latencies rather than one per source: every step of the scan of chunk summaries
// walks (a chunk's composed map crowds its lanes onto a row or two).  Out of line
// because, inlined, its registers slowed the common step.
constexpr int WALK_BATCH = 8;
template <typename T, int E>
__device__ __noinline__ pack<T, E> walk_sources(int table_at, int by_lane_at, int at, int NB) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const unsigned char* start = smem_raw + table_at + scatter_starts_at(NB);
  const unsigned char* order = smem_raw + table_at + scatter_order_at(NB);
  const unsigned* invalid = (const unsigned*)(smem_raw + table_at + scatter_invalid_at(NB));
  const T* by_lane = (const T*)(smem_raw + by_lane_at);
  pack<T, E> acc;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int row = at + e, end = start[row + 1];
    T sum = ((invalid[row >> 5] >> (row & 31)) & 1u) ? nan_of(T()) : T();
    for (int k = start[row]; k < end; k += WALK_BATCH) {
      T term[WALK_BATCH];
#pragma unroll
      for (int q = 0; q < WALK_BATCH; ++q) term[q] = by_lane[k + q < end ? order[k + q] : 0];  // lane 0's: not added
#pragma unroll
      for (int q = 0; q < WALK_BATCH; ++q)
        if (k + q < end) sum = add(sum, term[q]);
    }
    acc.v[e] = sum;
  }
  return acc;
}

}  // namespace pd
