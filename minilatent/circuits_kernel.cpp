// The optional compiled kernel of circuits.py: out[i, :] = sum over k in row i of table[idx[k], :], the CSR gather-sum
// of a sparse block (W r for a batch of settings), OpenMP over rows, int32 or uint16 indices.
// Built and cached by kernels.py (the compiler flags are there) and called from circuits.py through ctypes
// with the parameter list in circuits.py (_GATHER_ARGS), which must match the extern "C" functions at the end.
//
// The same float32 sums as torch's embedding_bag, in a different order (both are exact fp32 sums of the same terms
// up to rounding). embedding_bag pays ~3 ns per synapse for a one-column table; this loop ~1 ns.
#include <cstdint>
// columns [c, c + W) of one output row; four partial sums in the order k % 4 for every width, so a setting gets
// bitwise the same sums whatever the batch size
template <int W, typename Idx>
static inline void tile(const Idx* idx, int64_t s, int64_t e, const float* table, int64_t B, int64_t c,
                        int w, float* o) {
  const int n = W > 0 ? W : w;
  float a[4][16] = {};
  int64_t k = s;
  for (; k + 4 <= e; k += 4) {
    for (int j = 0; j < 4; ++j) {
      const float* r = table + (int64_t)idx[k + j] * B + c;
#pragma omp simd
      for (int b = 0; b < (W > 0 ? W : 16); ++b) if (W > 0 || b < n) a[j][b] += r[b];
    }
  }
  for (; k < e; ++k) {
    const float* r = table + (int64_t)idx[k] * B + c;
    for (int b = 0; b < n; ++b) a[0][b] += r[b];
  }
  for (int b = 0; b < n; ++b) o[c + b] = (a[0][b] + a[1][b]) + (a[2][b] + a[3][b]);
}
template <typename Idx>
static void gather(const Idx* idx, const int32_t* offsets, int64_t n_rows, int64_t nnz,
                   const float* table, int64_t B, float* out, int n_threads) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
  for (int64_t i = 0; i < n_rows; ++i) {
    const int64_t s = offsets[i], e = (i + 1 < n_rows) ? offsets[i + 1] : nnz;
    float* o = out + i * B;
    int64_t c = 0;
    for (; c + 16 <= B; c += 16) tile<16>(idx, s, e, table, B, c, 16, o);
    if (B - c == 8) tile<8>(idx, s, e, table, B, c, 8, o);
    else if (B - c == 1) tile<1>(idx, s, e, table, B, c, 1, o);
    else if (B - c > 0) tile<0>(idx, s, e, table, B, c, (int)(B - c), o);
  }
}
extern "C" void gather_sum_i32(const int32_t* idx, const int32_t* offsets, int64_t n_rows, int64_t nnz,
                               const float* table, int64_t B, float* out, int n_threads) {
  gather(idx, offsets, n_rows, nnz, table, B, out, n_threads);
}
// uint16 indices (presynaptic populations up to 65,536 neurons): half the bytes per synapse
extern "C" void gather_sum_u16(const uint16_t* idx, const int32_t* offsets, int64_t n_rows, int64_t nnz,
                               const float* table, int64_t B, float* out, int n_threads) {
  gather(idx, offsets, n_rows, nnz, table, B, out, n_threads);
}
