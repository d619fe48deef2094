// The machine's sgemm ceiling: the best of several timed OpenBLAS sgemm calls on square fp32
// matrices, in GFLOP/s (2*M*N*K flops per call). The training benchmark states model FLOP/s as a
// fraction of this number. With --tiled it times Loom's CPU matmul_forward on the same product
// instead (tiles of single-threaded sgemm, thread-count independent), to show what the tiling
// costs against OpenBLAS's own threading.
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "launch/cli.h"
#include "launch/run_setup.h"

using namespace loom;

int main(int argc, char** argv) {
  const std::vector<FlagSpec> flags = {{"threads", "N", "threads; 0 = every core"},
                                       {"size", "N", "M = N = K (default 2048)"},
                                       {"repeats", "N", "timed calls (default 10)"},
                                       {"tiled", "", "time Loom's tiled matmul_forward instead"}};
  try {
    ParsedArgs a = parse_args("bench_sgemm", std::vector<std::string>(argv + 1, argv + argc), flags);
    set_thread_count(a.get_int("threads", 0));
    const int n = a.get_int("size", 2048), repeats = a.get_int("repeats", 10);
    if (n <= 0 || repeats <= 0) fail_user("--size and --repeats must be positive");
    const bool tiled = a.has("tiled");
    std::vector<float> A(static_cast<size_t>(n) * n, 0.5f), B(A.size(), 0.25f), C(A.size());
    double best = 1e30;
    for (int r = 0; r < repeats + 1; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      if (tiled) {
        kernels::cpu::matmul_forward(C.data(), A.data(), B.data(), nullptr, n, n, n);  // A @ B^T
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, A.data(), n, B.data(),
                    n, 0.0f, C.data(), n);
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0 && s < best) best = s;  // the first call warms caches and threads
    }
    const double gflops = 2.0 * n * n * static_cast<double>(n) / best / 1e9;
    std::printf("{\"gflops\": %.2f, \"m\": %d, \"n\": %d, \"k\": %d, \"impl\": \"%s\"}\n",
                gflops, n, n, n, tiled ? "loom_tiled" : "openblas");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sgemm: error: %s\n", e.what());
    return 2;
  }
}
