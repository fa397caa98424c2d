// The pipelined scan's producer side (pdscan_pipe.cu): copies of a tile's inputs
// into shared memory, and the step tables the consumers read (gather: each lane's
// source; scatter: each row's sources in lane order, with bit sets for the rest).
// Also the vector accesses both sides use.
#pragma once
#include "pdscan_common.cuh"

namespace pd {

constexpr unsigned char WALK_MASKS = 0xff;  // a step's `terms`: use the bit sets

constexpr int RCAP = 8;  // scatter tables: up to RCAP sources per row, in lane order

__device__ __forceinline__ long long round16(long long bytes) { return (bytes + 15) & ~15LL; }

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

// Copy `bytes` from global to shared memory over one producer warp (`lane_id` its
// lane), in units of `grain` bytes (16, 8 or 4: cp.async; 0: the region is not
// 4-byte aligned, plain byte copies).  The launcher picks the largest grain that
// divides every address the launch copies.
__device__ __forceinline__ void stage(void* dst, const void* src, long long bytes, int grain, int lane_id) {
  char* to = (char*)dst;
  const char* from = (const char*)src;
  if (grain == 16) {
    for (long long o = 16LL * lane_id; o < bytes; o += 16LL * 32)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared_address(to + o)), "l"(from + o));
  } else if (grain == 8) {
    for (long long o = 8LL * lane_id; o < bytes; o += 8LL * 32)
      asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(shared_address(to + o)), "l"(from + o));
  } else if (grain == 4) {
    for (long long o = 4LL * lane_id; o < bytes; o += 4LL * 32)
      asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(shared_address(to + o)), "l"(from + o));
  } else {
    for (long long o = lane_id; o < bytes; o += 32) to[o] = from[o];
  }
}

// E adjacent values as one aligned access (a 16-byte vector, two, or smaller)
template <typename V, int E>
struct alignas(E * sizeof(V) >= 16 ? 16 : E * sizeof(V)) pack {
  V v[E];
};
template <typename V, int E>
__device__ __forceinline__ pack<V, E> load_pack(const V* p) {
  return *(const pack<V, E>*)p;
}
template <typename V, int E>
__device__ __forceinline__ void store_pack(V* p, const V (&v)[E]) {
  pack<V, E> q;
#pragma unroll
  for (int e = 0; e < E; ++e) q.v[e] = v[e];
  *(pack<V, E>*)p = q;
}

// Copy `rows` rows of `row_bytes` (contiguous in global memory) to shared rows
// `pitch` bytes apart, in units of `grain` bytes, over the producer warp.
__device__ __forceinline__ void stage_rows(void* dst, long long pitch, const void* src, long long row_bytes,
                                           int rows, int grain, int lane_id) {
  if (pitch == row_bytes) {
    stage(dst, src, row_bytes * rows, grain, lane_id);
    return;
  }
  for (int r = 0; r < rows; ++r)
    stage((char*)dst + r * pitch, (const char*)src + r * row_bytes, row_bytes, grain, lane_id);
}

// The tables of `rows` steps, written by the producer warp; target(r, lane) is
// the row lane `lane` of step r lands on (-1: out of range).  Step r's table
// (`stride` bytes apart) holds
//   gather: offsets[i], the byte offset of lane i's source in the exchange (NB + 1,
//           the NaN entry, when out of range; NB, the zero entry, past N);
//   scatter: sources[i * RCAP + k] (u16), the byte offset of row i's k-th source in
//           lane order (NB where there is none), the bit sets masks[i * W + w] of the
//           row's sources (W words: NB <= 32 W) and inv[w] of the lanes out of range; terms[r] is the most
//           sources of any row, or WALK_MASKS when over RCAP or when a lane is out of range.
// Scatter tables are built in three passes over all the rows (clear, set the bits,
// rank each source by a population count of its row's bits below it), so a warp
// barrier separates passes rather than steps, and the rows' latencies overlap.
template <typename T, int KIND, int W, typename Target>
__device__ __forceinline__ void write_tables(const Target& target, int rows, unsigned char* tables, long long stride,
                                             unsigned char* terms, int N, int NB, int lane_id) {
  if (KIND == GATHER) {
    for (int r = 0; r < rows; ++r) {
      int* offsets = (int*)(tables + r * stride);
#pragma unroll
      for (int e = 0; e < W; ++e) {
        const int lane = e * 32 + lane_id;
        if (lane < NB) {
          const int t = lane < N ? target(r, lane) : -1;
          offsets[lane] = (lane >= N ? NB : t >= 0 ? t : NB + 1) * (int)sizeof(T);
        }
      }
    }
    return;
  }
  const unsigned none = 0x10001u * (unsigned)(NB * sizeof(T));
  const uint4 none4 = make_uint4(none, none, none, none);
  // lane e * 32 + lane_id of a row's NB (<= 32 W) is this thread's: loops over e unroll
  __syncwarp();  // the consumer reads tables only after FULL; this warp's earlier reads are done
  for (int r = 0; r < rows; ++r) {
    unsigned char* table = tables + r * stride;
    unsigned* masks = (unsigned*)(table + 16LL * NB);
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const int i = e * 32 + lane_id;
      if (i < NB) {
        ((uint4*)table)[i] = none4;  // RCAP u16 = 16 bytes a row
#pragma unroll
        for (int w = 0; w < W; ++w) masks[i * W + w] = 0u;
      }
    }
  }
  __syncwarp();
#pragma unroll 2
  for (int r = 0; r < rows; ++r) {
    unsigned* masks = (unsigned*)(tables + r * stride + 16LL * NB);
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const int lane = e * 32 + lane_id;
      const int t = lane < N ? target(r, lane) : 0;
      if (t >= 0 && lane < N) atomicOr(masks + t * W + e, 1u << lane_id);
      const unsigned bad = __ballot_sync(0xffffffffu, t < 0);
      if (lane_id == 0) masks[W * NB + e] = bad;
    }
  }
  __syncwarp();
  const unsigned lower = (1u << lane_id) - 1u;
#pragma unroll 2
  for (int r = 0; r < rows; ++r) {
    unsigned char* table = tables + r * stride;
    unsigned short* sources = (unsigned short*)table;
    const unsigned* masks = (const unsigned*)(table + 16LL * NB);
    int most = 0;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const int lane = e * 32 + lane_id;
      const int t = lane < N ? target(r, lane) : -1;
      if (t >= 0) {
        const pack<unsigned, W> row = load_pack<unsigned, W>(masks + t * W);
        int rank = __popc(row.v[e] & lower);
#pragma unroll
        for (int w = 0; w < e; ++w) rank += __popc(row.v[w]);
        if (rank < RCAP) sources[t * RCAP + rank] = (unsigned short)(lane * sizeof(T));
      }
      if (lane < NB) {
        const pack<unsigned, W> own = load_pack<unsigned, W>(masks + lane * W);
        int count = 0;
#pragma unroll
        for (int w = 0; w < W; ++w) count += __popc(own.v[w]);
        most = max(most, count);
      }
    }
    const pack<unsigned, W> inv = load_pack<unsigned, W>(masks + W * NB);
    unsigned bad = 0u;
#pragma unroll
    for (int w = 0; w < W; ++w) bad |= inv.v[w];
    most = __reduce_max_sync(0xffffffffu, (unsigned)most);
    if (lane_id == 0) terms[r] = (bad != 0u || most > RCAP) ? WALK_MASKS : (unsigned char)most;
  }
}

}  // namespace pd
