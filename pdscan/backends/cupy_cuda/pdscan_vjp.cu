// The VJP's element-wise parts.  Where the pipelined scan applies (N <= 128) the VJP
// (_launch_grads.run_vjp_pipe) runs its carry g (grad_b), a scan of A_t^T against time,
// through pd_scan_pipe, one step shorter than the sequence; these kernels add what
// needs only g, x and the index, every row independent of the others:
//   grad_d[t, j] = g_t[sigma_t(j)] x_prev[j]   (scatter mode)
//   grad_d[t, i] = g_t[i] x_prev[sigma_t(i)]   (gather mode)
//   grad_x0 = A_first^T g_first
// The carry's scan writes grad_d of every step but the first itself (GRAD_D), so
// pd_vjp_grad_d, every step's, runs only where the launcher is told not to
// (``vjp_fuse_grad_d``, for benchmarks); pd_vjp_first_step writes the first.
// with x_prev the state before step t in the recurrence's order (x0, or zero, before
// the first step), d and x_prev conjugated under F_CONJ, NaN where sigma is out of
// range, as pd_vjp writes them.
#include "pdscan_common.cuh"

namespace pd {

constexpr int VJP_ROW_WARPS = 8;  // a warp per row (s, t): VJP_ROW_WARPS rows a block
constexpr int VJP_ROW_LANES = 4;  // lanes a thread of pd_vjp_grad_d takes at a time

// sigma_t of sequence s, lane by lane (-1 out of range): from the step's index words,
// or (MAPS) from its selector's dictionary entry, the selector read once (the
// launcher made bad dictionary entries -1)
template <int IW, bool MAPS>
struct step_sigma {
  typedef typename index_word<IW>::type word;
  const void* row;  // MAPS: the dictionary entry, or nullptr for a selector out of range
  int N;
  bool is_signed;
  __device__ step_sigma(const void* index_raw, long long index_stride, const int* maps, long long maps_stride,
                        int K, long long s, long long t, int N_, bool is_signed_)
      : N(N_), is_signed(is_signed_) {
    if (MAPS) {
      const int sel = ((const int*)index_raw)[s * index_stride + t];
      row = sel >= 0 && sel < K ? maps + s * maps_stride + (long long)sel * N : nullptr;
    } else {
      row = (const word*)index_raw + s * index_stride + t * N;
    }
  }
  __device__ int operator()(int lane) const {
    if (MAPS) {
      if (row == nullptr) return -1;
      const int v = ((const int*)row)[lane];
      return (unsigned)v < (unsigned)N ? v : -1;
    }
    return lane_of<IW>(((const word*)row)[lane], is_signed, N);
  }
};

// A warp per row (s, t), VJP_ROW_LANES lanes a thread at a time: the loads that need
// no index go out with the index's, those the index addresses all together after
// them (two rounds of memory latency per row, not two per lane).
template <typename T, int IW, int MODE, bool MAPS>
__global__ void __launch_bounds__(32 * VJP_ROW_WARPS) pd_vjp_grad_d(
    const void* __restrict__ index_raw, long long index_stride,
    const int* __restrict__ maps, long long maps_stride, int K,
    const T* __restrict__ g, long long g_stride,
    const T* __restrict__ x, long long x_stride,
    const T* __restrict__ x0, long long x0_stride,
    T* __restrict__ grad_d, long long grad_d_stride,
    long long rows, int L, int N, int flags) {
  constexpr int R = VJP_ROW_LANES;
  const bool rev = flags & F_REVERSE, conj = flags & F_CONJ, is_signed = flags & F_SIGNED_INDEX;
  const int lane_id = threadIdx.x & 31;
  const long long warps = (long long)gridDim.x * VJP_ROW_WARPS;
  for (long long row = (long long)blockIdx.x * VJP_ROW_WARPS + (threadIdx.x >> 5); row < rows; row += warps) {
    const long long s = row / L, t = row % L;
    const bool first = rev ? t == L - 1 : t == 0;
    // the state before step t: x0 (or zero) at the first step
    const T* prev = first ? (x0 != nullptr ? x0 + s * x0_stride : nullptr)
                          : x + s * x_stride + (rev ? t + 1 : t - 1) * N;
    const T* g_row = g + s * g_stride + t * N;
    T* out = grad_d + s * grad_d_stride + t * N;
    const step_sigma<IW, MAPS> sigma(index_raw, index_stride, maps, maps_stride, K, s, t, N, is_signed);
    for (int base = 0; base < N; base += 32 * R) {
      int sig[R];
      T own[R];  // scatter: x_prev at the lane; gather: g at the lane
#pragma unroll
      for (int k = 0; k < R; ++k) {
        const int lane = base + 32 * k + lane_id;
        sig[k] = lane < N ? sigma(lane) : -1;
        if (MODE == SCATTER) {
          own[k] = lane < N && prev != nullptr ? prev[lane] : T();
        } else {
          own[k] = lane < N ? g_row[lane] : T();
        }
      }
      T far[R];  // scatter: g at sigma; gather: x_prev at sigma
#pragma unroll
      for (int k = 0; k < R; ++k) {
        const T* from = MODE == SCATTER ? g_row : prev;
        far[k] = sig[k] >= 0 && from != nullptr ? from[sig[k]] : T();
      }
#pragma unroll
      for (int k = 0; k < R; ++k) {
        const int lane = base + 32 * k + lane_id;
        if (lane < N) {
          const T g_v = MODE == SCATTER ? far[k] : own[k];
          const T x_v = conj_if(MODE == SCATTER ? own[k] : far[k], conj);
          out[lane] = sig[k] >= 0 ? mul(g_v, x_v) : nan_of(T());
        }
      }
    }
  }
}

// What the carry's scan, one step shorter than the sequence, leaves out, a block per
// sequence: g at the recurrence's last step (grad_x there, where the scan started
// from), and at its first step grad_d (where grad_d is not null: the scan wrote the
// other steps') and grad_x0 = A^T g (where grad_x0 is not null).  Gather mode's A^T is
// a scatter: each row sums its sources in lane order, so it is reproducible; a lane
// out of range puts NaN on its own row, as scatter_add_sync does.
template <typename T, int IW, int MODE, bool MAPS>
__global__ void pd_vjp_first_step(
    const void* __restrict__ index_raw, long long index_stride,
    const int* __restrict__ maps, long long maps_stride, int K,
    const T* __restrict__ d, long long d_stride,
    const T* __restrict__ grad_x, long long grad_x_stride,
    T* __restrict__ g, long long g_stride,
    const T* __restrict__ x0, long long x0_stride,
    T* __restrict__ grad_d, long long grad_d_stride,
    T* __restrict__ grad_x0, long long grad_x0_stride, int L, int N, int flags) {
  // Each region is padded to 16 bytes (the launcher's first_step_smem): ptxas may merge
  // the sum loop's last 4-byte loads of `target` into one wider load past the N-th
  // entry (compute-sanitizer memcheck flagged one at N = 37); the extra bytes are never
  // used
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* term = (T*)smem_raw;                                              // N: conj(d) g of each lane (gather)
  int* target = (int*)(smem_raw + round16((long long)sizeof(T) * N));  // N: sigma of each lane
  const bool rev = flags & F_REVERSE, conj = flags & F_CONJ, is_signed = flags & F_SIGNED_INDEX;
  const long long s = blockIdx.x;
  const long long t = rev ? L - 1 : 0, last = rev ? 0 : L - 1;
  for (int lane = threadIdx.x; lane < N; lane += blockDim.x)
    g[s * g_stride + last * N + lane] = grad_x[s * grad_x_stride + last * N + lane];
  // g at the first step: the scan's (another row than the one just written), or
  // grad_x itself when the two steps are one
  const T* g_row = L == 1 ? grad_x + s * grad_x_stride : g + s * g_stride + t * N;
  const T* d_row = d + s * d_stride + t * N;
  const T* x0_row = x0 != nullptr ? x0 + s * x0_stride : nullptr;
  const step_sigma<IW, MAPS> sigma(index_raw, index_stride, maps, maps_stride, K, s, t, N, is_signed);
  for (int lane = threadIdx.x; lane < N; lane += blockDim.x) {
    const int sig = sigma(lane);
    if (grad_d != nullptr) {
      // scatter: g at sigma times x0 at the lane; gather: g at the lane times x0 at sigma
      T g_v = T(), x_v = T();
      if (sig >= 0) g_v = g_row[MODE == SCATTER ? sig : lane];
      if (x0_row != nullptr && (MODE == SCATTER || sig >= 0)) x_v = x0_row[MODE == SCATTER ? lane : sig];
      grad_d[s * grad_d_stride + t * N + lane] = sig >= 0 ? mul(g_v, conj_if(x_v, conj)) : nan_of(T());
    }
    if (grad_x0 != nullptr) {
      const T dv = conj_if(d_row[lane], conj);
      if (MODE == SCATTER) {
        grad_x0[s * grad_x0_stride + lane] = sig >= 0 ? mul(dv, g_row[sig]) : nan_of(T());
      } else {
        term[lane] = mul(dv, g_row[lane]);
        target[lane] = sig;
      }
    }
  }
  if (MODE == SCATTER || grad_x0 == nullptr) return;
  __syncthreads();
  for (int row = threadIdx.x; row < N; row += blockDim.x) {
    T sum = target[row] < 0 ? nan_of(T()) : T();
    for (int lane = 0; lane < N; ++lane)
      if (target[lane] == row) sum = add(sum, term[lane]);
    grad_x0[s * grad_x0_stride + row] = sum;
  }
}

}  // namespace pd
