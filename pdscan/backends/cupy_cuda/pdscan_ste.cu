// The straight-through dictionary form's contractions (pdscan.ste, Flash PD-SSM).
//
// The loss's gradient with respect to step t's transition is rank one, u_t v_t^T.
// With k_t the step's dictionary entry and sigma_k(j) the row of column j:
//   grad_w[s, t, k]    = sum_j u[s, t, sigma_k(j)] v[s, t, j]
//   grad_q[g, k, i, j] = sum over the steps t with k_t = k of the sequences s sharing
//                        dictionary g of u[s, t, i] v[s, t, j]
// Each is one launch reading u and v once, where the array form expands them K-fold
// (memory) or loops over k (launches).  A dictionary entry outside [0, N) contributes
// nothing and a selector outside [0, K) matches no k: no read leaves the arrays.
#include "pdscan_common.cuh"

namespace pd {

// One warp per (sequence, step) row, blockDim.x / 32 rows a block.  u, v: (rows, N)
// C-contiguous; maps: int32 (S or 1, K, N) at maps_stride per sequence; out: (rows, K).
template <typename T>
__global__ void pd_dict_grad_w(const T* __restrict__ u, const T* __restrict__ v, const int* __restrict__ maps,
                               long long maps_stride, long long rows, int L, int K, int N, T* __restrict__ out) {
  const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps leave together
  const int lane = threadIdx.x & 31;
  const T* ur = u + row * N;
  const T* vr = v + row * N;
  const int* m = maps + (row / L) * maps_stride;
  for (int k = 0; k < K; ++k) {
    T acc = T();
    for (int j = lane; j < N; j += 32) {
      const int i = m[(long long)k * N + j];
      if (i >= 0 && i < N) acc = add(acc, mul(ur[i], vr[j]));
    }
#pragma unroll
    for (int by = 16; by > 0; by >>= 1) acc = add(acc, shfl(acc, lane ^ by));  // butterfly
    if (lane == 0) out[row * K + k] = acc;
  }
}

// Block (g * K + k, tile): PAIRS consecutive (i, j) = (p / N, p % N) of that entry's
// N x N sum, PAIRS / blockDim.x per thread, over every step of the M sequences
// members[g, :] that share dictionary g, in that order (M = 1 with a dictionary per
// sequence).  The block first marks which of the next blockDim.x (sequence, step)
// pairs chose k, with one coalesced read of their selectors, then sums over the
// marked ones only: steps of other entries cost a shared-memory read.
// sel: int32 (S or 1, L) at sel_stride; members: (G, M); out: (G, K, N, N).
constexpr int DICT_GRAD_Q_THREADS = 256;

template <typename T, int PER_THREAD>
__global__ void __launch_bounds__(DICT_GRAD_Q_THREADS) pd_dict_grad_q(
    const T* __restrict__ u, const T* __restrict__ v, const int* __restrict__ sel, long long sel_stride,
    const long long* __restrict__ members, int M, int L, int K, int N, T* __restrict__ out) {
  __shared__ long long chose[DICT_GRAD_Q_THREADS];  // the (sequence, step) row, or -1
  const long long g = blockIdx.x / K;
  const int k = blockIdx.x % K;
  const long long pairs = (long long)N * N;
  const long long base = (long long)blockIdx.y * DICT_GRAD_Q_THREADS * PER_THREAD + threadIdx.x;
  int ii[PER_THREAD], jj[PER_THREAD];
  T acc[PER_THREAD];
#pragma unroll
  for (int q = 0; q < PER_THREAD; ++q) {
    const long long p = base + (long long)q * DICT_GRAD_Q_THREADS;
    ii[q] = p < pairs ? (int)(p / N) : -1;
    jj[q] = p < pairs ? (int)(p % N) : -1;
    acc[q] = T();
  }
  const long long* mine = members + g * M;
  const long long steps = (long long)M * L;
  for (long long first = 0; first < steps; first += DICT_GRAD_Q_THREADS) {
    __syncthreads();  // the previous marks are read
    const long long at = first + threadIdx.x;
    long long row = -1;
    if (at < steps) {
      const long long s = mine[at / L];
      const int t = (int)(at % L);
      if (sel[s * sel_stride + t] == k) row = s * L + t;
    }
    chose[threadIdx.x] = row;
    __syncthreads();
    const int n = (int)min((long long)DICT_GRAD_Q_THREADS, steps - first);
    for (int c = 0; c < n; ++c) {
      const long long r = chose[c];
      if (r < 0) continue;
      const T* ut = u + r * N;
      const T* vt = v + r * N;
#pragma unroll
      for (int q = 0; q < PER_THREAD; ++q)
        if (ii[q] >= 0) acc[q] = add(acc[q], mul(ut[ii[q]], vt[jj[q]]));
    }
  }
  T* o = out + (g * K + k) * pairs;
#pragma unroll
  for (int q = 0; q < PER_THREAD; ++q)
    if (ii[q] >= 0) o[base + (long long)q * DICT_GRAD_Q_THREADS] = acc[q];
}

}  // namespace pd
