// The straight-through dictionary form's contractions (pdscan.ste, Flash PD-SSM).
//
// The loss's gradient with respect to step t's transition is rank one, u_t v_t^T.
// With k_t the step's dictionary entry and sigma_k(j) the row of column j:
//   grad_w[s, t, k]    = sum_j u[s, t, sigma_k(j)] v[s, t, j]
//   grad_q[s, k, i, j] = sum over the steps t of sequence s with k_t = k of u[s, t, i] v[s, t, j]
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

// Block (s * K + k, tile): PAIRS consecutive (i, j) = (p / N, p % N) of that entry's
// N x N sum, PAIRS / blockDim.x per thread, over every step of sequence s.  The
// selector test is uniform over the block, so steps of other entries cost one read.
// sel: int32 (S or 1, L) at sel_stride; out: (S, K, N, N).
template <typename T, int PER_THREAD>
__global__ void pd_dict_grad_q(const T* __restrict__ u, const T* __restrict__ v, const int* __restrict__ sel,
                               long long sel_stride, int L, int K, int N, T* __restrict__ out) {
  const long long s = blockIdx.x / K;
  const int k = blockIdx.x % K;
  const long long pairs = (long long)N * N;
  const long long base = (long long)blockIdx.y * blockDim.x * PER_THREAD + threadIdx.x;
  int ii[PER_THREAD], jj[PER_THREAD];
  T acc[PER_THREAD];
#pragma unroll
  for (int q = 0; q < PER_THREAD; ++q) {
    const long long p = base + (long long)q * blockDim.x;
    ii[q] = p < pairs ? (int)(p / N) : -1;
    jj[q] = p < pairs ? (int)(p % N) : -1;
    acc[q] = T();
  }
  const int* sr = sel + s * sel_stride;
  const T* us = u + s * L * (long long)N;
  const T* vs = v + s * L * (long long)N;
  for (int t = 0; t < L; ++t) {
    if (sr[t] != k) continue;
    const T* ut = us + (long long)t * N;
    const T* vt = vs + (long long)t * N;
#pragma unroll
    for (int q = 0; q < PER_THREAD; ++q)
      if (ii[q] >= 0) acc[q] = add(acc[q], mul(ut[ii[q]], vt[jj[q]]));
  }
  T* o = out + (s * K + k) * pairs;
#pragma unroll
  for (int q = 0; q < PER_THREAD; ++q)
    if (ii[q] >= 0) o[base + (long long)q * blockDim.x] = acc[q];
}

}  // namespace pd
