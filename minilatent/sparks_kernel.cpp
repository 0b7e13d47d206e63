// The optional compiled kernel of sparks.py: the Hebbian recurrence with its value read-out (hebbian_forward_*) and
// its chunked adjoint scan (hebbian_backward_*), float32 (f32) and float64 (f64), OpenMP over rows of pairs.
// Built and cached by kernels.py (the compiler flags are there) and called from sparks.py through ctypes with
// the parameter lists in sparks.py (_FORWARD_ARGS, _BACKWARD_ARGS), which must match the extern "C" functions below.
//
// The torch scan of sparks.py makes ~9 passes over the (B, H, N, N) state per bin forward and ~25 backward
// (memory-bound). This kernel runs each row (b, h, i) of pairs through all T bins with its P, Q, A rows in L1 cache,
// computes the read-out for 4 rows at a time, and in backward recomputes each chunk from its checkpoint and runs the
// adjoint scan row by row, a chunk of every row at a time. It uses that spikes are sparse: in a bin where neither
// neuron of a pair spiked, A of the pair does not move, so the products with V (the read-out forward; dL/dA and
// dL/dV backward) are formed only where a neuron spiked (derivation at bwd_chunk). The same equations, so it differs
// from the torch scan by rounding only (tests/test_sparks.py: 1e-10 in float64, ~1e-6 in float32, at spike rates
// from 2% to 100%).
#include <cstdint>
#include <cstring>
#include <vector>
typedef int64_t i64;
// Rows (b, h, i) of the Hebbian recurrence, R rows at a time (the value read-out shares each load of V among
// them), every row over all T bins with its P, Q, A kept in L1. Layouts: u, m (T, B, N); states (B, H, N, N);
// coefficients (H, N, N); Vt (H, N, Dp) = V^T padded to Dp (a multiple of 16) columns; out (T, B, N, H, Dh).
template <typename F> static inline F clampf(F a, F lo, F hi) { return a < lo ? lo : (a > hi ? hi : a); }

// Spikes are sparse, and where neither neuron of a pair spiked in a bin its A does not change (X = S = 0 and A is
// already inside the clip). So the read-out of a row whose neuron i did not spike changes only through the columns
// j that spiked: out_t = out_{t-1} + (A_t - A_{t-1})[J_t] V^T[J_t]. Backward the same holds for the products with
// V: see bwd_chunk. Spike lists per (bin, trial); a bin with more than half the neurons spiking (or bin 0, where a
// carried state may still be clipped) is run densely.
struct Spikes {
  std::vector<int32_t> idx;     // (T, B, N): the neurons that spiked in bin t of trial b, first cnt of them
  std::vector<i64> cnt;         // (T, B)
  std::vector<char> dense;      // (T, B): run every row densely
  template <typename F> Spikes(const F* m, i64 T, i64 B, i64 N) : idx(T * B * N), cnt(T * B), dense(T * B) {
    for (i64 tb = 0; tb < T * B; ++tb) {
      i64 c = 0;
      for (i64 j = 0; j < N; ++j) if (m[tb * N + j] != F(0)) idx[tb * N + c++] = int32_t(j);
      cnt[tb] = c;
      dense[tb] = (2 * c > N) || tb < B;
    }
  }
};

template <typename F> static inline F* align64(F* p) {     // the first 64-byte boundary at or after p
  return (F*)(((uintptr_t)p + 63) & ~uintptr_t(63));
}

// 32-byte vectors (GCC/Clang vector extensions, any target): 8 floats or 4 doubles, read and written unaligned
// (aligned(element)) through the arrays of F (may_alias)
typedef float vf32 __attribute__((vector_size(32), aligned(4), may_alias));
typedef double vf64 __attribute__((vector_size(32), aligned(8), may_alias));
template <typename F> struct Vec;
template <> struct Vec<float> { typedef vf32 T; static const int L = 8; };
template <> struct Vec<double> { typedef vf64 T; static const int L = 4; };

// acc[r][0:W] += sum_q x_r[q] M_q[0:W], R rows side by side: the register-blocked product of every tile below
template <typename F, int R, int W>
struct Tile {
  typedef typename Vec<F>::T V;
  static const int L = Vec<F>::L, NV = W / L;
  V a[R][NV];
  inline void zero() { for (int r = 0; r < R; ++r) for (int v = 0; v < NV; ++v) a[r][v] = V{}; }
  inline void load(const F* y, i64 ld) {
    for (int r = 0; r < R; ++r) for (int v = 0; v < NV; ++v) a[r][v] = *(const V*)(y + r * ld + v * L);
  }
  inline void store(F* y, i64 ld) const {
    for (int r = 0; r < R; ++r) for (int v = 0; v < NV; ++v) *(V*)(y + r * ld + v * L) = a[r][v];
  }
  inline void fma(const F* m, const F* x, i64 xs) {       // one term q: m = M_q, x[r * xs] = x_r[q]
    V mv[NV];
    for (int v = 0; v < NV; ++v) mv[v] = *(const V*)(m + v * L);
    for (int r = 0; r < R; ++r) {
      const F xr = x[r * xs];
      for (int v = 0; v < NV; ++v) a[r][v] += xr * mv[v];
    }
  }
};

// y[0:n] = y0[0:n] (or 0) + sum_k x[k] M[k, 0:n] for one row; n a multiple of 16, M's rows ld apart
template <typename F, int W>
static inline void row_times_block(F* y, const F* y0, const F* x, const F* M, i64 nk, i64 ld) {
  typedef typename Vec<F>::T V;
  const int L = Vec<F>::L, NV = W / L;
  V a0[NV], a1[NV];
  for (int v = 0; v < NV; ++v) { a0[v] = y0 ? *(const V*)(y0 + v * L) : V{}; a1[v] = V{}; }
  i64 k = 0;
  for (; k + 2 <= nk; k += 2) {                      // two independent sums: more FMAs in flight
    const F x0 = x[k], x1 = x[k + 1];
    const F *m0 = M + k * ld, *m1 = m0 + ld;
    for (int v = 0; v < NV; ++v) { a0[v] += x0 * *(const V*)(m0 + v * L); a1[v] += x1 * *(const V*)(m1 + v * L); }
  }
  for (; k < nk; ++k) {
    const F x0 = x[k];
    const F* m0 = M + k * ld;
    for (int v = 0; v < NV; ++v) a0[v] += x0 * *(const V*)(m0 + v * L);
  }
  for (int v = 0; v < NV; ++v) *(V*)(y + v * L) = a0[v] + a1[v];
}

template <typename F>
static inline void row_times(F* y, const F* y0, const F* x, const F* M, i64 nk, i64 ld, i64 n) {
  i64 j0 = 0;
  for (; j0 + 32 <= n; j0 += 32) row_times_block<F, 32>(y + j0, y0 ? y0 + j0 : y0, x, M + j0, nk, ld);
  for (; j0 < n; j0 += 16) row_times_block<F, 16>(y + j0, y0 ? y0 + j0 : y0, x, M + j0, nk, ld);
}

// One bin for one row of pairs (post i, every pre j): traces, then A <- clip(A - A S + X). Outputs may alias inputs.
// Returns whether an A of the row sits at a clip bound after the bin (the backward's adjoint needs it).
template <typename F>
static inline bool step_row(const F* p, const F* q, const F* a, F* p1, F* q1, F* a1, const F* dp, const F* cp,
                            const F* dq, const F* cq, const F* ut, const F* mt, F ui, F mi, i64 N, F lo, F hi) {
  F mn = hi, mx = lo;
#pragma omp simd reduction(min : mn) reduction(max : mx)
  for (i64 j = 0; j < N; ++j) {
    const F pp = p[j] * dp[j] + cp[j] * ut[j];     // xpre  = d xpre  + w s_j
    const F qq = q[j] * dq[j] + cq[j] * ui;        // xpost = d xpost + w s_i
    const F x = pp * mi;                           // potentiation X = xpre [s_i]
    const F s = x + qq * mt[j];                    // S = X + Y, Y = xpost [s_j]
    p1[j] = pp; q1[j] = qq;
    const F an = clampf(a[j] - a[j] * s + x, lo, hi);
    a1[j] = an;
    mn = an < mn ? an : mn; mx = an > mx ? an : mx;
  }
  return mn <= lo || mx >= hi;
}

// Forward of R rows (b, h, i0 .. i0+R-1) over all T bins. o (R, Dp): each row's read-out without the bias; w: R N
// scratch for the A values a sparse bin changes.
template <typename F, int R>
static void fwd_rows(i64 b, i64 h, i64 i0, const F* u, const F* m, const F* dP, const F* cP,
                     const F* dQ, const F* cQ, const F* Vt, const F* bias, F* P, F* Q,
                     F* A, F* ckpt, F* out, i64 T, i64 B, i64 H, i64 N, i64 Dh, i64 Dp, i64 K,
                     F lo, F hi, const Spikes& sp, F* o, F* w) {
  const i64 S3 = B * H * N * N;
  i64 row[R], crow[R];
  for (int r = 0; r < R; ++r) { row[r] = ((b * H + h) * N + i0 + r) * N; crow[r] = (h * N + i0 + r) * N; }
  const F* vt = Vt + h * N * Dp;
  for (i64 t = 0; t < T; ++t) {
    if (ckpt && t % K == 0) {
      F* c = ckpt + (t / K) * 3 * S3;
      for (int r = 0; r < R; ++r) {
        std::memcpy(c + row[r], P + row[r], N * sizeof(F));
        std::memcpy(c + S3 + row[r], Q + row[r], N * sizeof(F));
        std::memcpy(c + 2 * S3 + row[r], A + row[r], N * sizeof(F));
      }
    }
    const F* ut = u + (t * B + b) * N;
    const F* mt = m + (t * B + b) * N;
    const int32_t* J = sp.idx.data() + (t * B + b) * N;
    const i64 nJ = sp.cnt[t * B + b];
    const bool dense = sp.dense[t * B + b] || t % K == 0;     // every K bins afresh: no drift of the sums
    bool ev[R], all_ev = true;                                // ev: the row's neuron spiked (its whole row moves)
    for (int r = 0; r < R; ++r) { ev[r] = dense || mt[i0 + r] != F(0); all_ev = all_ev && ev[r]; }
    if (!all_ev)
      for (int r = 0; r < R; ++r) for (i64 c = 0; c < nJ; ++c) w[r * N + c] = A[row[r] + J[c]];
    for (int r = 0; r < R; ++r) {
      F *p = P + row[r], *q = Q + row[r], *a = A + row[r];
      step_row(p, q, a, p, q, a, dP + crow[r], cP + crow[r], dQ + crow[r], cQ + crow[r], ut, mt, ut[i0 + r],
               mt[i0 + r], N, lo, hi);
    }
    if (all_ev) {
      for (i64 d0 = 0; d0 < Dp; d0 += 16) {                  // o = A_t V^T, 16 columns at a time
        Tile<F, R, 16> acc;
        acc.zero();
        for (i64 j = 0; j < N; ++j) acc.fma(vt + j * Dp + d0, A + row[0] + j, N);
        acc.store(o + d0, Dp);
      }
    } else {
      for (int r = 0; r < R; ++r)                             // the change of A in the spiking columns
        for (i64 c = 0; c < nJ; ++c) w[r * N + c] = ev[r] ? F(0) : A[row[r] + J[c]] - w[r * N + c];
      for (i64 d0 = 0; d0 < Dp; d0 += 16) {                  // o += dA[J] V^T[J]
        Tile<F, R, 16> acc;
        acc.load(o + d0, Dp);
        for (i64 c = 0; c < nJ; ++c) acc.fma(vt + i64(J[c]) * Dp + d0, w + c, N);
        acc.store(o + d0, Dp);
      }
      for (int r = 0; r < R; ++r)                             // rows whose neuron spiked: afresh
        if (ev[r]) row_times(o + r * Dp, (const F*)nullptr, A + row[r], vt, N, Dp, Dp);
    }
    for (int r = 0; r < R; ++r) {
      F* ot = out + (((t * B + b) * N + i0 + r) * H + h) * Dh;
      for (i64 d = 0; d < Dh; ++d) ot[d] = bias[h * Dh + d] + o[r * Dp + d];
    }
  }
}

template <typename F>
static void hebbian_forward(const F* u, const F* m, const F* dP, const F* cP, const F* dQ, const F* cQ,
                            const F* Vt, const F* bias, F* P, F* Q, F* A, F* ckpt, F* out, i64 T, i64 B, i64 H,
                            i64 N, i64 Dh, i64 Dp, i64 K, F lo, F hi, int n_threads) {
  const Spikes sp(m, T, B, N);
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<F> o(4 * Dp), w(4 * N);
#pragma omp for schedule(static)
    for (i64 bh = 0; bh < B * H; ++bh) {
      const i64 b = bh / H, h = bh % H;
      i64 i = 0;
      for (; i + 4 <= N; i += 4) fwd_rows<F, 4>(b, h, i, u, m, dP, cP, dQ, cQ, Vt, bias, P, Q, A, ckpt, out, T, B, H, N, Dh, Dp, K, lo, hi, sp, o.data(), w.data());
      for (; i < N; ++i) fwd_rows<F, 1>(b, h, i, u, m, dP, cP, dQ, cQ, Vt, bias, P, Q, A, ckpt, out, T, B, H, N, Dh, Dp, K, lo, hi, sp, o.data(), w.data());
    }
  }
}

// y (R rows, ld apart) = y0 + G V: G (R, nk) rows of sums of go, V (nk, n) rows ld_v apart; n a multiple of W
template <typename F, int R, int W>
static inline void times_V(F* y, const F* y0, const F* G, i64 nk, const F* V, i64 ld_v, i64 ld) {
  for (i64 j0 = 0; j0 < ld; j0 += W) {
    Tile<F, R, W> ac;
    ac.load(y0 + j0, ld);
    for (i64 d = 0; d < nk; ++d) ac.fma(V + d * ld_v + j0, G + d, nk);
    ac.store(y + j0, ld);
  }
}

// g[r, J[c]] = h[r, J[c]] + (G V)[r, J[c]] for c < min(W, n) and the rows not run whole: vj (nk, .) the columns
// J of V, rows ld_v apart
template <typename F, int R, int W>
static inline void sparse_g(F* g, const F* hh, const F* G, i64 nk, const F* vj, i64 ld_v, const int32_t* J, i64 n,
                            i64 ld, const bool* ev) {
  Tile<F, R, W> ac;
  ac.zero();
  for (i64 d = 0; d < nk; ++d) ac.fma(vj + d * ld_v, G + d, nk);
  F out[R * W];
  ac.store(out, W);
  if (n > W) n = W;
  for (int r = 0; r < R; ++r)
    if (!ev[r]) for (i64 kk = 0; kk < n; ++kk) { const i64 j = r * ld + J[kk]; g[j] = out[r * W + kk] + hh[j]; }
}

// Backward of chunk ci for R rows: recompute the chunk's states from its checkpoint, then run the adjoint scan in
// reverse; what the scan carries to the chunk before (lamP, lamQ, h) lives in (B, H, N, Np) arrays. Vp (H, Dh, Np)
// = V padded to Np (a multiple of 16) columns; VJ (T, B, H, Dh, Cp): V's columns of each bin's spiking neurons;
// gout (T, B, N, H, Dh); gWt (N, Dh) this (b, h)'s sum of A_t^T go_t; acc (4, B, H, N, N) the per-pair gradient
// sums of dP, cP, dQ, cQ over bins.
// The products with V, made sparse: with G_s = sum over the chunk's bins s' >= s of go_s' (per row),
//   gW:  sum_s go_s^T A_s = G_0^T A_start + sum_s G_s^T (A_s - A_{s-1}), the change being nonzero only in the
//        spiking columns of a row whose neuron did not spike;
//   g = dL/dA_s = go_s V + carry: carried as h = g - G_s V, which stays constant through a bin where the pair did
//        not spike (g then only passes on: carry = g (1 - S), S = 0); where it spiked g = G_s V + h is formed, and
//        h <- h + g_kept (1 - S) - g. A row with a clipped entry is run densely (there the clip stops g).
template <typename F, int R>
static void bwd_chunk(i64 ci, i64 b, i64 h, i64 i0, const F* u, const F* m, const F* cf, const F* Vp, const F* VJ,
                      i64 Cp, const F* gout, const F* ckpt,
                      F* gWt, F* acc, F* lamPg, F* lamQg, F* hg, i64 T, i64 B, i64 H, i64 N, i64 Dh, i64 Np,
                      i64 K, F lo, F hi, const Spikes& sp, F* w, F* Gs, char* clipped, F* Dbuf, const F** Dq,
                      const F** Gq) {
  const i64 S3 = B * H * N * N, RN = R * Np;
  F *Ps = w, *Qs = Ps + (K + 1) * RN, *As = Qs + (K + 1) * RN, *g = As + (K + 1) * RN;   // states of each bin
  const i64 st = ((b * H + h) * N + i0) * Np;                   // this row group in the (B, H, N, Np) carried state
  F *lamP = lamPg + st, *lamQ = lamQg + st, *carry = hg + st;
  i64 row[R], crow[R], prow[R];                                 // rows in ckpt; in cf; in the padded sums acc
  for (int r = 0; r < R; ++r) {
    row[r] = ((b * H + h) * N + i0 + r) * N; crow[r] = (h * N + i0 + r) * Np; prow[r] = ((b * H + h) * N + i0 + r) * Np;
  }
  const i64 HN = H * N * Np, S3p = B * H * N * Np;
  const F *dP = cf, *cP = cf + HN, *dQ = cf + 2 * HN, *cQ = cf + 3 * HN;
  const F* vp = Vp + h * Dh * Np;
  const i64 c0 = ci * K, k = (T - c0 < K) ? T - c0 : K;
  const F* c = ckpt + ci * 3 * S3;
  for (int r = 0; r < R; ++r) {
    std::memcpy(Ps + r * Np, c + row[r], N * sizeof(F));
    std::memcpy(Qs + r * Np, c + S3 + row[r], N * sizeof(F));
    std::memcpy(As + r * Np, c + 2 * S3 + row[r], N * sizeof(F));
  }
  for (i64 s = 0; s < k; ++s) {                                              // recompute the chunk
    const F* ut = u + ((c0 + s) * B + b) * Np;
    const F* mt = m + ((c0 + s) * B + b) * Np;
    for (int r = 0; r < R; ++r) {
      const F *p = Ps + s * RN + r * Np, *q = Qs + s * RN + r * Np, *a = As + s * RN + r * Np;
      F *p1 = Ps + (s + 1) * RN + r * Np, *q1 = Qs + (s + 1) * RN + r * Np, *a1_ = As + (s + 1) * RN + r * Np;
      clipped[s * R + r] = step_row(p, q, a, p1, q1, a1_, dP + crow[r], cP + crow[r], dQ + crow[r],
                                    cQ + crow[r], ut, mt, ut[i0 + r], mt[i0 + r], Np, lo, hi);
    }
  }
  for (int r = 0; r < R; ++r) {                                              // G_s: sums of go over s' >= s
    F* G = Gs + ((k - 1) * R + r) * Dh;
    const F* go = gout + ((((c0 + k - 1) * B + b) * N + i0 + r) * H + h) * Dh;
#pragma omp simd
    for (i64 d = 0; d < Dh; ++d) G[d] = go[d];
    for (i64 s = k - 2; s >= 0; --s) {
      const F* go_ = gout + ((((c0 + s) * B + b) * N + i0 + r) * H + h) * Dh;
      F* Gn = Gs + (s * R + r) * Dh;
      const F* Gp = Gn + R * Dh;
#pragma omp simd
      for (i64 d = 0; d < Dh; ++d) Gn[d] = Gp[d] + go_[d];
    }
  }
  // gW: rows of pairs that change as a whole (the chunk's start state, and rows whose neuron spiked) as one
  // product sum_q D_q^T G_q over the list q; the other rows change only in the spiking columns
  i64 nq = R;
  for (int r = 0; r < R; ++r) { Dq[r] = As + r * Np; Gq[r] = Gs + r * Dh; }
  for (i64 s = 0; s < k; ++s) {
    const i64 tb = (c0 + s) * B + b;
    const F* mt = m + tb * Np;
    const int32_t* J = sp.idx.data() + tb * N;
    const bool dense = sp.dense[tb];
    bool part[R], any_part = false;                          // rows that moved only in the spiking columns
    for (int r = 0; r < R; ++r) {
      const F *an = As + (s + 1) * RN + r * Np, *ao = As + s * RN + r * Np;
      part[r] = !(dense || mt[i0 + r] != F(0));
      any_part = any_part || part[r];
      if (!part[r]) {                                        // the whole row moved: into the product's list
        F* dq = Dbuf + (nq - R) * Np;
#pragma omp simd
        for (i64 j = 0; j < Np; ++j) dq[j] = an[j] - ao[j];
        Dq[nq] = dq; Gq[nq] = Gs + (s * R + r) * Dh; ++nq;
      }
    }
    if (any_part) {
      const F* Gr[R];
      F dl[R];
      for (int r = 0; r < R; ++r) Gr[r] = Gs + (s * R + r) * Dh;
      for (i64 c = 0; c < sp.cnt[tb]; ++c) {
        const i64 j = J[c];
        for (int r = 0; r < R; ++r)
          dl[r] = part[r] ? As[(s + 1) * RN + r * Np + j] - As[s * RN + r * Np + j] : F(0);
        F* gwj = gWt + j * Dh;
#pragma omp simd
        for (i64 d = 0; d < Dh; ++d) {
          F y = gwj[d];
          for (int r = 0; r < R; ++r) y += dl[r] * Gr[r][d];
          gwj[d] = y;
        }
      }
    }
  }
  for (i64 j0 = 0; j0 < N; j0 += 4) {                                         // gWt[j] += sum_q D_q[j] G_q
    const int nj = (N - j0 < 4) ? int(N - j0) : 4;
    for (i64 d0 = 0; d0 < Dh; d0 += 16) {
      Tile<F, 4, 16> ac;
      ac.zero();
      for (i64 q = 0; q < nq; ++q) ac.fma(Gq[q] + d0, Dq[q] + j0, 1);
      F out[4 * 16];
      ac.store(out, 16);
      const int nd = (Dh - d0 < 16) ? int(Dh - d0) : 16;
      for (int jj = 0; jj < nj; ++jj)
        for (int kk = 0; kk < nd; ++kk) gWt[(j0 + jj) * Dh + d0 + kk] += out[jj * 16 + kk];
    }
  }
  for (i64 s = k - 1; s >= 0; --s) {                                         // the adjoint scan
    const i64 t = c0 + s, tb = t * B + b;
    const F* ut = u + tb * Np;
    const F* mt = m + tb * Np;
    const int32_t* J = sp.idx.data() + tb * N;
    const i64 nJ = sp.cnt[tb];
    const bool dense = sp.dense[tb];
    bool ev[R], any_sparse = false;                        // ev: g is formed in every column of the row
    int n_ev = 0;
    for (int r = 0; r < R; ++r) {
      ev[r] = dense || mt[i0 + r] != F(0) || clipped[s * R + r];
      any_sparse = any_sparse || !ev[r];
      n_ev += ev[r];
    }
    if (R > 1 && n_ev * 4 >= 3 * R) {                                        // most rows whole: all of them
      for (int r = 0; r < R; ++r) ev[r] = true;
      any_sparse = false;
      times_V<F, R, 16>(g, carry, Gs + s * R * Dh, Dh, vp, Np, Np);
    } else {
      for (int r = 0; r < R; ++r)                                            // g = G_s V + h in every column
        if (ev[r]) row_times(g + r * Np, carry + r * Np, Gs + (s * R + r) * Dh, vp, Dh, Np, Np);
    }
    if (any_sparse) {                                                        // ... or in the spiking ones
      const F* vj = VJ + (tb * H + h) * Dh * Cp;
      i64 c = 0;
      const F* G = Gs + s * R * Dh;
      for (; c + 8 < nJ; c += 16) sparse_g<F, R, 16>(g, carry, G, Dh, vj + c, Cp, J + c, nJ - c, Np, ev);
      for (; c < nJ; c += 8) sparse_g<F, R, 8>(g, carry, G, Dh, vj + c, Cp, J + c, nJ - c, Np, ev);
    }
    const F* At = As + (s + 1) * RN;
    for (int r = 0; r < R; ++r) {
      const i64 o = r * Np;
      const F *pprev = Ps + s * RN + o, *qprev = Qs + s * RN + o, *aprev = As + s * RN + o;
      const F *pt = Ps + (s + 1) * RN + o, *qt = Qs + (s + 1) * RN + o, *at = At + o;
      const F *dp = dP + crow[r], *dq = dQ + crow[r];
      const F ui = ut[i0 + r], mi = mt[i0 + r];
      F *lp = lamP + o, *lq = lamQ + o, *hh = carry + o, *gg = g + o;
      F *b0 = acc + prow[r], *b1 = b0 + S3p, *b2 = b1 + S3p, *b3 = b2 + S3p;
      if (!ev[r] && ui == F(0)) {                                            // the same with s_i = u_i = 0 and
#pragma omp simd                                                               // no clipped entry in the row
        for (i64 j = 0; j < Np; ++j) {
          const F gj = gg[j];
          const F R_ = gj * aprev[j];
          const F lpj = lp[j] * dp[j], lqj = lq[j] * dq[j] - R_ * mt[j];
          lp[j] = lpj; lq[j] = lqj;
          b0[j] += lpj * pprev[j]; b1[j] += lpj * ut[j]; b2[j] += lqj * qprev[j];
          hh[j] -= gj * qt[j] * mt[j];
        }
        for (i64 c = 0; c < nJ; ++c) gg[J[c]] = F(0);
        continue;
      }
#pragma omp simd
      for (i64 j = 0; j < Np; ++j) {                                          // gg = 0 where g was not formed
        const F gj = (at[j] <= lo || at[j] >= hi) ? F(0) : gg[j];          // no gradient through the clip
        const F R_ = gj * aprev[j];
        const F lpj = lp[j] * dp[j] + (gj - R_) * mi;                     // d/dxpre  = g (1 - A_{t-1}) [s_i]
        const F lqj = lq[j] * dq[j] - R_ * mt[j];                         // d/dxpost = -g A_{t-1} [s_j]
        lp[j] = lpj; lq[j] = lqj;
        b0[j] += lpj * pprev[j]; b1[j] += lpj * ut[j];
        b2[j] += lqj * qprev[j]; b3[j] += lqj * ui;
        const F sv = pt[j] * mi + qt[j] * mt[j];
        hh[j] += (gj - gj * sv) - gg[j];                                    // carry to A_{t-1}: g (1 - S_t)
      }
      if (ev[r]) std::memset(gg, 0, N * sizeof(F));
      else for (i64 c = 0; c < nJ; ++c) gg[J[c]] = F(0);
    }
  }
  times_V<F, R, 16>(carry, carry, Gs, Dh, vp, Np, Np);                       // carry = h + G_0 V for the bin before
}

template <typename F>
static void hebbian_backward(const F* u, const F* m, const F* dP, const F* cP, const F* dQ, const F* cQ,
                             const F* Vp, const F* gout, const F* ckpt, i64 n_ckpt, F* gW, F* acc, i64 T, i64 B,
                             i64 H, i64 N, i64 Dh, i64 Np, i64 K, F lo, F hi, int n_threads) {
  const Spikes sp(m, T, B, N);
  // rows padded to Np and 64-byte aligned: u, m (T, B, Np), the coefficients (4, H, N, Np), the sums acc
  std::vector<F> up_(T * B * Np + 16, F(0)), mp_(T * B * Np + 16, F(0)), cf_(4 * H * N * Np + 16, F(0));
  std::vector<F> acc_(4 * B * H * N * Np + 16, F(0));
  F *up = align64(up_.data()), *mp = align64(mp_.data()), *cf = align64(cf_.data()), *accp = align64(acc_.data());
  for (i64 tb = 0; tb < T * B; ++tb) {
    std::memcpy(up + tb * Np, u + tb * N, N * sizeof(F));
    std::memcpy(mp + tb * Np, m + tb * N, N * sizeof(F));
  }
  const F* coef[4] = {dP, cP, dQ, cQ};
  for (int q = 0; q < 4; ++q)
    for (i64 hn = 0; hn < H * N; ++hn) std::memcpy(cf + (q * H * N + hn) * Np, coef[q] + hn * N, N * sizeof(F));
  i64 Cp = 16;                                                  // V's columns of the spiking neurons, per bin
  for (i64 tb = 0; tb < T * B; ++tb) if (!sp.dense[tb] && sp.cnt[tb] > Cp) Cp = sp.cnt[tb];
  Cp = (Cp + 15) / 16 * 16;
  std::vector<F> VJ(T * B * H * Dh * Cp, F(0));
  for (i64 tb = 0; tb < T * B; ++tb)
    if (!sp.dense[tb])
      for (i64 h = 0; h < H; ++h) for (i64 d = 0; d < Dh; ++d)
        for (i64 c = 0; c < sp.cnt[tb]; ++c)
          VJ[((tb * H + h) * Dh + d) * Cp + c] = Vp[(h * Dh + d) * Np + sp.idx[tb * N + c]];
  // chunk by chunk from the last, every row group within a chunk (the chunk's VJ stays in cache); the adjoint
  // state carried between chunks: lamP, lamQ and h per pair (padded rows), the gradient sums in acc
  std::vector<F> lamPg_(B * H * N * Np + 16, F(0)), lamQg_(B * H * N * Np + 16, F(0)), hg_(B * H * N * Np + 16, F(0));
  F *lamPg = align64(lamPg_.data()), *lamQg = align64(lamQg_.data()), *hg = align64(hg_.data());
  std::vector<F> gWt(B * H * N * Dh, F(0));                     // (B, H, N, Dh): sum of A_t^T go_t
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<F> work_((3 * (K + 1) + 1) * 4 * Np + 16, F(0)), Gs(K * 4 * Dh + 16);
    F* work = align64(work_.data());
    std::vector<char> clipped(K * 4);
    std::vector<F> Dbuf(K * 4 * Np + 16);                       // the rows of pairs that change as a whole
    std::vector<const F*> Dq(4 + K * 4), Gq(4 + K * 4);
    for (i64 ci = n_ckpt - 1; ci >= 0; --ci) {
#pragma omp for schedule(static)
      for (i64 bh = 0; bh < B * H; ++bh) {
        const i64 b = bh / H, h = bh % H;
        F* gw = gWt.data() + bh * N * Dh;
        i64 i = 0;
        for (; i + 4 <= N; i += 4)
          bwd_chunk<F, 4>(ci, b, h, i, up, mp, cf, Vp, VJ.data(), Cp, gout, ckpt, gw, accp, lamPg,
                          lamQg, hg, T, B, H, N, Dh, Np, K, lo, hi, sp, work, Gs.data(),
                          clipped.data(), Dbuf.data(), Dq.data(), Gq.data());
        for (; i < N; ++i)
          bwd_chunk<F, 1>(ci, b, h, i, up, mp, cf, Vp, VJ.data(), Cp, gout, ckpt, gw, accp, lamPg,
                          lamQg, hg, T, B, H, N, Dh, Np, K, lo, hi, sp, work, Gs.data(),
                          clipped.data(), Dbuf.data(), Dq.data(), Gq.data());
      }
    }
  }
  for (i64 q = 0; q < 4 * B * H * N; ++q) std::memcpy(acc + q * N, accp + q * Np, N * sizeof(F));
  for (i64 bh = 0; bh < B * H; ++bh)                            // gW (B, H, Dh, Np)
    for (i64 j = 0; j < N; ++j) for (i64 d = 0; d < Dh; ++d) gW[(bh * Dh + d) * Np + j] = gWt[(bh * N + j) * Dh + d];
}

#define EXPORT(NAME, F)                                                                                            \
  extern "C" void hebbian_forward_##NAME(const F* u, const F* m, const F* dP, const F* cP, const F* dQ,          \
                                         const F* cQ, const F* Vt, const F* bias, F* P, F* Q, F* A, F* ckpt,       \
                                         F* out, i64 T, i64 B, i64 H, i64 N, i64 Dh, i64 Dp, i64 K, double lo,     \
                                         double hi, int n_threads) {                                               \
    hebbian_forward<F>(u, m, dP, cP, dQ, cQ, Vt, bias, P, Q, A, ckpt, out, T, B, H, N, Dh, Dp, K, F(lo), F(hi),   \
                       n_threads);                                                                                 \
  }                                                                                                                \
  extern "C" void hebbian_backward_##NAME(const F* u, const F* m, const F* dP, const F* cP, const F* dQ,         \
                                          const F* cQ, const F* Vp, const F* gout, const F* ckpt, i64 n_ckpt,      \
                                          F* gW, F* acc, i64 T, i64 B, i64 H, i64 N, i64 Dh, i64 Np, i64 K,        \
                                          double lo, double hi, int n_threads) {                                   \
    hebbian_backward<F>(u, m, dP, cP, dQ, cQ, Vp, gout, ckpt, n_ckpt, gW, acc, T, B, H, N, Dh, Np, K, F(lo),       \
                        F(hi), n_threads);                                                                         \
  }
EXPORT(f32, float)
EXPORT(f64, double)
