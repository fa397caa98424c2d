// The single-pass forward scan: tiles of time with decoupled look-back.
//
// Every (sequence, tile of T steps) is one team of one warp.  A team
//   1. stages its tile's inputs (index words or selectors, d, b) in shared memory
//      with asynchronous copies (cp.async: no registers hold them in flight, so a
//      whole tile is requested at once);
//   2. if the state it starts from is not published yet, runs the tile from a
//      zero state while composing its transform (phase A) and publishes that
//      aggregate (transform, state from zero);
//   3. looks back: walks the predecessors' status words to the nearest one with a
//      published end state, and applies the aggregates in between to it (each is
//      one more step of the recurrence); publishes its own end state at once;
//   4. replays the tile from shared memory with the true start state, writing x
//      (phase B).
// Global traffic is the floor's: each input is read once and x written once, plus
// O(N) per tile for the aggregates.  Teams take tiles in the order of a ticket
// counter, time-major, so every tile a team waits for belongs to a team that
// started before it: the look-back cannot deadlock.
//
// Status words (S * C, zeroed by the launcher, then one ticket counter):
// 0 nothing yet, 1 aggregate published, 2 end state published.
#include "pdscan_common.cuh"

namespace pd {

enum { LB_NONE = 0, LB_AGGREGATE = 1, LB_STATE = 2 };

__device__ __forceinline__ int load_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void store_release(int* p, int v) {
  asm volatile("st.release.gpu.global.s32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// Reads of what other teams published: through L2 (L1 is not coherent).
__device__ __forceinline__ int load_published(const int* p) { return __ldcg(p); }
__device__ __forceinline__ float load_published(const float* p) { return __ldcg(p); }
__device__ __forceinline__ double load_published(const double* p) { return __ldcg(p); }
template <typename R>
__device__ __forceinline__ complex_t<R> load_published(const complex_t<R>* p) {
  return {__ldcg(&p->re), __ldcg(&p->im)};
}

// ---------------------------------------------------------------- scatter as a gather
// A tile's index is known before its steps run, so scatter mode's collisions can be
// resolved off the recurrence's critical path: for every step and target row, the
// source lanes that land on it, in lane order (RCAP of them at most).  The step is
// then a gather of up to R terms, summed in a fixed order: as fast as gather mode
// and bitwise reproducible.  A step with more than RCAP sources on one row, or with
// an out-of-range index, is marked and runs the atomic scatter instead.
struct source_table {
  unsigned char* src;    // rows * N * RCAP: src[(r * N + i) * RCAP + k], the k-th source of row i
  unsigned char* terms;  // rows: how many terms the step sums (ATOMIC_STEP: use atomics)
  int* count;            // N stamped counts (scratch): (stamp << 8) | sources so far
};

// Fill the table for rows [0, count) of the staged tile.  `stamp` must differ from
// every stamp this team used before (the counts are never cleared).
template <int E, typename Tile>
__device__ void build_sources(const Tile& tile, source_table tab, int count, int N, int& stamp) {
  const int tid = threadIdx.x;
  const unsigned lower = (1u << tid) - 1u;
  unsigned* words = (unsigned*)tab.src;
  for (long long w = tid; w < (long long)count * N * RCAP / 4; w += 32) words[w] = 0xffffffffu;
  __syncwarp();
  for (int r = 0; r < count; ++r) {
    if ((++stamp & 0xffffff) == 0) {  // the stamps wrapped: forget every count
      for (int i = tid; i < N; i += 32) tab.count[i] = -1;
      __syncwarp();
      ++stamp;
    }
    int most = 0;
    bool bad = false;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int lane = e * 32 + tid;
      const bool active = lane < N;
      const int t = active ? tile.sigma_at(r, lane) : -1;
      bad |= active && t < 0;
      const int key = (active && t >= 0) ? t : (1 << 20) + lane;
      const unsigned group = __match_any_sync(0xffffffffu, key);
      const int within = __popc(group & lower);
      int base = 0;
      if (active && t >= 0) {
        const int seen = tab.count[t];
        base = (seen >> 8) == (stamp & 0xffffff) ? (seen & 0xff) : 0;
      }
      const int rank = base + within;
      if (active && t >= 0) {
        most = max(most, rank + 1);
        if (rank < RCAP) tab.src[((long long)r * N + t) * RCAP + rank] = (unsigned char)lane;
      }
      __syncwarp();
      // the group's first lane carries the row's count on to the next E round
      if (active && t >= 0 && within == 0) tab.count[t] = ((stamp & 0xffffff) << 8) | min(base + __popc(group), 255);
      __syncwarp();
    }
    most = __reduce_max_sync(0xffffffffu, (unsigned)most);
    bad = __any_sync(0xffffffffu, bad);
    if (tid == 0) tab.terms[r] = (bad || most > RCAP) ? ATOMIC_STEP : (unsigned char)most;
  }
  __syncwarp();
}

// The scatter step of row r through the table (or the atomics where it says so).
template <typename T, int E>
__device__ __forceinline__ void scatter_step(T (&x)[E], const int (&sig)[E], const T (&dv)[E], const T (&bv)[E],
                                             T* buf, int N, bool det, const source_table& tab, int r) {
  const int terms = tab.terms[r];
  if (terms == ATOMIC_STEP) {
    step<T, SCATTER, E>(x, sig, dv, bv, buf, N, det);
    return;
  }
  const int tid = threadIdx.x;
  unsigned long long sources[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int lane = e * 32 + tid;
    sources[e] = lane < N ? *(const unsigned long long*)(tab.src + ((long long)r * N + lane) * RCAP) : ~0ULL;
    if (lane < N) buf[lane] = mul(dv[e], x[e]);
  }
  __syncwarp();
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int lane = e * 32 + tid;
    if (lane < N) {
      T acc = T();
      for (int k = 0; k < terms; ++k) {
        const int j = (int)((sources[e] >> (8 * k)) & 0xff);
        if (j != NO_SOURCE) acc = add(acc, buf[j]);
      }
      x[e] = add(acc, bv[e]);
    }
  }
}

// The staged tile: row r holds time t0 + r (the rows are in memory order, which
// in reverse is the opposite of the scan's).
template <typename T, int IW, bool MAPS, int E>
struct staged_tile {
  typedef typename index_word<IW>::type word;
  const word* index;  // T_len * N words, or T_len selectors (int32) with MAPS
  const int* maps;    // K * N
  const T* d;
  const T* b;
  int N, K;
  bool is_signed, conj;

  __device__ __forceinline__ void load(int r, int (&sig)[E], T (&dv)[E], T (&bv)[E]) const {
    const int tid = threadIdx.x;
    int sel = -1;
    if (MAPS) sel = ((const int*)index)[r];
    const bool sel_ok = sel >= 0 && sel < K;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int lane = e * 32 + tid;
      if (lane < N) {
        if (MAPS) {
          sig[e] = sel_ok ? maps[sel * N + lane] : -1;
        } else {
          sig[e] = lane_of<IW>(index[(long long)r * N + lane], is_signed, N);
        }
        dv[e] = conj_if(d[(long long)r * N + lane], conj);
        bv[e] = b[(long long)r * N + lane];
      } else {
        sig[e] = -1;
        dv[e] = T();
        bv[e] = T();
      }
    }
  }
  // sigma_r(pos) and d_r[pos] for a lane the team does not own (transform tracking)
  __device__ __forceinline__ int sigma_at(int r, int pos) const {
    if (MAPS) {
      const int sel = ((const int*)index)[r];
      return (sel >= 0 && sel < K) ? maps[sel * N + pos] : -1;
    }
    return lane_of<IW>(index[(long long)r * N + pos], is_signed, N);
  }
  __device__ __forceinline__ T d_at(int r, int pos) const { return conj_if(d[(long long)r * N + pos], conj); }
};

// Shared memory of a team, mirrored by the launcher's lookback_smem():
// [staged tiles: index rows | d rows | b rows, `buffers` times] [maps] [exchange 2N]
// [tracking 2N T + 2N int] [source table: rows * N * RCAP | rows | N int (scatter)]
template <typename T, int IW, bool MAPS>
struct team_smem {
  typedef typename index_word<IW>::type word;
  unsigned char* base;
  long long tile_bytes, index_bytes, values_bytes;
  int* maps;
  T* exchange;
  T* track_d;
  int* track_s;
  source_table table;

  __device__ team_smem(unsigned char* p, int tile_len, int N, int K, int buffers) {
    base = p;
    index_bytes = round16(MAPS ? 4LL * tile_len : (long long)IW * tile_len * N);
    values_bytes = round16((long long)sizeof(T) * tile_len * N);
    tile_bytes = index_bytes + 2 * values_bytes;
    p += buffers * tile_bytes;
    maps = (int*)p;
    if (MAPS) p += round16(4LL * K * N);
    exchange = (T*)p;
    p += round16(2LL * sizeof(T) * N);
    track_d = (T*)p;
    p += round16(2LL * sizeof(T) * N);
    track_s = (int*)p;
    p += round16(8LL * N);
    table.src = p;
    p += (long long)tile_len * N * RCAP;
    table.terms = p;
    p += round16(tile_len);
    table.count = (int*)p;
  }
  __device__ word* index(int buffer) const { return (word*)(base + buffer * tile_bytes); }
  __device__ T* d(int buffer) const { return (T*)(base + buffer * tile_bytes + index_bytes); }
  __device__ T* b(int buffer) const { return (T*)(base + buffer * tile_bytes + index_bytes + values_bytes); }
};

// Inputs of the launch, shared by both kernels.
template <typename T>
struct scan_inputs {
  const void* index;
  long long index_stride;
  int index_grain;
  const int* maps;
  long long maps_stride;
  int K;
  const T* d;
  long long d_stride;
  int d_grain;
  const T* b;
  long long b_stride;
  int b_grain;
  const T* x0;
  long long x0_stride;
  T* out;
  long long out_stride;
};

// The kernels' leading parameters (CuPy passes scalars and pointers, not structs)
// and their gathering into a scan_inputs.
#define PD_SCAN_INPUT_PARAMS                                                           \
  const void *__restrict__ index, long long index_stride, int index_grain,             \
      const int *__restrict__ maps, long long maps_stride, int K,                      \
      const T *__restrict__ d, long long d_stride, int d_grain,                        \
      const T *__restrict__ b, long long b_stride, int b_grain,                        \
      const T *__restrict__ x0, long long x0_stride, T *__restrict__ out, long long out_stride,
#define PD_SCAN_INPUTS(name)                                                                  \
  const scan_inputs<T> name{index, index_stride, index_grain, maps, maps_stride, K, d, d_stride, \
                            d_grain, b, b_stride, b_grain, x0, x0_stride, out, out_stride}

// Tile c of a sequence of L steps: returns its step count and sets t_lo, the time
// of its first row in memory (the rows are in memory order, which in reverse is
// the opposite of the scan's).
__device__ __forceinline__ int tile_rows(int c, int tile_len, int L, bool rev, long long& t_lo) {
  const int p0 = c * tile_len;
  const int count = min(L, p0 + tile_len) - p0;
  t_lo = rev ? (long long)L - p0 - count : p0;
  return count;
}

// Publish a tile's end state x for the teams looking back at it.
template <typename T, int E>
__device__ __forceinline__ void publish_end_state(const T (&x)[E], T* row, int* status, int N) {
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int lane = e * 32 + threadIdx.x;
    if (lane < N) row[lane] = x[e];
  }
  __threadfence();
  __syncwarp();
  if (threadIdx.x == 0) store_release(status, LB_STATE);
}

// Asynchronous copies of the rows [t_lo, t_lo + count) of sequence s into `buffer`.
template <typename T, int IW, bool MAPS>
__device__ __forceinline__ void stage_tile(const scan_inputs<T>& in, const team_smem<T, IW, MAPS>& sm, int buffer,
                                           long long s, long long t_lo, int count, int N) {
  typedef typename index_word<IW>::type word;
  if (MAPS) {
    stage(sm.index(buffer), (const int*)in.index + s * in.index_stride + t_lo, 4LL * count, in.index_grain,
          threadIdx.x, 32);
  } else {
    stage(sm.index(buffer), (const word*)in.index + s * in.index_stride + t_lo * N, (long long)IW * count * N,
          in.index_grain, threadIdx.x, 32);
  }
  stage(sm.d(buffer), in.d + s * in.d_stride + t_lo * N, (long long)sizeof(T) * count * N, in.d_grain,
        threadIdx.x, 32);
  stage(sm.b(buffer), in.b + s * in.b_stride + t_lo * N, (long long)sizeof(T) * count * N, in.b_grain,
        threadIdx.x, 32);
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// Phase B: the staged tile from state x, writing x_t for each of its times.
template <typename T, int IW, int KIND, bool MAPS, int E>
__device__ __forceinline__ void replay(T (&x)[E], const staged_tile<T, IW, MAPS, E>& tile, const source_table& tab,
                                       T* exchange, int& parity, T* out_seq, long long t_lo, int count, bool rev,
                                       int N, bool det) {
  const int tid = threadIdx.x;
  int sig[E];
  T dv[E], bv[E];
  if (count > 0) tile.load(rev ? count - 1 : 0, sig, dv, bv);
  for (int i = 0; i < count; ++i) {
    const int r = rev ? count - 1 - i : i;
    int sig_now[E];
    T dv_now[E], bv_now[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      sig_now[e] = sig[e];
      dv_now[e] = dv[e];
      bv_now[e] = bv[e];
    }
    if (i + 1 < count) tile.load(rev ? r - 1 : r + 1, sig, dv, bv);  // off the critical path
    T* buf = exchange + parity * N;
    if (KIND == GATHER) step<T, GATHER, E>(x, sig_now, dv_now, bv_now, buf, N, det);
    else scatter_step<T, E>(x, sig_now, dv_now, bv_now, buf, N, det, tab, r);
    parity ^= 1;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int lane = e * 32 + tid;
      if (lane < N) out_seq[(t_lo + r) * N + lane] = x[e];
    }
  }
}

template <typename T, int IW, bool MAPS, int E>
__device__ __forceinline__ staged_tile<T, IW, MAPS, E> tile_view(const team_smem<T, IW, MAPS>& sm, int buffer, int N,
                                                               int K, int flags) {
  return staged_tile<T, IW, MAPS, E>{sm.index(buffer), sm.maps, sm.d(buffer), sm.b(buffer), N, K,
                                     (flags & F_SIGNED_INDEX) != 0, (flags & F_CONJ) != 0};
}

template <typename T, int IW, bool MAPS>
__device__ __forceinline__ void team_setup(const scan_inputs<T>& in, const team_smem<T, IW, MAPS>& sm, long long s,
                                           int N) {
  const int tid = threadIdx.x;
  if (MAPS) {
    const int* my_maps = in.maps + s * in.maps_stride;
    for (int i = tid; i < in.K * N; i += 32) sm.maps[i] = my_maps[i];
  }
  for (int i = tid; i < 2 * N; i += 32) sm.exchange[i] = T();
  for (int i = tid; i < N; i += 32) sm.table.count[i] = -1;  // no stamp matches
}

template <typename T, int E>
__device__ __forceinline__ void start_state(T (&x)[E], const T* x0, long long at, int N) {
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int lane = e * 32 + threadIdx.x;
    x[e] = (x0 != nullptr && lane < N) ? x0[at + lane] : T();
  }
}

// MAPS: `index` holds int32 selectors (S, L) into maps (S, K, N) int32 whose
// entries are already -1 where out of range; the selectors are range-checked here.
template <typename T, int IW, int KIND, bool MAPS, int E>
__global__ void __launch_bounds__(32) pd_scan_lookback(
    PD_SCAN_INPUT_PARAMS
    int* __restrict__ status, int* __restrict__ agg_sigma, T* __restrict__ agg_d,
    T* __restrict__ agg_y, T* __restrict__ end_state, int L, int N, int tile_len, int C, int S, int flags) {
  PD_SCAN_INPUTS(in);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ int shared_word;
  const int tid = threadIdx.x;
  const bool rev = flags & F_REVERSE, det = flags & F_DETERMINISTIC;

  // -- which tile: tickets in start order, time-major
  if (tid == 0) shared_word = atomicAdd(status + (long long)S * C, 1);
  __syncwarp();
  const int ticket = shared_word;
  __syncwarp();
  const int c = ticket / S;
  const long long s = ticket % S;
  long long t_lo;
  const int count = tile_rows(c, tile_len, L, rev, t_lo);
  int* my_status = status + s * C + c;
  const long long tile_row = (s * C + c) * (long long)N;

  team_smem<T, IW, MAPS> sm(smem_raw, tile_len, N, in.K, 1);
  stage_tile(in, sm, 0, s, t_lo, count, N);
  team_setup(in, sm, s, N);
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  __syncwarp();
  const staged_tile<T, IW, MAPS, E> tile = tile_view<T, IW, MAPS, E>(sm, 0, N, in.K, flags);
  int stamp = 0;
  if (KIND == SCATTER) build_sources<E>(tile, sm.table, count, N, stamp);

  int parity = 0;  // the exchange buffer alternates, so one barrier a step suffices
  T x[E];
  bool publish_end = true;  // the end state still has to be published after phase B
  if (c == 0) {
    start_state(x, in.x0, s * in.x0_stride, N);
  } else {
    if (tid == 0) shared_word = load_acquire(my_status - 1);
    __syncwarp();
    const bool ready = shared_word == LB_STATE;
    __syncwarp();
    if (ready) {
      // the predecessor is done: its end state is this tile's start
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int lane = e * 32 + tid;
        x[e] = lane < N ? load_published(end_state + tile_row - N + lane) : T();
      }
    } else {
      // phase A: the tile from zero, composing its transform
      int ts[E];
      T td[E], y[E];
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int lane = e * 32 + tid;
        ts[e] = lane < N ? lane : -1;
        td[e] = one_of(T());
        y[e] = T();
      }
      for (int i = 0; i < count; ++i) {
        const int r = rev ? count - 1 - i : i;
        int sig[E];
        T dv[E], bv[E];
        tile.load(r, sig, dv, bv);
        T* buf = sm.exchange + parity * N;
        if (KIND == GATHER) {
          // the transform: (M x)[i] = td[i] x[ts[i]]; after A: ts[i] <- ts[sig[i]], td[i] <- d[i] td[sig[i]]
          int* sbuf = sm.track_s + parity * N;
          T* dbuf = sm.track_d + parity * N;
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * 32 + tid;
            if (lane < N) {
              buf[lane] = y[e];
              sbuf[lane] = ts[e];
              dbuf[lane] = td[e];
            }
          }
          __syncwarp();
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * 32 + tid;
            if (lane < N) {
              const int j = sig[e];
              y[e] = j >= 0 ? add(mul(dv[e], buf[j]), bv[e]) : nan_of(T());
              ts[e] = j >= 0 ? sbuf[j] : -1;
              td[e] = j >= 0 ? mul(dv[e], dbuf[j]) : nan_of(T());
            }
          }
        } else {
          scatter_step<T, E>(y, sig, dv, bv, buf, N, det, sm.table, r);
          // the transform: source lane j's mass sits at ts[j] with factor td[j]
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int pos = ts[e];
            if (pos >= 0) {
              const int next = tile.sigma_at(r, pos);
              td[e] = next >= 0 ? mul(tile.d_at(r, pos), td[e]) : nan_of(T());
              ts[e] = next;
            }
          }
        }
        parity ^= 1;
      }
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int lane = e * 32 + tid;
        if (lane < N) {
          agg_sigma[tile_row + lane] = ts[e];
          agg_d[tile_row + lane] = td[e];
          agg_y[tile_row + lane] = y[e];
        }
      }
      __threadfence();
      __syncwarp();
      if (tid == 0) store_release(my_status, LB_AGGREGATE);

      // look back to the nearest published end state: 32 status words at a time
      int j0 = -1;
      for (int top = c - 1; j0 < 0;) {
        const int j = top - tid;
        const int f = j >= 0 ? load_acquire(status + s * C + j) : LB_STATE;
        const unsigned have_state = __ballot_sync(0xffffffffu, f == LB_STATE);
        const unsigned pending = __ballot_sync(0xffffffffu, f == LB_NONE);
        const int nearest = have_state ? __ffs(have_state) - 1 : 32;  // lane of the nearest end state
        const unsigned before = nearest < 32 ? (1u << nearest) - 1u : 0xffffffffu;
        if (pending & before) {
          // an aggregate between here and there is not out yet: wait for it
          const int first_pending = __ffs(pending & before) - 1;
          top -= first_pending;
          __nanosleep(64);
        } else if (nearest < 32) {
          j0 = top - nearest;
        } else {
          top -= 32;
        }
      }
      __threadfence();
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int lane = e * 32 + tid;
        x[e] = lane < N ? load_published(end_state + (s * C + j0) * (long long)N + lane) : T();
      }
      // the aggregates between it and this tile, the next one's loads ahead of each step
      int sig[E];
      T dv[E], bv[E];
      auto load_aggregate = [&](int j) {
#pragma unroll
        for (int e = 0; e < E; ++e) {
          const int lane = e * 32 + tid;
          if (j < c) {
            const long long at = (s * C + j) * (long long)N + lane;
            sig[e] = lane < N ? load_published(agg_sigma + at) : -1;
            dv[e] = lane < N ? load_published(agg_d + at) : T();
            bv[e] = lane < N ? load_published(agg_y + at) : T();
          } else {
            sig[e] = ts[e];
            dv[e] = td[e];
            bv[e] = y[e];
          }
        }
      };
      load_aggregate(j0 + 1);
      for (int j = j0 + 1; j <= c; ++j) {
        int sig_now[E];
        T dv_now[E], bv_now[E];
#pragma unroll
        for (int e = 0; e < E; ++e) {
          sig_now[e] = sig[e];
          dv_now[e] = dv[e];
          bv_now[e] = bv[e];
        }
        if (j < c) load_aggregate(j + 1);
        T* buf = sm.exchange + parity * N;
        if (j == c) {
          // x is this tile's start: keep it, publish the end state A_c x + y_c
          T end[E];
#pragma unroll
          for (int e = 0; e < E; ++e) end[e] = x[e];
          step<T, KIND, E>(end, sig_now, dv_now, bv_now, buf, N, det);
          publish_end_state(end, end_state + tile_row, my_status, N);
          publish_end = false;
        } else {
          step<T, KIND, E>(x, sig_now, dv_now, bv_now, buf, N, det);
        }
        parity ^= 1;
      }
    }
  }

  replay<T, IW, KIND, MAPS, E>(x, tile, sm.table, sm.exchange, parity, in.out + s * in.out_stride, t_lo, count, rev,
                               N, det);
  if (publish_end && c + 1 < C) publish_end_state(x, end_state + tile_row, my_status, N);
}

// One team walks a whole sequence, tile by tile: the next tile is staged while the
// current one runs (two buffers), so the loads are a tile ahead of their use and
// no register holds them in flight.  For launches with enough sequences to fill
// the GPU: no aggregates, no look-back.
template <typename T, int IW, int KIND, bool MAPS, int E>
__global__ void __launch_bounds__(32) pd_scan_stream(
    PD_SCAN_INPUT_PARAMS
    int L, int N, int tile_len, int flags) {
  PD_SCAN_INPUTS(in);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const bool rev = flags & F_REVERSE, det = flags & F_DETERMINISTIC;
  const long long s = blockIdx.x;
  const int C = (L + tile_len - 1) / tile_len;
  team_smem<T, IW, MAPS> sm(smem_raw, tile_len, N, in.K, 2);
  long long t_lo;
  int count = tile_rows(0, tile_len, L, rev, t_lo);
  stage_tile(in, sm, 0, s, t_lo, count, N);
  team_setup(in, sm, s, N);
  T x[E];
  start_state(x, in.x0, s * in.x0_stride, N);
  int parity = 0, stamp = 0;
  for (int c = 0; c < C; ++c) {
    long long next_lo = 0;
    if (c + 1 < C) {
      const int next_count = tile_rows(c + 1, tile_len, L, rev, next_lo);
      stage_tile(in, sm, (c + 1) & 1, s, next_lo, next_count, N);
      asm volatile("cp.async.wait_group 1;" ::: "memory");  // all but the tile just asked for
    } else {
      asm volatile("cp.async.wait_group 0;" ::: "memory");
    }
    __syncwarp();
    const staged_tile<T, IW, MAPS, E> tile = tile_view<T, IW, MAPS, E>(sm, c & 1, N, in.K, flags);
    if (KIND == SCATTER) build_sources<E>(tile, sm.table, count, N, stamp);
    replay<T, IW, KIND, MAPS, E>(x, tile, sm.table, sm.exchange, parity, in.out + s * in.out_stride, t_lo, count,
                                 rev, N, det);
    __syncwarp();  // every lane is done with this buffer before it is staged again
    count = c + 1 < C ? tile_rows(c + 1, tile_len, L, rev, t_lo) : 0;
  }
}

}  // namespace pd
