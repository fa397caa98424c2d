// Value types, index decoding and the per-step exchange primitives shared by the
// pdscan kernels.  Compiled by NVRTC (through CuPy) and by nvcc in CI, so it uses
// only the CUDA builtins (no CUDA headers).
#pragma once

namespace pd {

template <typename R>
struct alignas(2 * sizeof(R)) complex_t {
  R re, im;
};

// the recurrence's kind: which way A = (sigma, d) moves values
enum { SCATTER = 0, GATHER = 1 };

// run-time flags (uniform over a launch)
enum : int {
  F_REVERSE = 1,        // time runs from L-1 down to 0
  F_PRE_ADD = 2,        // y = A (y + b) instead of A y + b (the adjoint's carry recurrence)
  F_CONJ = 4,           // use conj(d) (and conj(x) in the VJP): PyTorch's convention
  F_DETERMINISTIC = 8,  // scatter without float atomics: fixed summation order
  F_SIGNED_INDEX = 16,  // index words are signed (else unsigned)
  F_FOLD_CHAIN = 32,    // pipelined replay: a chunk first applies the summaries of the chunks before it
};

// shared-memory regions start at multiples of 16 bytes (host too: the layouts are
// checked against the launcher's on the host, tests/test_cuda_launches.py)
__host__ __device__ __forceinline__ long long round16(long long bytes) { return (bytes + 15) & ~15LL; }

// ------------------------------------------------------------------ arithmetic
__device__ __forceinline__ float nan_of(float) { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ double nan_of(double) { return __longlong_as_double(0x7fffffffffffffffLL); }
template <typename R>
__device__ __forceinline__ complex_t<R> nan_of(complex_t<R>) {
  R n = nan_of(R());
  return {n, n};
}
__device__ __forceinline__ float one_of(float) { return 1.0f; }
__device__ __forceinline__ double one_of(double) { return 1.0; }
template <typename R>
__device__ __forceinline__ complex_t<R> one_of(complex_t<R>) { return {R(1), R(0)}; }

__device__ __forceinline__ float mul(float a, float b) { return a * b; }
__device__ __forceinline__ double mul(double a, double b) { return a * b; }
template <typename R>
__device__ __forceinline__ complex_t<R> mul(complex_t<R> a, complex_t<R> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
__device__ __forceinline__ float add(float a, float b) { return a + b; }
__device__ __forceinline__ double add(double a, double b) { return a + b; }
template <typename R>
__device__ __forceinline__ complex_t<R> add(complex_t<R> a, complex_t<R> b) {
  return {a.re + b.re, a.im + b.im};
}
// A value's type in double precision (complex stays complex) and the conversions to
// and from it: the paths of pdscan_pipe_chase.cuh sum hundreds of weighted terms there.
template <typename T>
struct in_double {
  typedef double type;
};
template <typename R>
struct in_double<complex_t<R>> {
  typedef complex_t<double> type;
};
__device__ __forceinline__ double to_double(float a) { return a; }
__device__ __forceinline__ double to_double(double a) { return a; }
template <typename R>
__device__ __forceinline__ complex_t<double> to_double(complex_t<R> a) {
  return {a.re, a.im};
}
__device__ __forceinline__ void from_double(float& to, double a) { to = (float)a; }
__device__ __forceinline__ void from_double(double& to, double a) { to = a; }
template <typename R>
__device__ __forceinline__ void from_double(complex_t<R>& to, complex_t<double> a) {
  to = {(R)a.re, (R)a.im};
}
__device__ __forceinline__ float conj_if(float a, bool) { return a; }
__device__ __forceinline__ double conj_if(double a, bool) { return a; }
template <typename R>
__device__ __forceinline__ complex_t<R> conj_if(complex_t<R> a, bool c) {
  return {a.re, c ? -a.im : a.im};
}

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }
template <typename R>
__device__ __forceinline__ void atomic_add(complex_t<R>* p, complex_t<R> v) {
  atomicAdd(&p->re, v.re);
  atomicAdd(&p->im, v.im);
}
#ifdef PD_CAS64
// complex64 as one 64-bit compare-and-swap (a tuning variant: shared-memory float
// atomics are compare-and-swap loops on sm_90 too, but this measured slower on the
// H100 at the benchmark shapes with collisions; docs/benchmarks.md).
template <>
__device__ __forceinline__ void atomic_add(complex_t<float>* p, complex_t<float> v) {
  unsigned long long* word = (unsigned long long*)p;
  unsigned long long seen = *word, expected;
  do {
    expected = seen;
    const float re = __uint_as_float((unsigned)expected) + v.re;
    const float im = __uint_as_float((unsigned)(expected >> 32)) + v.im;
    const unsigned long long sum = (unsigned long long)__float_as_uint(re) |
                                   ((unsigned long long)__float_as_uint(im) << 32);
    seen = atomicCAS(word, expected, sum);
  } while (seen != expected);
}
#endif

__device__ __forceinline__ float shfl(float v, int src) { return __shfl_sync(0xffffffffu, v, src); }
__device__ __forceinline__ double shfl(double v, int src) { return __shfl_sync(0xffffffffu, v, src); }
template <typename R>
__device__ __forceinline__ complex_t<R> shfl(complex_t<R> v, int src) {
  return {shfl(v.re, src), shfl(v.im, src)};
}

// ------------------------------------------------------------------ index words
template <int IW> struct index_word;
template <> struct index_word<1> { typedef unsigned char type; };
template <> struct index_word<2> { typedef unsigned short type; };
template <> struct index_word<4> { typedef unsigned int type; };
template <> struct index_word<8> { typedef unsigned long long type; };

// The lane an index word names, or -1 when it is outside [0, n).  8-byte words read
// as signed: an unsigned value >= 2^63 is out of range either way.  One unsigned
// comparison: a negative word, widened, is larger than any n.
template <int IW>
__device__ __forceinline__ int lane_of(typename index_word<IW>::type raw, bool is_signed, int n) {
  if (IW == 8) return (unsigned long long)raw < (unsigned long long)n ? (int)raw : -1;
  unsigned v = (unsigned)raw;
  if (is_signed) v = IW == 1 ? (unsigned)(int)(signed char)raw : IW == 2 ? (unsigned)(int)(short)raw : v;
  return v < (unsigned)n ? (int)v : -1;
}

// one barrier for the team: a warp needs no block-wide barrier
__device__ __forceinline__ void team_sync() {
#ifdef PD_BLOCK_SYNC_ONLY
  __syncthreads();
  return;
#endif
  if (blockDim.x == 32) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

// The deterministic scatter: within a warp the lanes that share a target are
// summed in lane order (match_any + shuffles) and added by the group's first
// lane; the E rounds and the warps take turns in a fixed order.  Kept out of line:
// inlined into every step of the unrolled loops it would multiply the code (and
// the compile time) of every scatter kernel for an option most calls don't use.
template <typename T, int E>
__device__ __noinline__ void scatter_add_ordered(T* acc, const int* target, const T* value, int n) {
  const int nthreads = blockDim.x;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane_id = tid & 31;
  const int warps = nthreads >> 5;
  for (int turn = 0; turn < warps; ++turn) {
    if (warp == turn) {
      for (int e = 0; e < E; ++e) {
        const int lane = e * nthreads + tid;
        const bool active = lane < n;
        const int t = target[e];
        const int key = !active ? -2 - lane_id : (t >= 0 ? t : lane);
        const T v = !active ? T() : (t >= 0 ? value[e] : nan_of(T()));
        const unsigned group = __match_any_sync(0xffffffffu, key);
        const int rounds = __reduce_max_sync(0xffffffffu, (unsigned)__popc(group));
        unsigned rest = group;
        T sum = T();
        for (int r = 0; r < rounds; ++r) {
          const int src = rest ? __ffs(rest) - 1 : lane_id;
          const T from = shfl(v, src);
          if (rest) {
            sum = add(sum, from);
            rest &= rest - 1;
          }
        }
        if (active && lane_id == __ffs(group) - 1) acc[key] = add(acc[key], sum);
        __syncwarp();
      }
    }
    if (warps > 1) __syncthreads();
  }
  if (warps == 1) __syncwarp();
}

// acc[target[e]] += value[e] for the E lanes of every thread of the team, then a
// barrier.  An invalid target (-1) adds NaN to the thread's own lane so that the
// step's state shows it.  Fast path: shared-memory float atomics (the order of
// colliding additions varies); ``deterministic``: scatter_add_ordered.
template <typename T, int E>
__device__ __forceinline__ void scatter_add_sync(T* acc, const int (&target)[E], const T (&value)[E],
                                                 int n, bool deterministic) {
  if (deterministic) {
    scatter_add_ordered<T, E>(acc, target, value, n);
    return;
  }
  const int nthreads = blockDim.x;
  const int tid = threadIdx.x;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int lane = e * nthreads + tid;
    if (lane < n) {
      const int t = target[e];
      atomic_add(acc + (t >= 0 ? t : lane), t >= 0 ? value[e] : nan_of(T()));
    }
  }
  team_sync();
}

}  // namespace pd
