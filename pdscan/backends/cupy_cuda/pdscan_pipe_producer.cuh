// The pipelined scan's producer side (pdscan_pipe.cu): copies of a tile's inputs
// into shared memory, and the step tables the consumers read (gather: each lane's
// source; scatter: where each lane's term goes, or lists of each row's sources for
// crowded steps).
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

constexpr unsigned char WALK = 0xff;  // a step's `terms`: walk the rows' source lists

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
// hold zero); on a step that walks the source lists, every lane stores into its own
// entry after the planes instead.
__device__ __forceinline__ int plane_entry(int plane, int row, int NB) { return plane * NB + row; }
__device__ __forceinline__ int lane_entry(int lane, int NB) { return RCAP * NB + lane; }
__host__ __device__ __forceinline__ long long scatter_exchange_entries(int NB) { return (RCAP + 1LL) * NB; }
// A scatter step's table (see write_tables): where each lane stores (NB u16); for a
// walking step, each row's first source (NB + 1 u8), the sources in row order (NB u8)
// and the lanes out of range (W words).  While the producer ranks the step's sources
// the same bytes hold a bit word and a count per row (scatter_counts_at).  O(N) bytes
// a step, so that at N = 128 a slot holds two steps (bit sets of every row's sources,
// N^2 / 8 bytes, held one).  u8: NB is at most 32 W = 128, so lanes and counts fit.
__host__ __device__ __forceinline__ long long scatter_starts_at(int NB) { return round16(2LL * NB); }
__host__ __device__ __forceinline__ long long scatter_order_at(int NB) {
  return scatter_starts_at(NB) + round16(NB + 1LL);
}
__host__ __device__ __forceinline__ long long scatter_invalid_at(int NB) {
  return scatter_order_at(NB) + round16((long long)NB);
}
__host__ __device__ __forceinline__ long long scatter_counts_at(int NB) { return round16(4LL * NB); }
__host__ __device__ __forceinline__ long long scatter_table_bytes(int NB, int W) {
  const long long lists = round16(scatter_invalid_at(NB) + 4LL * W), ranking = scatter_counts_at(NB) + round16(NB);
  return lists > ranking ? lists : ranking;
}

// rank[q][e]: how many lanes before lane e * 32 + lane_id (in lane order) land on its
// row t[q][e] (-1: out of range, rank undefined), for R steps at once (their latencies
// overlap), each in its table's bytes (`scratch[q]`): a bit word per row (u32) and a
// count per row (u8) of the sources so far.  The lanes go 32 at a time: each source
// clears its row's word (every row read is one a source cleared: no clearing of all
// rows), sets its bit, and its rank is the row's count plus the bits below its own;
// the row's highest source of the 32 adds their number to the count.
template <int R, int W>
__device__ __forceinline__ void rank_sources(const int (&t)[R][W], int (&rank)[R][W],
                                             unsigned char* const (&scratch)[R], int NB, int lane_id) {
  const unsigned lower = (1u << lane_id) - 1u;
  unsigned* word[R];
  unsigned char* count[R];
#pragma unroll
  for (int q = 0; q < R; ++q) {
    word[q] = (unsigned*)scratch[q];
    count[q] = scratch[q] + scatter_counts_at(NB);
#pragma unroll
    for (int e = 0; e < W; ++e)
      if (t[q][e] >= 0) count[q][t[q][e]] = 0;
  }
#pragma unroll
  for (int e = 0; e < W; ++e) {
#pragma unroll
    for (int q = 0; q < R; ++q)
      if (t[q][e] >= 0) word[q][t[q][e]] = 0u;
    __syncwarp();  // (also: the counts the last 32 lanes wrote)
#pragma unroll
    for (int q = 0; q < R; ++q)
      if (t[q][e] >= 0) atomicOr(word[q] + t[q][e], 1u << lane_id);
    __syncwarp();
    unsigned bits[R];
    int before[R];
#pragma unroll
    for (int q = 0; q < R; ++q) {
      const int row = t[q][e] >= 0 ? t[q][e] : 0;
      bits[q] = word[q][row];
      before[q] = count[q][row];
      rank[q][e] = before[q] + __popc(bits[q] & lower);
    }
    __syncwarp();  // every word and count read before they change
#pragma unroll
    for (int q = 0; q < R; ++q)
      if (t[q][e] >= 0 && (bits[q] >> lane_id) == 1u) count[q][t[q][e]] = (unsigned char)(before[q] + __popc(bits[q]));
  }
  __syncwarp();
}

// A walking step's lists (write_tables), by the producer warp: rare, but every step
// of a scan of chunk summaries walks.  Each row's count of sources (u8 in 32-bit
// words: no carry, as counts stay under 2^8), their exclusive prefix sum in row order
// over the warp, then each source lane at its row's start plus its rank.
template <int W>
__device__ __forceinline__ void write_walk_lists(unsigned char* table, const int (&target_of)[W],
                                                 const int (&rank)[W], int N, int NB, int lane_id) {
  unsigned char* start = table + scatter_starts_at(NB);
  unsigned char* order = table + scatter_order_at(NB);
  unsigned* invalid = (unsigned*)(table + scatter_invalid_at(NB));
  for (int i = lane_id; i < (NB + 4) / 4; i += 32) ((unsigned*)start)[i] = 0u;
  __syncwarp();
#pragma unroll
  for (int e = 0; e < W; ++e) {
    const int t = target_of[e];
    if (t >= 0) atomicAdd((unsigned*)start + (t >> 2), 1u << (8 * (t & 3)));
    const unsigned bad = __ballot_sync(0xffffffffu, e * 32 + lane_id < N && t < 0);
    if (lane_id == 0) invalid[e] = bad;
  }
  __syncwarp();
  int first[W], total = 0;
#pragma unroll 1
  for (int e = 0; e < W; ++e) {
    const int row = e * 32 + lane_id;
    const int n = row < NB ? start[row] : 0;
    int sum = n;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const int up = __shfl_up_sync(0xffffffffu, sum, o);
      if (lane_id >= o) sum += up;
    }
    first[e] = total + sum - n;
    total += __shfl_sync(0xffffffffu, sum, 31);
  }
  __syncwarp();  // every count read before the starts overwrite them
#pragma unroll
  for (int e = 0; e < W; ++e) {
    const int row = e * 32 + lane_id;
    if (row < NB) start[row] = (unsigned char)first[e];
  }
  if (lane_id == 0) start[NB] = (unsigned char)total;
  __syncwarp();
#pragma unroll
  for (int e = 0; e < W; ++e) {
    const int t = target_of[e];
    if (t >= 0) order[start[t] + rank[e]] = (unsigned char)(e * 32 + lane_id);
  }
}

// The tables of `rows` steps, written by the producer warp; target(r, lane) is
// the row lane `lane` of step r lands on (-1: out of range).  Step r's table
// (`stride` bytes apart) holds
//   gather: offsets[i], the byte offset of lane i's source in the exchange (NB + 1,
//           the NaN entry, when out of range; NB, the zero entry, past N);
//   scatter: to[j] (u16), the byte offset in an exchange half where lane j stores
//           (plane_entry(rank, row), or lane_entry(j) on a walking step, past N and
//           out of range); terms[r], the most sources of any row, or WALK when over
//           RCAP or when a lane is out of range; a walking step also lists each row's
//           sources in lane order: order[] from start[i] to start[i + 1] for row i,
//           and invalid[w] the lanes out of range, whose rows are NaN.
template <int R>
struct steps {  // R as a type, for write_tables' generic lambda
  static constexpr int value = R;
};
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
  __syncwarp();  // the consumer reads tables only after FULL; this warp's earlier reads are done
  // R steps at a time (two, then the odd one)
  auto build = [&](auto steps_at_once, int r0) {
    constexpr int R = decltype(steps_at_once)::value;
    int target_of[R][W], rank[R][W];
    unsigned char* table[R];
#pragma unroll
    for (int q = 0; q < R; ++q) {
      table[q] = tables + (r0 + q) * stride;
#pragma unroll
      for (int e = 0; e < W; ++e) {
        const int lane = e * 32 + lane_id;
        target_of[q][e] = lane < N ? target(r0 + q, lane) : -1;
      }
    }
    rank_sources<R, W>(target_of, rank, table, NB, lane_id);
#pragma unroll
    for (int q = 0; q < R; ++q) {
      int most = 0;
      bool bad = false;
#pragma unroll
      for (int e = 0; e < W; ++e) {
        if (target_of[q][e] >= 0) most = max(most, rank[q][e] + 1);
        bad |= e * 32 + lane_id < N && target_of[q][e] < 0;
      }
      most = __reduce_max_sync(0xffffffffu, (unsigned)most);
      const bool walk = __any_sync(0xffffffffu, bad) || most > RCAP;
      if (lane_id == 0) terms[r0 + q] = walk ? WALK : (unsigned char)most;
      unsigned short* to = (unsigned short*)table[q];
#pragma unroll
      for (int e = 0; e < W; ++e) {
        const int lane = e * 32 + lane_id;
        if (lane < NB) {
          const int t = target_of[q][e];
          to[lane] =
              (unsigned short)((walk || t < 0 ? lane_entry(lane, NB) : plane_entry(rank[q][e], t, NB)) * sizeof(T));
        }
      }
      if (walk) write_walk_lists<W>(table[q], target_of[q], rank[q], N, NB, lane_id);
    }
  };
  int r = 0;
  for (; r + 2 <= rows; r += 2) build(steps<2>(), r);
  if (r < rows) build(steps<1>(), r);
}

}  // namespace pd
