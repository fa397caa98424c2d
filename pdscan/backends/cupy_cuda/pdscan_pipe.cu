// The pipelined forward scan: one block per unit (a whole sequence, or one chunk
// of its time), of CW consumer warps and PIPE_PRODUCERS producer warps.
//
//   the producers (warps CW .. CW + PIPE_PRODUCERS - 1) take tiles of T steps in
//   turn (tile j goes to producer j % PIPE_PRODUCERS): each copies its tiles'
//   inputs (index words or selectors, d, b) into its PIPE_STAGES / PIPE_PRODUCERS
//   shared-memory slots with asynchronous copies, ahead of their use, and turns
//   each step's index into what the consumers read directly: in gather mode the
//   byte offset of every lane's source in the exchange buffer; in
//   scatter mode where each lane puts its term so that every row's terms lie in
//   planes, one per rank in lane order (pdscan_pipe_producer.cuh);
//   the consumer warps run the recurrence out of the slots and write x.
//
// Why: a one-warp team is bound by the instructions of its step, issued one after
// another (docs/benchmarks.md).  Here a consumer's step is only the exchange of
// the state: vector loads of its lanes' operands, a store, a barrier, one load per
// source (gather) or plane (scatter) and the arithmetic.  Decoding, range checks and
// collision bookkeeping run on the producers.  Consumer thread `tid` (0 .. 32 CW - 1) owns the E adjacent
// lanes E tid .. E tid + E - 1 (N <= 32 CW E), so its operands are single vector
// accesses; more consumer warps give each fewer lanes, at the price of a named
// barrier across them (STEP_BARRIER) instead of a warp barrier at every step.
// Scatter sums each row's sources in lane order: bitwise reproducible (a step with
// a row of more than RCAP sources, or an out-of-range index, walks the row's list
// of sources instead, in the same order).
//
// Three producers and, from N = 33 on, two consumer warps: building scatter
// tables takes about as long as running the steps, and the split of each side that
// measured fastest on the H200 (docs/benchmarks.md) keeps both sides busy.  The
// consumers and a slot's producer meet at named barriers: FULL(slot) once the
// slot's tile and tables are in place, EMPTY(slot) once the consumers are done
// with it (barrier 0 stays __syncthreads').  TRACK: write the unit's summary
// (transform, state from zero) instead of x, as pd_scan<..., TRACK> does.
//
// The VJP's carry runs through this scan too (_launch_grads.run_vjp_pipe).  F_CONJ: the
// producers conjugate each tile's d (and x_prev) in shared memory, off the consumers'
// path.  GRAD_D: the producers also stage x_prev, a row per step like b, and each step
// writes grad_d beside x, so that the VJP is one pass: in the gather kind (the carry of
// a scatter-mode VJP) grad_d = (the state it gathered) x_prev; in the scatter kind (of a
// gather-mode VJP) grad_d = (the state at the lane before the step) x_prev[sigma].  No
// F_PRE_ADD.
//
// F_FOLD_CHAIN (a replay, not TRACK, not MAPS): chunk c starts from x0 and first runs c
// steps whose transforms and b are the summaries of chunks 0 .. c - 1 (agg_*, written by
// the TRACK launch before), instead of reading its start state from the scan of the
// summaries (chain).  The steps are those that scan would run one after another, so the
// states are bitwise the same, and the launch between is gone.  Those steps come first
// in their own tiles (summary tiles), in the summaries' order, whatever the direction of
// the chunk's own; what they write lands on the chunk's first row, which its first step
// overwrites.
//
// CHASE, a third kind for gather mode's chunk summaries (TRACK): the consumers follow
// each lane's path back through the unit instead of exchanging the state at every step
// (pdscan_pipe_chase.cuh); the producers copy its tiles last first (and conjugate),
// with no tables.
#include "pdscan_common.cuh"
#include "pdscan_pipe_producer.cuh"
#include "pdscan_pipe_planes.cuh"
#include "pdscan_pipe_chase.cuh"

namespace pd {

// Shared memory of a block, mirrored by the launcher's pipe_smem().  Rows of lanes
// are NB = N rounded up to E entries, their pitch a multiple of 16 bytes.
//   slot (PIPE_STAGES): [index words | d rows | b rows | GRAD_D: x_prev rows | gather: offsets rows
//                        | chase: no tables
//                        | scatter: rows of where each lane stores (u16), then the walk's
//                                   lists (row starts, order: u8; lanes out of range: W words)
//                                   | terms]
//   [maps K N] [their tables, K + 1 entries (entry K: a selector out of range)]
//   [exchange, 2 halves: gather: NB + 2 entries (NB stays 0, NB + 1 NaN);
//                        scatter: RCAP planes of NB rows, NB lane entries (zero between steps);
//                        chase: none]
//   [tracking (gather summaries): 2 x (NB + 2) values, 2 x (NB + 2) lanes]
template <typename T, int IW, int KIND, bool MAPS, int E, int CW, bool TRACK, bool GRAD_D>
struct pipe_smem {
  static constexpr int VALUE_ROWS = GRAD_D ? 3 : 2;  // d, b (and x_prev) rows of a step
  static constexpr int W = E * CW;  // 32-lane groups of a row's lanes
  typedef typename index_word<IW>::type word;
  int NB, tile_len, K, exchange_entries;
  // byte sizes and offsets within the block's shared memory: 32-bit, so that the
  // consumer's per-step address arithmetic stays 32-bit
  int values_pitch, step_table_bytes, index_bytes, values_bytes, slot_bytes, exchange_stride;
  unsigned char* slots;
  int* maps;
  unsigned char* map_tables;
  unsigned char* exchange;
  unsigned char* track_d;  // 2 halves of round16(sizeof(T) (NB + 2)) bytes
  unsigned char* track_s;  // 2 halves of round16(4 (NB + 2)) bytes
  unsigned char* end;      // past the last region: end - p is the launcher's pipe_smem()

  // (host too: tests/test_cuda_launches.py checks the launcher's mirror against it)
  __host__ __device__ pipe_smem(unsigned char* p, int tile_len_, int N, int K_) : tile_len(tile_len_), K(K_) {
    NB = (N + E - 1) / E * E;
    values_pitch = (int)round16((long long)sizeof(T) * NB);
    // a step's table: gather: offsets; scatter: where each lane stores, the walk's lists
    step_table_bytes = (int)(KIND == GATHER ? round16(4LL * NB) : KIND == CHASE ? 0 : scatter_table_bytes(NB, W));
    index_bytes = (int)round16(MAPS ? 4LL * tile_len : (long long)IW * tile_len * N);
    values_bytes = values_pitch * tile_len;
    slot_bytes = index_bytes + VALUE_ROWS * values_bytes;
    if (!MAPS) slot_bytes += step_table_bytes * tile_len + (KIND == SCATTER ? (int)round16(tile_len) : 0);
    slots = p;
    p += PIPE_STAGES * slot_bytes;
    maps = (int*)p;
    map_tables = p + round16(4LL * K * N);
    if (MAPS) p = map_tables + step_table_bytes * (K + 1) + (KIND == SCATTER ? round16(K + 1) : 0);
    exchange = p;
    exchange_entries = KIND == GATHER ? NB + 2 : KIND == CHASE ? 0 : (int)scatter_exchange_entries(NB);
    exchange_stride = (int)round16((long long)sizeof(T) * exchange_entries);
    p += 2 * exchange_stride;
    track_d = p;
    track_s = p + 2 * exchange_stride;
    if (TRACK && KIND == GATHER) p += 2 * exchange_stride + 2 * round16(4LL * (NB + 2));  // NB + 2 entries
    end = p;
  }
  __device__ unsigned char* slot(int s) const { return slots + s * slot_bytes; }
  __device__ word* index(int s) const { return (word*)slot(s); }
  __device__ T* d(int s) const { return (T*)(slot(s) + index_bytes); }
  __device__ T* b(int s) const { return (T*)(slot(s) + index_bytes + values_bytes); }
  __device__ T* x_prev(int s) const { return (T*)(slot(s) + index_bytes + 2 * values_bytes); }
  // the table of step r of slot s and the steps' terms; those of dictionary entry k
  __device__ unsigned char* table(int s, int r) const {
    return slot(s) + index_bytes + VALUE_ROWS * values_bytes + r * step_table_bytes;
  }
  __device__ unsigned char* terms(int s) const { return table(s, tile_len); }
  __device__ unsigned char* map_table(int k) const { return map_tables + k * step_table_bytes; }
  __device__ unsigned char* map_terms() const { return map_table(K + 1); }
};

// The shape of N over 64 (two consumer warps, two lanes a thread) gets a register bound
// for the 4 blocks a multiprocessor the launcher plans (ptxas took 126-128 registers
// without it, room for 3); the others need none (96 registers; bounded, their code
// measured slower).  0: no bound.
template <int E, int CW>
constexpr int pipe_min_blocks() {
  return E == 2 && CW == 2 ? 4 : 0;
}

template <typename T, int IW, int KIND, bool MAPS, int E, int CW, bool TRACK, bool GRAD_D>
__global__ void __launch_bounds__(32 * (CW + PIPE_PRODUCERS), (pipe_min_blocks<E, CW>())) pd_scan_pipe(
    const void* __restrict__ index_raw, long long index_stride, int index_grain,
    const int* __restrict__ maps, long long maps_stride, int K,
    const T* __restrict__ d, long long d_stride, int d_grain,
    const T* __restrict__ b, long long b_stride, int b_grain,
    const T* __restrict__ x0, long long x0_stride,
    const T* __restrict__ chain,
    T* __restrict__ out, long long out_stride,
    int* __restrict__ agg_index, T* __restrict__ agg_d, T* __restrict__ agg_b,
    const T* __restrict__ x_prev, long long x_prev_stride, int x_prev_grain,
    T* __restrict__ grad_d, long long grad_d_stride,
    int L, int N, int chunk_len, int units_per_seq, int chunks, int tile_len, int flags) {
  static_assert(!GRAD_D || !TRACK, "GRAD_D: a scan that writes x");
  static_assert(KIND != CHASE || TRACK, "CHASE: the summaries of gather mode only");
  typedef typename index_word<IW>::type word;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  typedef pipe_smem<T, IW, KIND, MAPS, E, CW, TRACK, GRAD_D> smem_layout;
  smem_layout sm(smem_raw, tile_len, N, K);
  constexpr int W = smem_layout::W;
  const int NB = sm.NB;

  const long long s = blockIdx.x / units_per_seq;
  const int c = blockIdx.x % units_per_seq;
  const int p0 = c * chunk_len;
  const int count = min(L, p0 + chunk_len) - p0;
  const bool rev = flags & F_REVERSE, is_signed = flags & F_SIGNED_INDEX, conj_d = flags & F_CONJ;
  // F_FOLD_CHAIN: the c summaries before this chunk, rows agg_row0 + k N, in summary tiles
  const bool fold = !TRACK && !MAPS && (flags & F_FOLD_CHAIN);
  const int summary_steps = fold ? c : 0;
  const int summary_tiles = (summary_steps + tile_len - 1) / tile_len;
  const long long agg_row0 = s * (chunks - 1) * (long long)N;
  const int tiles = summary_tiles + (count + tile_len - 1) / tile_len;
  // tile j: `rows` steps whose first row in memory is time t_lo.  The unit's steps lie
  // at times lo .. lo + count - 1; the tiles come in the recurrence's order, except for
  // CHASE, which walks the paths back from the unit's last step: going down in memory
  // when exactly one of the two holds.  (So the last tiles CHASE reads, still in L2,
  // are the first the replay reads.)
  const long long lo = rev ? (long long)L - p0 - count : (long long)p0, hi = lo + count;
  const bool down = rev != (KIND == CHASE);
  auto chunk_tile_at = [&](int j, long long& t_lo) {  // j >= summary_tiles
    j -= summary_tiles;
    const int rows = min(tile_len, count - j * tile_len);
    t_lo = down ? hi - j * tile_len - rows : lo + j * tile_len;
    return rows;
  };
  // (a summary tile: its first summary in t_lo)
  auto tile_at = [&](int j, long long& t_lo) {
    if (j >= summary_tiles) return chunk_tile_at(j, t_lo);
    t_lo = (long long)j * tile_len;
    return min(tile_len, summary_steps - j * tile_len);
  };

  const int XE = sm.exchange_entries;
  for (int i = threadIdx.x; i < 2 * XE; i += blockDim.x) {
    T* half = (T*)(sm.exchange + (i / XE) * sm.exchange_stride);
    half[i % XE] = KIND == GATHER && (i % XE) == NB + 1 ? nan_of(T()) : T();
  }
  if (TRACK && KIND == GATHER) {
    for (int i = threadIdx.x; i < 2 * (NB + 2); i += blockDim.x) {
      const int at = i % (NB + 2), half = i / (NB + 2);
      ((T*)(sm.track_d + half * sm.exchange_stride))[at] = at == NB + 1 ? nan_of(T()) : T();
      ((int*)(sm.track_s + half * round16(4LL * (NB + 2))))[at] = -1;
    }
  }
  if (MAPS) {
    const int* my_maps = maps + s * maps_stride;
    for (int i = threadIdx.x; i < K * N; i += blockDim.x) sm.maps[i] = my_maps[i];
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane_id = threadIdx.x & 31;
  const int producer = warp - CW;  // its tiles: producer, producer + PIPE_PRODUCERS, ...
  constexpr int OWN = PIPE_STAGES / PIPE_PRODUCERS;  // slots of a producer
  // A chunk tile's copies (j >= summary_tiles), and a summary tile's (F_FOLD_CHAIN): d and
  // b rows of the summaries; their index words are read where the tables are built, as
  // the slot's index words may be narrower than int32
  const long long row_bytes = (long long)sizeof(T) * N;
  auto issue_chunk_tile = [&](int j) {
    if (j < tiles) {
      long long t_lo;
      const int rows = chunk_tile_at(j, t_lo);
      const int sl = j % PIPE_STAGES;
      if (MAPS) {
        stage(sm.index(sl), (const int*)index_raw + s * index_stride + t_lo, 4LL * rows, index_grain, lane_id);
      } else {
        stage(sm.index(sl), (const word*)index_raw + s * index_stride + t_lo * N, (long long)IW * rows * N,
              index_grain, lane_id);
      }
      stage_rows(sm.d(sl), sm.values_pitch, d + s * d_stride + t_lo * N, row_bytes, rows, d_grain, lane_id);
      stage_rows(sm.b(sl), sm.values_pitch, b + s * b_stride + t_lo * N, row_bytes, rows, b_grain, lane_id);
      if (GRAD_D)
        stage_rows(sm.x_prev(sl), sm.values_pitch, x_prev + s * x_prev_stride + t_lo * N, row_bytes, rows,
                   x_prev_grain, lane_id);
    }
    asm volatile("cp.async.commit_group;" ::: "memory");  // empty past the end: the counts stay uniform
  };
  auto issue = [&](int j) {
    if (j >= summary_tiles) return issue_chunk_tile(j);
    long long t_lo;
    const int rows = tile_at(j, t_lo);
    const int sl = j % PIPE_STAGES;
    const int grain = row_bytes % 16 == 0 ? 16 : row_bytes % 8 == 0 ? 8 : 4;
    stage_rows(sm.d(sl), sm.values_pitch, agg_d + agg_row0 + t_lo * N, row_bytes, rows, grain, lane_id);
    stage_rows(sm.b(sl), sm.values_pitch, agg_b + agg_row0 + t_lo * N, row_bytes, rows, grain, lane_id);
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
  if (warp >= CW)
    for (int m = 0; m < OWN - 1; ++m) issue(producer + PIPE_PRODUCERS * m);
  if (MAPS && warp == CW && KIND != CHASE) {
    // entry K: every lane out of range (a selector out of range); the launcher
    // made the dictionary's out-of-range entries -1
    auto entry = [&](int k, int lane) { return k < K ? sm.maps[k * N + lane] : -1; };
    write_tables<T, KIND, W>(entry, K + 1, sm.map_table(0), sm.step_table_bytes, sm.map_terms(), N, NB, lane_id);
  }
  if (MAPS) __syncthreads();  // the dictionary's tables are in place

  if (warp >= CW) {
    // ------------------------------------------------------------ producers
    // tile j: wait for its copies, make its tables, hand it over, and issue the copies
    // of this producer's next tile but one into the slot of its previous tile.  The
    // summary tiles (F_FOLD_CHAIN) in a loop of their own, so that the chunk tiles'
    // loop is the same code as without them (a branch in it cost the scatter forward
    // 1-3 %, docs/benchmarks.md)
    auto hand_over = [&](int j, auto next_issue) {
      named_arrive<CW>(full_barrier(j % PIPE_STAGES));
      const int next = j + PIPE_PRODUCERS * (OWN - 1);
      if (next < tiles && next >= PIPE_STAGES) named_sync<CW>(empty_barrier(next % PIPE_STAGES));
      next_issue(next);
    };
    int j = producer;
    for (; j < summary_tiles; j += PIPE_PRODUCERS) {
      asm volatile("cp.async.wait_group %0;" ::"n"(OWN - 2) : "memory");  // tile j is in
      __syncwarp();
      if (!MAPS && KIND != CHASE) {
        long long t_lo;
        const int rows = tile_at(j, t_lo);
        // a summary's transform: int32 lanes, -1 where its lane's path went out of range;
        // its d is a product of d already conjugated
        const int* summary_index = agg_index + agg_row0 + t_lo * N;
        auto summary_lane = [&](int r, int lane) {
          const int to = summary_index[r * N + lane];
          return to >= 0 && to < N ? to : -1;
        };
        const int sl = j % PIPE_STAGES;
        write_tables<T, KIND, W>(summary_lane, rows, sm.table(sl, 0), sm.step_table_bytes, sm.terms(sl), N, NB,
                                 lane_id);
      }
      hand_over(j, issue);
    }
    for (; j < tiles; j += PIPE_PRODUCERS) {
      asm volatile("cp.async.wait_group %0;" ::"n"(OWN - 2) : "memory");  // tile j is in
      __syncwarp();
      const int sl = j % PIPE_STAGES;
      long long t_lo;
      const int rows = chunk_tile_at(j, t_lo);
      if (conj_d) {
        conj_rows(sm.d(sl), sm.values_pitch, rows, N, lane_id);
        if (GRAD_D) conj_rows(sm.x_prev(sl), sm.values_pitch, rows, N, lane_id);
      }
      if (!MAPS && KIND != CHASE) {
        const word* index = sm.index(sl);
        auto decoded = [&](int r, int lane) { return lane_of<IW>(index[r * N + lane], is_signed, N); };
        write_tables<T, KIND, W>(decoded, rows, sm.table(sl, 0), sm.step_table_bytes, sm.terms(sl), N, NB, lane_id);
      }
      hand_over(j, issue_chunk_tile);
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    return;
  }

  // -------------------------------------------------------------- consumer
  const int tid = threadIdx.x;
  const int own = E * tid;  // first lane of this thread
  // threads past the last lane take part in the barriers only: they read lane 0's
  // operands (every access in bounds) and store nothing
  const bool active = own < N;
  const int at = active ? own : 0;
  T x[E];
  int track_s[E];
  T track_d[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int lane = own + e;
    x[e] = T();
    if (!TRACK && lane < N) {
      if (c > 0 && !fold) {
        x[e] = chain[(s * (chunks - 1) + c - 1) * (long long)N + lane];
      } else if (x0 != nullptr) {
        x[e] = x0[s * x0_stride + lane];
      }
    }
    track_s[e] = lane < N ? lane : -1;
    track_d[e] = one_of(T());
  }
  T* out_seq = out + s * out_stride;
  T* grad_d_seq = GRAD_D ? grad_d + s * grad_d_stride : nullptr;
  // A thread writes its E lanes of a row (x, or grad_d) as one vector where every
  // row start of the array is aligned for it, else lane by lane
  auto vector_rows = [&](const T* seq) {
    return own + E <= N && (N * sizeof(T)) % alignof(pack<T, E>) == 0 &&
           ((unsigned long long)seq) % alignof(pack<T, E>) == 0;
  };
  const bool vector_out = !TRACK && vector_rows(out_seq);
  const bool vector_grad_d = GRAD_D && vector_rows(grad_d_seq);
  auto write_row = [&](T* row, bool vector, const T(&values)[E]) {
    if (active && vector) store_pack<T, E>(row, values);
    if (active && !vector) {
#pragma unroll
      for (int e = 0; e < E; ++e)
        if (own + e < N) row[e] = values[e];
    }
  };
  int parity = 0;

  // the exchange's two halves as offsets into shared memory: 32-bit address arithmetic
  const int exchange_at = (int)(sm.exchange - smem_raw);
  int buf_at = exchange_at;  // this step's half; the other: buf_at ^ other_half
  const int other_half = exchange_at ^ (exchange_at + sm.exchange_stride);
  // scatter: where this thread's rows lie in each plane of a half, computed once
  // (the empty asm keeps them in registers rather than recomputed at every step)
  int plane_at[RCAP];
#pragma unroll
  for (int k = 0; k < RCAP; ++k) {
    plane_at[k] = (int)sizeof(T) * plane_entry(k, at, NB);
    if (KIND == SCATTER) asm volatile("" : "+r"(plane_at[k]));
  }
  auto shared_at = [&](int offset) -> const T& { return *(const T*)(smem_raw + offset); };

  lane_path<T> paths[E];  // CHASE: this thread's lanes' paths back from the unit's end
  if constexpr (KIND == CHASE) start_paths(paths, own, N);
  for (int j = 0; j < tiles; ++j) {
    const int sl = j % PIPE_STAGES;
    long long t_lo;
    const int rows = tile_at(j, t_lo);
    // A summary tile's steps run in the summaries' order, and their rows of x (and
    // grad_d) go to the row of the chunk's first step, which that step overwrites
    // later: no predicate on the steps' stores (with one, the dictionary form's scatter
    // forward ran 6 % slower, docs/benchmarks.md)
    const bool summary_tile = j < summary_tiles;
    const bool tile_rev = rev && !summary_tile;
    const word* index = sm.index(sl);
    const T* dt = sm.d(sl);
    const T* bt = sm.b(sl);
    const T* xt = sm.x_prev(sl);
    const int vp = sm.values_pitch / (int)sizeof(T);
    auto sigma = [&](int r, int pos) {
      if (MAPS) {
        const int sel = ((const int*)index)[r];
        return (sel >= 0 && sel < K) ? sm.maps[sel * N + pos] : -1;
      }
      return lane_of<IW>(index[r * N + pos], is_signed, N);
    };
    // MAPS: the table and terms of step r's dictionary entry
    auto entry_table = [&](int r, int& terms) -> const unsigned char* {
      int sel = ((const int*)index)[r];
      sel = (sel >= 0 && sel < K) ? sel : K;
      if (KIND == SCATTER) terms = sm.map_terms()[sel];
      return sm.map_table(sel);
    };

    named_sync<CW>(full_barrier(sl));
    // the tile's rows in time order, up or down in reverse, through pointers that
    // step by a row (fewer instructions per step than indexing from r)
    const int dr = tile_rev ? -1 : 1;
    int r = tile_rev ? rows - 1 : 0;
    const T* d_row = dt + r * vp + at;
    const T* b_row = bt + r * vp + at;
    const T* x_prev_row = xt + r * vp + at;
    const int row_step = dr * vp;
    const unsigned char* tab_row = MAPS ? nullptr : sm.table(sl, r);
    const unsigned char* terms_row = KIND == SCATTER && !MAPS ? sm.terms(sl) + r : nullptr;
    const int tab_step = dr * sm.step_table_bytes;
    const long long row_at = summary_tile ? (rev ? hi - 1 : lo) : t_lo + r;
    T* out_row = TRACK ? nullptr : out_seq + row_at * N + own;
    T* grad_d_row = GRAD_D ? grad_d_seq + row_at * N + own : nullptr;
    const long long out_step = summary_tile ? 0LL : dr * (long long)N;
    if constexpr (KIND == CHASE) {
      chase_tile<T, IW, MAPS, E>(paths, index, dt, bt, vp, rows, rev, is_signed, N, K, sm.maps);
    } else for (int i = 0; i < rows; ++i) {
      int terms = 0;
      const unsigned char* tab;
      if (MAPS) {
        tab = entry_table(r, terms);
      } else {
        tab = tab_row;
        if (KIND == SCATTER) terms = *terms_row;
      }
      const pack<T, E> dv = load_pack<T, E>(d_row);
      const pack<T, E> bv = load_pack<T, E>(b_row);
      unsigned char* buf = smem_raw + buf_at;
      if (KIND == GATHER) {
        const pack<int, E> from = load_pack<int, E>((const int*)tab + at);
        if (active) store_pack<T, E>((T*)buf + own, x);
        if (TRACK) {
          unsigned char* sbuf = sm.track_s + parity * round16(4LL * (NB + 2));
          unsigned char* dbuf = sm.track_d + parity * sm.exchange_stride;
#pragma unroll
          for (int e = 0; e < E; ++e) {
            if (active) {
              ((int*)sbuf)[own + e] = track_s[e];
              ((T*)dbuf)[own + e] = track_d[e];
            }
          }
          consumer_sync<CW>();
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int at = from.v[e] / (int)sizeof(T);
            track_s[e] = ((const int*)sbuf)[at];
            track_d[e] = mul(dv.v[e], ((const T*)dbuf)[at]);
          }
        } else {
          consumer_sync<CW>();
        }
        T gathered[E];
#pragma unroll
        for (int e = 0; e < E; ++e) {
          gathered[e] = shared_at(buf_at + from.v[e]);
          x[e] = add(mul(dv.v[e], gathered[e]), bv.v[e]);
        }
        if (GRAD_D) {
          // the VJP's grad_d of this step's transform: the carry it gathered times x_prev
          const pack<T, E> xp = load_pack<T, E>(x_prev_row);
          T gd[E];
#pragma unroll
          for (int e = 0; e < E; ++e) gd[e] = mul(gathered[e], xp.v[e]);
          write_row(grad_d_row, vector_grad_d, gd);
        }
      } else {
        // Each lane stores d x where its table says (its row's plane for its rank
        // there), so after the barrier a row's sources lie at fixed places: the
        // step's chain from x to x is the store, the barrier, the loads of the
        // planes and their sum.  The planes read are cleared for the step after next.
        const pack<unsigned short, E> to = load_pack<unsigned short, E>((const unsigned short*)tab + at);
        if (GRAD_D) {
          // the VJP's grad_d of this step's transform (a gather in the forward): the
          // state at the lane before the step times x_prev at the lane's sigma, which
          // the consumer decodes itself (the tables name ranks, not rows); off the
          // recurrence's path
          const T* x_prev_step = x_prev_row - at;
          T gd[E];
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int to_row = own + e < N ? sigma(r, own + e) : -1;
            gd[e] = to_row >= 0 ? mul(x[e], x_prev_step[to_row]) : nan_of(T());
          }
          write_row(grad_d_row, vector_grad_d, gd);
        }
        if (active) {
#pragma unroll
          for (int e = 0; e < E; ++e) *(T*)(buf + to.v[e]) = mul(dv.v[e], x[e]);
        }
        consumer_sync<CW>();
        T acc[E] = {};
        if (terms == WALK) {
          // (returned by value: an array passed to a call would live in local memory)
          if (active) {
            const pack<T, E> walked =
                walk_sources<T, E>((int)(tab - smem_raw), buf_at + (int)sizeof(T) * lane_entry(0, NB), at, NB);
#pragma unroll
            for (int e = 0; e < E; ++e) acc[e] = walked.v[e];
          }
        } else if (terms <= 1) {
          sum_planes<1>(acc, buf, plane_at, active);
        } else if (terms <= 4) {
          sum_planes<4>(acc, buf, plane_at, active);
        } else {
          sum_planes<RCAP>(acc, buf, plane_at, active);
        }
#pragma unroll
        for (int e = 0; e < E; ++e) x[e] = add(acc[e], bv.v[e]);
        if (TRACK) {
          // the mass of source lane j moves to sigma[pos] with factor d[pos]
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int pos = track_s[e];
            if (pos >= 0) {
              const int to = sigma(r, pos);
              track_d[e] = to >= 0 ? mul(dt[r * vp + pos], track_d[e]) : nan_of(T());
              track_s[e] = to;
            }
          }
        }
      }
      parity ^= 1;
      buf_at ^= other_half;
      if (!TRACK) write_row(out_row, vector_out, x);
      r += dr;
      d_row += row_step;
      b_row += row_step;
      if (GRAD_D) {
        x_prev_row += row_step;
        grad_d_row += out_step;
      }
      if (!MAPS) {
        tab_row += tab_step;
        if (KIND == SCATTER) terms_row += dr;
      }
      if (!TRACK) out_row += out_step;
    }
    if (j + PIPE_STAGES < tiles) {
      // The consumer warps meet before they release the slot: the tile's last step
      // may read the slot after its exchange barrier (TRACK's sigma, the walk's source
      // lists), and racecheck takes those reads as ordered before the producer's next
      // writes into the slot only with this barrier between (the EMPTY barrier orders
      // them already in PTX).  One barrier a tile.
      consumer_sync<CW>();
      named_arrive<CW>(empty_barrier(sl));
    }
  }
  if constexpr (KIND == CHASE) end_paths(paths, x, track_s, track_d);
  if (TRACK) {
    const long long at = (s * units_per_seq + c) * (long long)N;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int lane = own + e;
      if (lane < N) {
        agg_index[at + lane] = track_s[e];
        agg_d[at + lane] = track_d[e];
        agg_b[at + lane] = x[e];
      }
    }
  }
}

}  // namespace pd
