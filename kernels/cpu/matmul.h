// Matmul with bias, the layout of torch.nn.Linear: out = inp @ weight^T + bias (OpenBLAS sgemm).
//
// Backward convention: every gradient accumulates (dinp, dweight and dbias +=); callers zero them.
// Results are bitwise the same for any OpenMP thread count: each product is cut into a grid of
// output tiles fixed by the matrix sizes alone (matmul_tiles), and each tile is one single-threaded
// sgemm over the whole reduction dimension, so no element's summation order depends on threads.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// inp (N, C); weight (OC, C); bias (OC) or null; out (N, OC) is overwritten.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC);

// Accumulates: dinp (N, C) += dout @ weight; dweight (OC, C) += dout^T @ inp;
// dbias (OC) += sum over rows of dout. Any of dinp, dweight, dbias may be null (not wanted).
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC);

// The tile grid of one product with a (rows, cols) output and `reduction` terms per element:
// rows and cols are each cut into a power-of-two number of near-equal parts whose boundaries are
// multiples of 16 (sgemm's register block). A function of the three sizes only.
struct MatmulTiles {
  int row_parts = 1;
  int col_parts = 1;
  int count() const { return row_parts * col_parts; }
};
MatmulTiles matmul_tiles(int rows, int cols, int64_t reduction);

// First row (or column) of part `index` of `parts` over `extent`; index == parts gives extent.
int matmul_tile_start(int extent, int parts, int index);

}  // namespace loom::kernels::cpu
