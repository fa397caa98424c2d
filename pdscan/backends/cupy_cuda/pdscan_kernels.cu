// The PD scan kernels.  One thread block (a "team": one warp when N <= 32 E) runs
// one sequence, or one chunk of time of one sequence; thread `tid` owns the lanes
// e * blockDim.x + tid, e < E, whose state it keeps in registers.  Each step
// exchanges the state once through shared memory (double-buffered, so one barrier
// a step).  The inputs of the next P steps are loaded into a register ring ahead
// of their use, so global-memory latency stays off the recurrence's critical path.
//
// Offsets are 64-bit.  Every array is addressed as base + s * seq_stride +
// t * N + lane (the batch flattened to one stride; 0 for a broadcast input).
// Indices are decoded with a range check: an out-of-range index is never
// dereferenced, and the states it touches become NaN.
#include "pdscan_common.cuh"

namespace pd {

// prefetch depth (steps in flight per thread): more for fewer lanes per thread
template <int E> struct ring_depth { static constexpr int value = E <= 2 ? 6 : (E <= 4 ? 4 : 2); };
// threads per team: one warp for E <= 2 (N <= 64), up to 256 otherwise (N <= 256 E)
template <int E> struct team_threads { static constexpr int value = E <= 2 ? 32 : 256; };

// The shared-memory layout, mirrored by the launcher's smem_bytes().
template <typename T>
struct scan_smem {
  T* state;      // 2 N: the exchange / accumulation buffers
  T* track_d;    // 2 N: gather-kind summaries exchange the tracked transform too
  int* track_s;  // 2 N
  int* maps;     // K N: the dictionary of this sequence
  __device__ scan_smem(void* base, int n, int k, bool track) {
    char* p = (char*)base;
    state = (T*)p;
    p += 2 * (long long)n * sizeof(T);
    track_d = (T*)p;
    if (track) p += 2 * (long long)n * sizeof(T);
    track_s = (int*)p;
    if (track) p += 2 * (long long)n * sizeof(int);
    maps = (int*)p;
    (void)k;
  }
};

// Scan of one chunk of positions [p0, p1) of sequence s; time t = L-1-p when
// F_REVERSE.  KIND: the recurrence's kind.  TRACK: also compose the chunk's
// transform and write (transform, state from zero) as the chunk's summary
// instead of writing states.
//
// Units: blockIdx.x = s * units_per_seq + c.  Without TRACK, chunk c > 0 starts
// from chain[s, c-1] ((S, chunks-1, N)); chunk 0 from x0 (or zero).  With TRACK the
// start is zero and the summary goes to agg_*[s, c] ((S, units_per_seq, N)).
// MAPS: `index` holds int32 selectors (S, L) into maps (S, K, N) int32, each entry
// already -1 where it is out of range.
template <typename T, int IW, int KIND, bool MAPS, int E, bool TRACK>
__global__ void __launch_bounds__(team_threads<E>::value) pd_scan(
    const void* __restrict__ index_raw, long long index_stride,
    const int* __restrict__ maps, long long maps_stride, int K,
    const T* __restrict__ d, long long d_stride,
    const T* __restrict__ b, long long b_stride,
    const T* __restrict__ x0, long long x0_stride,
    const T* __restrict__ chain,
    T* __restrict__ out, long long out_stride,
    int* __restrict__ agg_index, T* __restrict__ agg_d, T* __restrict__ agg_b,
    int L, int N, int chunk_len, int units_per_seq, int chunks, int flags) {
  typedef typename index_word<IW>::type word;
  constexpr int P = ring_depth<E>::value;
  constexpr int EI = MAPS ? 1 : E;  // index words per thread and step
  extern __shared__ __align__(16) unsigned char smem_raw[];
  scan_smem<T> sm(smem_raw, N, K, TRACK && KIND == GATHER);

  const int tid = threadIdx.x, nthreads = blockDim.x;
  const long long s = blockIdx.x / units_per_seq;
  const int c = blockIdx.x % units_per_seq;
  const int p0 = c * chunk_len;
  const int p1 = min(L, p0 + chunk_len);
  const int count = p1 - p0;
  const bool rev = flags & F_REVERSE, pre_add = flags & F_PRE_ADD, conj = flags & F_CONJ;
  const bool det = flags & F_DETERMINISTIC, is_signed = flags & F_SIGNED_INDEX;

  const word* index = (const word*)index_raw + s * index_stride;
  d += s * d_stride;
  b += s * b_stride;

  for (int i = tid; i < 2 * N; i += nthreads) sm.state[i] = T();
  if (MAPS) {
    const int* my_maps = maps + s * maps_stride;
    for (long long i = tid; i < (long long)K * N; i += nthreads) sm.maps[i] = my_maps[i];
  }

  T x[E];
  int track_s[E];
  T track_d[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int lane = e * nthreads + tid;
    x[e] = T();
    if (!TRACK && lane < N) {
      if (c > 0) {
        x[e] = chain[((s * (chunks - 1)) + c - 1) * (long long)N + lane];
      } else if (x0 != nullptr) {
        x[e] = x0[s * x0_stride + lane];
      }
    }
    track_s[e] = lane < N ? lane : -1;  // a lane past N has no mass to track
    track_d[e] = one_of(T());
  }

  word ring_i[P][EI];
  T ring_d[P][E], ring_b[P][E];
#define PD_SCAN_LOAD(q, i_)                                           \
  do {                                                                \
    const int i_load = (i_);                                          \
    if (i_load < count) {                                             \
      const long long p_load = p0 + i_load;                                \
      const long long t_load = rev ? L - 1 - p_load : p_load;                        \
      if (MAPS) {                                                     \
        ring_i[q][0] = index[t_load];                                      \
      } else {                                                        \
        _Pragma("unroll") for (int e = 0; e < E; ++e) {                          \
          const int lane = e * nthreads + tid;                        \
          if (lane < N) ring_i[q][e] = index[t_load * N + lane];           \
        }                                                             \
      }                                                               \
      _Pragma("unroll") for (int e = 0; e < E; ++e) {                            \
        const int lane = e * nthreads + tid;                          \
        if (lane < N) {                                               \
          ring_d[q][e] = d[t_load * N + lane];                             \
          ring_b[q][e] = b[t_load * N + lane];                             \
        }                                                             \
      }                                                               \
    }                                                                 \
  } while (0)
#pragma unroll
  for (int q = 0; q < P; ++q) PD_SCAN_LOAD(q, q);
  team_sync();  // the zeroed buffers and the dictionary

  for (int base = 0; base < count; base += P) {
#pragma unroll
    for (int q = 0; q < P; ++q) {
      const int i = base + q;
      if (i < count) {
        const long long p = p0 + i;
        const long long t = rev ? L - 1 - p : p;
        T* buf = sm.state + (i & 1) * N;
        int sig[E];
        T dv[E], bv[E], y[E];
        int sel = -1;
        if (MAPS) sel = (int)ring_i[q][0];
        const bool sel_ok = sel >= 0 && sel < K;
#pragma unroll
        for (int e = 0; e < E; ++e) {
          const int lane = e * nthreads + tid;
          if (MAPS) {
            sig[e] = (sel_ok && lane < N) ? sm.maps[sel * N + lane] : -1;
          } else {
            sig[e] = lane_of<IW>(ring_i[q][MAPS ? 0 : e], is_signed, N);
          }
          dv[e] = conj_if(ring_d[q][e], conj);
          bv[e] = ring_b[q][e];
          y[e] = pre_add ? add(x[e], bv[e]) : x[e];
        }
        PD_SCAN_LOAD(q, i + P);  // refill this slot P steps ahead

        if (KIND == GATHER) {
          // (A y)[i] = d[i] y[sigma[i]]
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * nthreads + tid;
            if (lane < N) {
              buf[lane] = y[e];
              if (TRACK) {
                sm.track_s[(i & 1) * N + lane] = track_s[e];
                sm.track_d[(i & 1) * N + lane] = track_d[e];
              }
            }
          }
          team_sync();
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * nthreads + tid;
            if (lane < N) {
              const int j = sig[e];
              x[e] = j >= 0 ? mul(dv[e], buf[j]) : nan_of(T());
              if (!pre_add) x[e] = add(x[e], bv[e]);
              if (TRACK) {
                track_s[e] = j >= 0 ? sm.track_s[(i & 1) * N + j] : -1;
                track_d[e] = j >= 0 ? mul(dv[e], sm.track_d[(i & 1) * N + j]) : nan_of(T());
              }
            }
          }
        } else {
          // (A y)[i] = sum over j with sigma[j] = i of d[j] y[j]
          T v[E];
#pragma unroll
          for (int e = 0; e < E; ++e) v[e] = mul(dv[e], y[e]);
          scatter_add_sync<T, E>(buf, sig, v, N, det);
          if (TRACK) {
            // the mass of source lane j moves to sigma[pos] with factor d[pos]
#pragma unroll
            for (int e = 0; e < E; ++e) {
              const int pos = track_s[e];
              if (pos >= 0) {
                int next;
                if (MAPS) {
                  next = sel_ok ? sm.maps[sel * N + pos] : -1;
                } else {
                  next = lane_of<IW>(index[t * N + pos], is_signed, N);
                }
                track_d[e] = next >= 0 ? mul(conj_if(d[t * N + pos], conj), track_d[e]) : nan_of(T());
                track_s[e] = next;
              }
            }
          }
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * nthreads + tid;
            if (lane < N) {
              x[e] = pre_add ? buf[lane] : add(buf[lane], bv[e]);
              buf[lane] = T();
            }
          }
        }
        if (!TRACK) {
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * nthreads + tid;
            if (lane < N) out[s * out_stride + t * N + lane] = x[e];
          }
        }
      }
    }
  }
  if (TRACK) {
    const long long row = (s * units_per_seq + c) * (long long)N;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int lane = e * nthreads + tid;
      if (lane < N) {
        agg_index[row + lane] = track_s[e];
        agg_d[row + lane] = track_d[e];
        agg_b[row + lane] = x[e];
      }
    }
  }
}

// The fused VJP over one chunk of the adjoint's positions [q0, q1): q runs the
// forward's time order backwards (t = L-1-q, or t = q when the forward ran in
// reverse).  Per step, with the carry h = A_{next}^T g_{next}:
//   g = grad_x[t] + h;  grad_b[t] = g;  h = A_t^T g;
//   grad_d[t] = g[sigma] * x_prev (scatter) or g * x_prev[sigma] (gather)
// (d and x_prev conjugated with F_CONJ).  Chunk c > 0 starts from chain[s, c-1];
// the chunk that holds the forward's first step writes grad_x0 = h.
template <typename T, int IW, int MODE, bool MAPS, int E>
__global__ void __launch_bounds__(team_threads<E>::value) pd_vjp(
    const void* __restrict__ index_raw, long long index_stride,
    const int* __restrict__ maps, long long maps_stride, int K,
    const T* __restrict__ d, long long d_stride,
    const T* __restrict__ x, long long x_stride,
    const T* __restrict__ grad_x, long long grad_x_stride,
    const T* __restrict__ x0, long long x0_stride,
    const T* __restrict__ chain,
    T* __restrict__ grad_d, long long grad_d_stride,
    T* __restrict__ grad_b, long long grad_b_stride,
    T* __restrict__ grad_x0, long long grad_x0_stride,
    int L, int N, int chunk_len, int chunks, int flags) {
  typedef typename index_word<IW>::type word;
  constexpr int P = E <= 2 ? 6 : (E <= 4 ? 3 : 2);
  constexpr int EI = MAPS ? 1 : E;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* exchange = (T*)smem_raw;                // 2 N: g (scatter mode) or the carry sums (gather)
  T* previous = exchange + 2 * N;            // 2 N: conj(x_prev) (gather mode)
  int* dict = (int*)(previous + 2 * N);      // K N

  const int tid = threadIdx.x, nthreads = blockDim.x;
  const long long s = blockIdx.x / chunks;
  const int c = blockIdx.x % chunks;
  const int q0 = c * chunk_len;
  const int q1 = min(L, q0 + chunk_len);
  const int count = q1 - q0;
  const bool rev = flags & F_REVERSE, conj = flags & F_CONJ;
  const bool det = flags & F_DETERMINISTIC, is_signed = flags & F_SIGNED_INDEX;

  const word* index = (const word*)index_raw + s * index_stride;
  d += s * d_stride;
  x += s * x_stride;
  grad_x += s * grad_x_stride;

  for (int i = tid; i < 2 * N; i += nthreads) exchange[i] = T();
  if (MAPS) {
    const int* my_maps = maps + s * maps_stride;
    for (long long i = tid; i < (long long)K * N; i += nthreads) dict[i] = my_maps[i];
  }

  T h[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int lane = e * nthreads + tid;
    h[e] = (c > 0 && lane < N) ? chain[((s * (chunks - 1)) + c - 1) * (long long)N + lane] : T();
  }

  word ring_i[P][EI];
  T ring_d[P][E], ring_g[P][E], ring_x[P][E];
#define PD_VJP_LOAD(slot, i_)                                                                   \
  do {                                                                                          \
    const int i_load = (i_);                                                                    \
    if (i_load < count) {                                                                       \
      const long long q_load = q0 + i_load;                                                             \
      const long long t_load = rev ? q_load : L - 1 - q_load;                                                  \
      const bool has_prev = q_load < L - 1;                                                          \
      const long long t_prev = rev ? t_load + 1 : t_load - 1;                                             \
      if (MAPS) {                                                                               \
        ring_i[slot][0] = index[t_load];                                                             \
      } else {                                                                                  \
        _Pragma("unroll") for (int e = 0; e < E; ++e) {                          \
          const int lane = e * nthreads + tid;                                                  \
          if (lane < N) ring_i[slot][e] = index[t_load * N + lane];                                  \
        }                                                                                       \
      }                                                                                         \
      _Pragma("unroll") for (int e = 0; e < E; ++e) {                            \
        const int lane = e * nthreads + tid;                                                    \
        if (lane < N) {                                                                         \
          ring_d[slot][e] = d[t_load * N + lane];                                                    \
          ring_g[slot][e] = grad_x[t_load * N + lane];                                               \
          ring_x[slot][e] = has_prev ? x[t_prev * N + lane]                                     \
                                     : (x0 != nullptr ? x0[s * x0_stride + lane] : T());        \
        }                                                                                       \
      }                                                                                         \
    }                                                                                           \
  } while (0)
#pragma unroll
  for (int q = 0; q < P; ++q) PD_VJP_LOAD(q, q);
  team_sync();

  for (int base = 0; base < count; base += P) {
#pragma unroll
    for (int slot = 0; slot < P; ++slot) {
      const int i = base + slot;
      if (i < count) {
        const long long q = q0 + i;
        const long long t = rev ? q : L - 1 - q;
        T* buf = exchange + (i & 1) * N;
        T* prev_buf = previous + (i & 1) * N;
        int sig[E];
        T dv[E], g[E], xp[E];
        int sel = MAPS ? (int)ring_i[slot][0] : -1;
        const bool sel_ok = sel >= 0 && sel < K;
#pragma unroll
        for (int e = 0; e < E; ++e) {
          const int lane = e * nthreads + tid;
          if (MAPS) {
            sig[e] = (sel_ok && lane < N) ? dict[sel * N + lane] : -1;
          } else {
            sig[e] = lane_of<IW>(ring_i[slot][MAPS ? 0 : e], is_signed, N);
          }
          dv[e] = conj_if(ring_d[slot][e], conj);
          g[e] = add(ring_g[slot][e], h[e]);
          xp[e] = conj_if(ring_x[slot][e], conj);
        }
        PD_VJP_LOAD(slot, i + P);
        T gd[E];
        if (MODE == SCATTER) {
          // A^T is a gather: h[j] = d[j] g[sigma[j]]
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * nthreads + tid;
            if (lane < N) buf[lane] = g[e];
          }
          team_sync();
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * nthreads + tid;
            if (lane < N) {
              const T gs = sig[e] >= 0 ? buf[sig[e]] : nan_of(T());
              h[e] = mul(dv[e], gs);
              gd[e] = mul(gs, xp[e]);
            }
          }
        } else {
          // A^T is a scatter: h[sigma[i]] += d[i] g[i]
          T v[E];
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * nthreads + tid;
            v[e] = mul(dv[e], g[e]);
            if (lane < N) prev_buf[lane] = xp[e];
          }
          scatter_add_sync<T, E>(buf, sig, v, N, det);
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int lane = e * nthreads + tid;
            if (lane < N) {
              h[e] = buf[lane];
              buf[lane] = T();
              gd[e] = mul(g[e], sig[e] >= 0 ? prev_buf[sig[e]] : nan_of(T()));
            }
          }
        }
#pragma unroll
        for (int e = 0; e < E; ++e) {
          const int lane = e * nthreads + tid;
          if (lane < N) {
            grad_b[s * grad_b_stride + t * N + lane] = g[e];
            grad_d[s * grad_d_stride + t * N + lane] = gd[e];
          }
        }
      }
    }
  }
  if (grad_x0 != nullptr && q1 == L) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int lane = e * nthreads + tid;
      if (lane < N) grad_x0[s * grad_x0_stride + lane] = h[e];
    }
  }
}

}  // namespace pd
