// Matmul with bias on the CPU, torch.nn.Linear's layout (weight is (OC, C)).
//
// The three products go to OpenBLAS sgemm: nothing hand-written comes close on a CPU, and sgemm's
// beta = 1 gives the accumulate-into-gradient contract for free. The bias is folded into the
// forward by seeding the output with bias rows.
//
// Thread independence. A threaded sgemm sums in an order that depends on its thread count
// (OpenBLAS 0.3.21 blocks the reduction differently once it splits the work: a K of 520 is summed
// as 272 + 248 terms on one thread, 260 + 260 on two), so training at 1 and 2 threads drifted
// apart from the first step. Here every product is cut into a grid of
// output tiles that depends on the matrix sizes only (matmul_tiles); OpenMP threads take whole
// tiles, and each tile is one single-threaded sgemm over the entire reduction dimension (never a
// split of K: for dweight that is every token). An element's sum is then the same whatever
// thread computes its tile, and the same at any thread count. dbias is a sum over rows; threads
// split its columns into fixed blocks and each block sums rows in order.
//
// Single-threaded sgemm inside the tiles: OpenBLAS's OpenMP build already runs a call made from
// an active parallel region on one thread, but it threads one made from a team of one thread
// when omp_get_max_threads() > 1 (OMP_DYNAMIC, a thread limit). Each thread therefore sets its
// own region's thread count to 1 first; that value belongs to the region's implicit task and is
// gone when the region ends.
//
// Tile sizes. Each tile repacks its slices of both operands, (rows + cols) x K floats against
// rows x cols x K multiply-adds, so tiles must stay large: on a 2-core AVX-512 machine 64-wide
// tiles ran 1.9x slower than one whole sgemm on one thread, 512-wide ones 4-9%. Against that,
// threads need several tiles. The grid halves the longer tile side until there are 4 tiles
// (balanced for 2 and 4 threads; power-of-two parts) but never below 128 wide or 2^20
// multiply-adds, and also cuts any side longer than 1024 so that big products (the vocabulary
// projection) have tiles for many threads. At 2 threads the tiles took 0.86-1.06x of OpenBLAS's
// threaded time on the training shapes of bench/train_bench.py, within the noise of that shared
// machine (docs/benchmarks.md).
//
// At one thread the tiles give the bits of one whole single-threaded sgemm (the code before the
// tiles) for every training shape we tried on the machine above: the single-threaded driver
// blocks K by K alone, and a tile's micro-kernel sums each element in the whole call's order. The
// exception is OpenBLAS's small-matrix kernels (SkylakeX target, m n k <= 10^6), which a narrow
// tile may take where the whole product did not and which sum differently; tiles at least 128
// wide (or the whole dimension) keep training shapes out of them, but a decode step's one-row
// forward of the vocabulary projection is such a case.
#include "kernels/cpu/matmul.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cstring>

#include "core/base/check.h"

namespace loom::kernels::cpu {
namespace {

// Output columns per dbias work unit; fixed so the split never depends on the thread count.
constexpr int kColumnBlock = 64;

// The tile grid's limits (see the file comment for the measurements behind them).
constexpr int kMaxTileSide = 1024;
constexpr int kMinTileSide = 128;
constexpr int kMinTiles = 4;
constexpr int64_t kMinTileWork = int64_t{1} << 20;  // multiply-adds
constexpr int kTileAlign = 16;  // boundaries on sgemm's register block, so no tile wastes lanes

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs tile(row_begin, row_end, col_begin, col_end) once for every tile of the (rows, cols)
// grid, spread over the OpenMP threads; each call runs on one thread.
template <typename Tile>
void for_each_tile(int rows, int cols, const MatmulTiles& grid, const Tile& tile) {
  // The pthread build would run every tile on its own thread pool, in a thread-dependent order.
  LOOM_CHECK(openblas_get_parallel() != OPENBLAS_THREAD,
             "matmul: linked with OpenBLAS's pthread build; Loom needs its OpenMP (or sequential) "
             "build, whose calls from inside a parallel region run on one thread");
  const int count = grid.count();
  // Without OpenMP (the fuzz targets build the kernels so) the tiles simply run in order.
#ifdef _OPENMP
  const int team = std::min(count, omp_get_max_threads());  // no thread without a tile
#pragma omp parallel num_threads(team)
#endif
  {
#ifdef _OPENMP
    omp_set_num_threads(1);  // this region's sgemm calls run single-threaded (file comment)
#endif
    // Dynamic: which thread takes a tile never changes its result, and a free thread takes
    // the next one when another was slowed down by the rest of the machine.
#pragma omp for schedule(dynamic)
    for (int i = 0; i < count; ++i) {
      const int r = i / grid.col_parts;
      const int c = i % grid.col_parts;
      tile(matmul_tile_start(rows, grid.row_parts, r),
           matmul_tile_start(rows, grid.row_parts, r + 1),
           matmul_tile_start(cols, grid.col_parts, c),
           matmul_tile_start(cols, grid.col_parts, c + 1));
    }
  }
}

}  // namespace

MatmulTiles matmul_tiles(int rows, int cols, int64_t reduction) {
  LOOM_CHECK(rows > 0 && cols > 0 && reduction > 0, "matmul_tiles: sizes must be positive: rows",
             rows, "cols", cols, "reduction", reduction);
  MatmulTiles grid;
  while (ceil_div(rows, grid.row_parts) > kMaxTileSide) grid.row_parts *= 2;
  while (ceil_div(cols, grid.col_parts) > kMaxTileSide) grid.col_parts *= 2;
  while (grid.count() < kMinTiles) {
    const int64_t tile_rows = ceil_div(rows, grid.row_parts);
    const int64_t tile_cols = ceil_div(cols, grid.col_parts);
    const int64_t longer = std::max(tile_rows, tile_cols);
    if (longer < 2 * kMinTileSide || tile_rows * tile_cols / 2 * reduction < kMinTileWork) break;
    if (tile_rows >= tile_cols) {
      grid.row_parts *= 2;
    } else {
      grid.col_parts *= 2;
    }
  }
  return grid;
}

int matmul_tile_start(int extent, int parts, int index) {
  if (index >= parts) return extent;
  return static_cast<int>(static_cast<int64_t>(extent) * index / parts) / kTileAlign * kTileAlign;
}

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC) {
  LOOM_CHECK(N > 0 && C > 0 && OC > 0, "matmul sizes must be positive: N", N, "C", C, "OC", OC);
  LOOM_CHECK(out != nullptr && inp != nullptr && weight != nullptr,
             "matmul_forward: out, inp and weight must be non-null");
  // out (N, OC) = inp (N, C) @ weight^T (C, OC) [+ bias], tile by tile.
  for_each_tile(N, OC, matmul_tiles(N, OC, C), [&](int r0, int r1, int c0, int c1) {
    float* tile_out = out + static_cast<int64_t>(r0) * OC + c0;  // (r1 - r0, c1 - c0), stride OC
    float beta = 0.0f;
    if (bias != nullptr) {
      for (int i = r0; i < r1; ++i) {
        std::memcpy(out + static_cast<int64_t>(i) * OC + c0, bias + c0,
                    sizeof(float) * static_cast<size_t>(c1 - c0));
      }
      beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, c1 - c0, C, 1.0f,
                inp + static_cast<int64_t>(r0) * C, C, weight + static_cast<int64_t>(c0) * C, C,
                beta, tile_out, OC);
  });
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC) {
  LOOM_CHECK(N > 0 && C > 0 && OC > 0, "matmul sizes must be positive: N", N, "C", C, "OC", OC);
  LOOM_CHECK(dout != nullptr, "matmul_backward: dout must be non-null");
  if (dinp != nullptr) {
    LOOM_CHECK(weight != nullptr, "matmul_backward: dinp wanted but weight is null");
    // dinp (N, C) += dout (N, OC) @ weight (OC, C); K = OC
    for_each_tile(N, C, matmul_tiles(N, C, OC), [&](int r0, int r1, int c0, int c1) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, c1 - c0, OC, 1.0f,
                  dout + static_cast<int64_t>(r0) * OC, OC, weight + c0, C, 1.0f,
                  dinp + static_cast<int64_t>(r0) * C + c0, C);
    });
  }
  if (dweight != nullptr) {
    LOOM_CHECK(inp != nullptr, "matmul_backward: dweight wanted but inp is null");
    // dweight (OC, C) += dout^T (OC, N) @ inp (N, C); K = N, every token in one tile's sum
    for_each_tile(OC, C, matmul_tiles(OC, C, N), [&](int r0, int r1, int c0, int c1) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1 - r0, c1 - c0, N, 1.0f, dout + r0,
                  OC, inp + c0, C, 1.0f, dweight + static_cast<int64_t>(r0) * C + c0, C);
    });
  }
  if (dbias != nullptr) {
    const int num_blocks = (OC + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
    for (int block = 0; block < num_blocks; ++block) {
      const int o0 = block * kColumnBlock;
      const int o1 = std::min(OC, o0 + kColumnBlock);
      float sum[kColumnBlock] = {};
      for (int i = 0; i < N; ++i) {
        const float* d = dout + static_cast<long>(i) * OC;  // (OC)
        for (int o = o0; o < o1; ++o) sum[o - o0] += d[o];
      }
      for (int o = o0; o < o1; ++o) dbias[o] += sum[o - o0];
    }
  }
}

}  // namespace loom::kernels::cpu
