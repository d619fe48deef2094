// Per-kernel speed on the GPU against the device's measured ceilings: device-to-device copy
// bandwidth for the memory-bound kernels and the cuBLASLt bf16 matmul rate for the matmuls and
// attention, at the shapes of one GPT-2 step (default: 124M, B = 16, T = 1024).
// Prints a markdown table: time per call (median of --reps after a warm-up), achieved GB/s or
// TFLOP/s, and that as a share of the ceiling. Bytes are those the kernel must move at least
// (each input read once, each output written once); FLOPs count the useful multiply-adds (x2),
// the causal attention's half of the T x T products only.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/base/cuda/check.h"
#include "core/base/cuda/context.h"
#include "core/cuda/device_tensor.h"
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"

namespace {

using loom::DType;
using loom::Tensor;
namespace k = loom::kernels::cuda;

double median_ms(loom::cuda::Context& ctx, int reps, const std::function<void()>& call) {
  call();  // warm-up (and the matmul's heuristic query)
  std::vector<double> ms;
  loom::cuda::Event start(true), stop(true);
  for (int i = 0; i < reps; ++i) {
    start.record(ctx.stream());
    call();
    stop.record(ctx.stream());
    stop.synchronize();
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Tensor random_tensor(loom::cuda::Context& ctx, const loom::Shape& shape, DType dtype, float scale) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  for (float& x : v) x = normal(rng);
  return loom::cuda::upload(ctx, v, shape, dtype);
}

}  // namespace

int main(int argc, char** argv) {
  int B = 16, T = 1024, C = 768, NH = 12, NKV = 0, V = 50257, reps = 20;  // NKV 0: NH
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (a == "--batch") B = v;
    else if (a == "--seq") T = v;
    else if (a == "--embd") C = v;
    else if (a == "--heads") NH = v;
    else if (a == "--kv-heads") NKV = v;
    else if (a == "--reps") reps = v;
    else {
      std::fprintf(stderr, "usage: bench_cuda_kernels [--batch B] [--seq T] [--embd C] [--heads NH] [--kv-heads NKV] "
                   "[--reps R]\n");
      return 2;
    }
  }
  if (NKV == 0) NKV = NH;
  try {
    loom::cuda::Context ctx(0);
    const cudaStream_t s = ctx.stream();
    const int N = B * T, Vp = (V + 127) / 128 * 128;
    k::Matmul matmul(ctx.allocator());

    // Ceilings.
    const int64_t copy_bytes = int64_t{1} << 30;
    Tensor src = loom::cuda::device_zeros(ctx, {copy_bytes}, DType::kBF16);
    Tensor dst = loom::cuda::device_zeros(ctx, {copy_bytes}, DType::kBF16);
    const double copy_ms = median_ms(ctx, reps, [&] {
      LOOM_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, s));
    });
    const double copy_gbs = 2.0 * static_cast<double>(src.nbytes()) / (copy_ms * 1e-3) / 1e9;
    src = Tensor();
    dst = Tensor();
    const int M = 8192;
    Tensor ga = random_tensor(ctx, {M, M}, DType::kBF16, 1.0f), gb = random_tensor(ctx, {M, M}, DType::kBF16, 1.0f);
    Tensor gd = loom::cuda::device_zeros(ctx, {M, M}, DType::kBF16);
    const double gemm_ms = median_ms(ctx, reps, [&] {
      matmul.gemm(gd.raw(), DType::kBF16, ga.bf16_data(), gb.bf16_data(), M, M, M, false, false, 1.0f, 0.0f, s);
    });
    const double gemm_tflops = 2.0 * M * static_cast<double>(M) * M / (gemm_ms * 1e-3) / 1e12;
    ga = gb = gd = Tensor();
    std::printf("ceilings on %s: copy %.0f GB/s (read + write of 2 GiB), cuBLASLt bf16 %d^3 matmul %.0f TFLOP/s\n\n",
                ctx.properties().name, copy_gbs, M, gemm_tflops);
    std::printf("| kernel (B=%d, T=%d, C=%d, NH=%d, NKV=%d, V=%d) | us | achieved | of ceiling |\n|---|---|---|---|\n",
                B, T, C, NH, NKV, V);
    auto bandwidth_row = [&](const char* name, double bytes, const std::function<void()>& call) {
      const double ms = median_ms(ctx, reps, call);
      const double gbs = bytes / (ms * 1e-3) / 1e9;
      std::printf("| %s | %.1f | %.0f GB/s | %.0f%% |\n", name, ms * 1e3, gbs, 100 * gbs / copy_gbs);
    };
    auto flops_row = [&](const char* name, double flops, const std::function<void()>& call) {
      const double ms = median_ms(ctx, reps, call);
      const double tflops = flops / (ms * 1e-3) / 1e12;
      std::printf("| %s | %.1f | %.0f TFLOP/s | %.0f%% |\n", name, ms * 1e3, tflops, 100 * tflops / gemm_tflops);
    };

    std::vector<int32_t> ids(static_cast<size_t>(N));
    std::mt19937 rng(3);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % static_cast<unsigned>(V));
    Tensor tokens = loom::cuda::upload(ctx, std::span<const int32_t>(ids), {N});
    Tensor wte = random_tensor(ctx, {Vp, C}, DType::kBF16, 0.02f), wpe = random_tensor(ctx, {T, C}, DType::kBF16, 0.02f);
    Tensor x = random_tensor(ctx, {N, C}, DType::kBF16, 1.0f), y = random_tensor(ctx, {N, C}, DType::kBF16, 1.0f);
    Tensor out = loom::cuda::device_zeros(ctx, {N, C}, DType::kBF16);
    Tensor w = random_tensor(ctx, {C}, DType::kBF16, 1.0f), bias = random_tensor(ctx, {C}, DType::kBF16, 0.1f);
    Tensor stats = loom::cuda::device_zeros(ctx, {2, N}, DType::kF32);
    Tensor dwte = loom::cuda::device_zeros(ctx, {Vp, C}, DType::kF32), dwpe = loom::cuda::device_zeros(ctx, {T, C}, DType::kF32);
    Tensor dw = loom::cuda::device_zeros(ctx, {4 * C}, DType::kF32), db = loom::cuda::device_zeros(ctx, {4 * C}, DType::kF32);
    const double NC2 = 2.0 * N * C;  // bytes of one (N, C) bf16 tensor

    bandwidth_row("embedding forward", NC2 + 4.0 * N + NC2, [&] {
      k::embedding_forward(out.bf16_data(), tokens.i32(), wte.bf16_data(), wpe.bf16_data(), N, T, C, 0, V, 0, s);
    });
    Tensor emb_scratch = loom::cuda::device_zeros(
        ctx, {static_cast<int64_t>(k::embedding_backward_scratch_bytes(N) + 3) / 4}, DType::kI32);
    bandwidth_row("embedding backward", NC2 + 4.0 * N + 2 * 4.0 * N * C, [&] {
      k::embedding_backward(dwte.f32(), dwpe.f32(), x.bf16_data(), tokens.i32(), N, T, C, 0, V, 0, emb_scratch.raw(), s);
    });
    bandwidth_row("residual + layernorm forward", 4 * NC2, [&] {
      k::residual_layernorm_forward(out.bf16_data(), y.bf16_data(), stats.f32(), stats.f32() + N, x.bf16_data(),
                                    y.bf16_data(), bias.bf16_data(), w.bf16_data(), bias.bf16_data(), N, C, s);
    });
    Tensor scratch = loom::cuda::device_zeros(
        ctx,
        {static_cast<int64_t>(std::max({k::layernorm_backward_scratch_floats(N, C), k::bias_backward_scratch_floats(N, 4 * C),
                                        k::attention_backward_scratch_floats(B, T, NH)}))},
        DType::kF32);
    bandwidth_row("layernorm backward", 4 * NC2, [&] {
      k::layernorm_backward(out.bf16_data(), dw.f32(), db.f32(), x.bf16_data(), y.bf16_data(), w.bf16_data(), stats.f32(),
                            stats.f32() + N, N, C, scratch.f32(), s);
    });
    Tensor h = random_tensor(ctx, {N, 4 * C}, DType::kBF16, 1.0f), hpre = loom::cuda::device_zeros(ctx, {N, 4 * C}, DType::kBF16);
    Tensor b4 = random_tensor(ctx, {4 * C}, DType::kBF16, 0.1f);
    bandwidth_row("bias + gelu forward (N, 4C)", 3 * 4 * NC2, [&] {
      k::bias_gelu_forward(hpre.bf16_data(), nullptr, h.bf16_data(), b4.bf16_data(), N, 4 * C, s);
    });
    bandwidth_row("gelu backward (N, 4C)", 3 * 4 * NC2, [&] {
      k::gelu_backward(hpre.bf16_data(), h.bf16_data(), hpre.bf16_data(), int64_t{N} * 4 * C, s);
    });
    bandwidth_row("bias backward (N, 4C)", 4 * NC2, [&] { k::bias_backward(db.f32(), h.bf16_data(), N, 4 * C, scratch.f32(), s); });

    const int QKV = C + 2 * NKV * (C / NH);  // [q: C | k: NKV heads | v: NKV heads]
    Tensor qkv = random_tensor(ctx, {N, QKV}, DType::kBF16, 1.0f), dqkv = loom::cuda::device_zeros(ctx, {N, QKV}, DType::kBF16);
    Tensor lse = loom::cuda::device_zeros(ctx, {B, NH, T}, DType::kF32);
    const double attention_flops = 2.0 * 2.0 * B * NH * (static_cast<double>(T) * (T + 1) / 2) * (C / NH);
    flops_row("attention forward (causal)", attention_flops, [&] {
      k::attention_forward(out.bf16_data(), lse.f32(), qkv.bf16_data(), B, T, C, NH, NKV, s);
    });
    flops_row("attention backward (causal)", 2.5 * attention_flops, [&] {
      k::attention_backward(dqkv.bf16_data(), x.bf16_data(), qkv.bf16_data(), out.bf16_data(), lse.f32(), B, T, C, NH,
                            NKV, scratch.f32(), s);
    });

    Tensor wqkv = random_tensor(ctx, {QKV, C}, DType::kBF16, 0.02f), bqkv = random_tensor(ctx, {QKV}, DType::kBF16, 0.02f);
    Tensor wfc = random_tensor(ctx, {4 * C, C}, DType::kBF16, 0.02f), dwfc = loom::cuda::device_zeros(ctx, {4 * C, C}, DType::kF32);
    flops_row("matmul qkv forward (+bias)", 2.0 * N * C * static_cast<double>(QKV), [&] {
      matmul.forward(qkv.bf16_data(), nullptr, x.bf16_data(), wqkv.bf16_data(), bqkv.bf16_data(), N, C, QKV,
                     k::Epilogue::kBias, s);
    });
    flops_row("matmul fc forward (+bias+gelu)", 2.0 * N * C * 4.0 * C, [&] {
      matmul.forward(h.bf16_data(), hpre.bf16_data(), x.bf16_data(), wfc.bf16_data(), b4.bf16_data(), N, C, 4 * C,
                     k::Epilogue::kBiasGelu, s);
    });
    flops_row("matmul fc backward (dinp + dweight)", 2 * 2.0 * N * C * 4.0 * C, [&] {
      matmul.backward(out.bf16_data(), dwfc.f32(), h.bf16_data(), x.bf16_data(), wfc.bf16_data(), N, C, 4 * C, s);
    });
    Tensor logits = random_tensor(ctx, {N, Vp}, DType::kBF16, 1.0f);
    flops_row("matmul logits forward (N x C x Vp)", 2.0 * N * C * Vp, [&] {
      matmul.forward(logits.bf16_data(), nullptr, x.bf16_data(), wte.bf16_data(), nullptr, N, C, Vp, k::Epilogue::kNone, s);
    });
    Tensor losses = loom::cuda::device_zeros(ctx, {N}, DType::kF32);
    bandwidth_row("fused cross-entropy (logits read twice, gradient written)", 3 * 2.0 * N * Vp, [&] {
      k::fused_cross_entropy(logits.bf16_data(), losses.f32(), tokens.i32(), 1.0f / static_cast<float>(N), N, V, Vp, s);
    });

    const int64_t P = 124'000'000;
    Tensor master = loom::cuda::device_zeros(ctx, {P}, DType::kF32), grad = loom::cuda::device_zeros(ctx, {P}, DType::kF32);
    Tensor m = loom::cuda::device_zeros(ctx, {P}, DType::kF32), v = loom::cuda::device_zeros(ctx, {P}, DType::kF32);
    Tensor params = loom::cuda::device_zeros(ctx, {P}, DType::kBF16), norm = loom::cuda::device_zeros(ctx, {1}, DType::kF32);
    Tensor norm_scratch = loom::cuda::device_zeros(ctx, {static_cast<int64_t>(k::gradient_norm_scratch_floats())}, DType::kF32);
    const k::AdamWSegment segment{0, P, 1};
    Tensor segments = loom::cuda::device_zeros(ctx, {static_cast<int64_t>(sizeof(segment) / 4)}, DType::kI32);
    loom::cuda::copy(ctx, segments, Tensor::view(const_cast<k::AdamWSegment*>(&segment), {sizeof(segment) / 4}, DType::kI32));
    bandwidth_row("gradient norm (124M fp32)", 4.0 * P, [&] {
      k::sum_of_squares(norm.f32(), grad.f32(), P, false, norm_scratch.f32(), s);
      k::finish_norm(norm.f32(), s);
    });
    k::AdamWHyper hyper;
    hyper.lr = 1e-4f;
    hyper.max_norm = 1.0f;
    bandwidth_row("adamw, one launch (124M: 4 fp32 in, 3 fp32 + 1 bf16 out)", 30.0 * P, [&] {
      k::adamw_update(master.f32(), params.bf16_data(), grad.f32(), m.f32(), v.f32(), P,
                      reinterpret_cast<const k::AdamWSegment*>(segments.raw()), 1, norm.f32(), hyper, s);
    });
    ctx.synchronize();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_kernels: %s\n", e.what());
    return 1;
  }
  return 0;
}
