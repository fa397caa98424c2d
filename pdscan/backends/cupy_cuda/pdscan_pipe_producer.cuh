// The pipelined scan's producer side (pdscan_pipe.cu): copies of a tile's inputs
// into shared memory, and the step tables the consumers read (gather: each lane's
// source; scatter: where each lane's term goes, with bit sets for crowded steps).
// Also the ring of slots with the barriers between the two sides, and the vector
// accesses both sides use.
#pragma once
#include "pdscan_common.cuh"

namespace pd {

// slots: tile j in j % PIPE_STAGES, from producer j % PIPE_PRODUCERS (a divisor of
// PIPE_STAGES); 2 + 2 PIPE_STAGES named barriers of the 16.  Defines for experiments.
#ifndef PD_PIPE_STAGES
#define PD_PIPE_STAGES 6
#endif
#ifndef PD_PIPE_PRODUCERS
#define PD_PIPE_PRODUCERS 3
#endif
constexpr int PIPE_STAGES = PD_PIPE_STAGES;
constexpr int PIPE_PRODUCERS = PD_PIPE_PRODUCERS;
static_assert(PIPE_STAGES % PIPE_PRODUCERS == 0 && PIPE_STAGES / PIPE_PRODUCERS >= 2 && 2 + 2 * PIPE_STAGES <= 16,
              "each producer owns at least two slots; the barriers fit in 16");

// FULL and EMPTY pair the CW consumer warps with one producer warp
template <int CW>
__device__ __forceinline__ void named_sync(int id) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "n"(32 * (CW + 1)) : "memory");
}
template <int CW>
__device__ __forceinline__ void named_arrive(int id) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "n"(32 * (CW + 1)) : "memory");
}
__device__ __forceinline__ int full_barrier(int slot) { return 1 + slot; }
__device__ __forceinline__ int empty_barrier(int slot) { return 1 + PIPE_STAGES + slot; }
constexpr int STEP_BARRIER = 1 + 2 * PIPE_STAGES;
// The consumer warps' barrier between writing the exchange and reading it
template <int CW>
__device__ __forceinline__ void consumer_sync() {
  if (CW == 1) {
    __syncwarp();
  } else {
    asm volatile("bar.sync %0, %1;" ::"n"(STEP_BARRIER), "n"(32 * CW) : "memory");
  }
}

constexpr unsigned char WALK_MASKS = 0xff;  // a step's `terms`: use the bit sets

constexpr int RCAP = 8;  // scatter: up to RCAP sources of a row exchanged in planes, in lane order

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

// conj of `rows` rows of n values `pitch` bytes apart, over the producer warp, once
// the warp has met after its copies into them; nothing for real values.
template <typename T>
__device__ __forceinline__ void conj_rows(T*, int, int, int, int) {}
template <typename R>
__device__ __forceinline__ void conj_rows(complex_t<R>* at, int pitch, int rows, int n, int lane_id) {
  for (int r = 0; r < rows; ++r) {
    R* row = (R*)((unsigned char*)at + (long long)r * pitch);
    for (int k = lane_id; k < n; k += 32) row[2 * k + 1] = -row[2 * k + 1];
  }
}

// Where scatter mode exchanges a step's values: each half of the exchange holds
// RCAP planes of NB rows, then one entry per lane.  Lane j of a step stores d x into
// plane k at its row when it is the row's k-th source in lane order, so that a row's
// owner finds its sources at fixed places, planes 0, 1, ... (entries no source wrote
// hold zero); on a step that walks the bit sets, every lane stores into its own
// entry after the planes instead.
__device__ __forceinline__ int plane_entry(int plane, int row, int NB) { return plane * NB + row; }
__device__ __forceinline__ int lane_entry(int lane, int NB) { return RCAP * NB + lane; }
__host__ __device__ __forceinline__ long long scatter_exchange_entries(int NB) { return (RCAP + 1LL) * NB; }
// a scatter step's table: where each lane stores (u16 byte offsets), then the bit sets
__host__ __device__ __forceinline__ long long scatter_masks_at(int NB) { return round16(2LL * NB); }

// The tables of `rows` steps, written by the producer warp; target(r, lane) is
// the row lane `lane` of step r lands on (-1: out of range).  Step r's table
// (`stride` bytes apart) holds
//   gather: offsets[i], the byte offset of lane i's source in the exchange (NB + 1,
//           the NaN entry, when out of range; NB, the zero entry, past N);
//   scatter: to[j] (u16), the byte offset in an exchange half where lane j stores
//           (plane_entry(rank, row), or lane_entry(j) on a walking step and past N);
//           then the bit sets masks[i * W + w] of row i's sources (W words: NB <= 32 W)
//           and inv[w] of the lanes out of range; terms[r] is the most sources of any
//           row, or WALK_MASKS when over RCAP or when a lane is out of range.
// Scatter tables are built in three passes over all the rows (clear the bit sets,
// set the bits, rank each source by a population count of its row's bits below it),
// so a warp barrier separates passes rather than steps, and the rows' latencies overlap.
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
  const long long masks_at = scatter_masks_at(NB);
  // lane e * 32 + lane_id of a row's NB (<= 32 W) is this thread's: loops over e unroll
  __syncwarp();  // the consumer reads tables only after FULL; this warp's earlier reads are done
  for (int r = 0; r < rows; ++r) {
    unsigned* masks = (unsigned*)(tables + r * stride + masks_at);
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const int i = e * 32 + lane_id;
      if (i < NB) {
#pragma unroll
        for (int w = 0; w < W; ++w) masks[i * W + w] = 0u;
      }
    }
  }
  __syncwarp();
#pragma unroll 2
  for (int r = 0; r < rows; ++r) {
    unsigned* masks = (unsigned*)(tables + r * stride + masks_at);
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
    const unsigned* masks = (const unsigned*)(table + masks_at);
    int target_of[W], rank[W];
    int most = 0;
    bool bad = false;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const int lane = e * 32 + lane_id;
      target_of[e] = lane < N ? target(r, lane) : -1;
      rank[e] = 0;
      if (target_of[e] >= 0) {
        const pack<unsigned, W> row = load_pack<unsigned, W>(masks + target_of[e] * W);
        rank[e] = __popc(row.v[e] & lower);
#pragma unroll
        for (int w = 0; w < e; ++w) rank[e] += __popc(row.v[w]);
        most = max(most, rank[e] + 1);
      }
      bad |= lane < N && target_of[e] < 0;
    }
    most = __reduce_max_sync(0xffffffffu, (unsigned)most);
    const bool walk = __any_sync(0xffffffffu, bad) || most > RCAP;
    unsigned short* to = (unsigned short*)table;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const int lane = e * 32 + lane_id;
      if (lane < NB) {
        const int entry = walk || target_of[e] < 0 ? lane_entry(lane, NB) : plane_entry(rank[e], target_of[e], NB);
        to[lane] = (unsigned short)(entry * sizeof(T));
      }
    }
    if (lane_id == 0) terms[r] = walk ? WALK_MASKS : (unsigned char)most;
  }
}

}  // namespace pd
