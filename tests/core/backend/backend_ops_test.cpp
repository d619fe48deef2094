// Every Backend op on every backend and precision against CpuBackend fp32 (ggml's
// test-backend-ops): one harness, not a hand-written twin test per op. CudaBackend joins the
// backends in a CUDA build with a GPU; a CUDA build without one checks the CPU backends and then
// reports the case as skipped, so that nobody mistakes it for a GPU pass.
//
// Each case builds its inputs from a seed (the same values on every backend; a bf16 backend
// rounds them on upload), runs the op and reads its outputs back as floats. Three checks:
//   1. the backward convention, on every backend: the op runs twice, its outputs prefilled with
//      zeros and then with random values. An output it overwrites (forward outputs, activation
//      gradients) must come out the same both times; one it accumulates (parameter gradients,
//      the residual stream's gradient) must come out as prefill + the first result.
//   2. CpuBackend fp32 against the kernels' own double-precision tests is not repeated here;
//      it is the reference.
//   3. every other backend against the reference, norm-wise: ||got - want|| / ||want|| <= tol.
// Sizes are odd (N = 39 tokens, OC = 131, 67 vocabulary rows of this rank) so that no op gets
// away with a multiple of a tile; C = 96 with 3 heads of 32 is the smallest head the CUDA
// attention takes. The attention runs with as many key/value heads as heads (GPT-2's), and grouped
// (4 heads on 2 kv heads) and multi-query (4 heads on 1) at the same head size.
//
// Tolerances of bf16 (unit roundoff u = 2^-9 ~ 1.95e-3), derived per op:
//   kCopyTol  = 1u    an output that is one rounded input or one rounding of an f32 sum of
//                     rounded inputs of one sign (embeddings); the residual add takes 2u: three
//                     rounded inputs of either sign summed, then rounded once
//   kOpTol    = 4u    one op on rounded inputs: each input is off by <= u relatively, a product
//                     of two by <= 2u, and the bf16 output by one more u; random signs make
//                     norm-wise sums no worse than that (LayerNorm, matmul, GELU, their
//                     backwards, the cross-entropy statistics)
//   kChainTol = 12u   attention: q.k^T on rounded q, k (2u), its softmax (the logits' error times
//                     their spread, ~1 here: 2u), times rounded v (u), rounded output (u), and the
//                     backward rounds dq, dk, dv once more: 12u leaves a margin of 2;
//                     attention_decode is the forward's part (6u), so 12u leaves it a margin of
//                     4, and its caches are copies of rounded inputs (u)
// The packed variants (_packed) run the same ops with documents packed into the sequences
// (doc_starts, below): the same formulas over fewer keys or other positions, so the same
// tolerances.
// The GPU computes the same formulas in another order (f32 partial sums in another order: ~1e-6
// relative, far below u), so the same tolerances hold for it.
#include "core/backend/backend.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/backend/cpu_backend.h"
#include "core/backend/op_checks.h"
#include "core/base/device.h"
#include "core/rng.h"
#include "kernels/cpu/rope.h"
#include "test_util.h"

#ifdef LOOM_HAS_CUDA
#include "core/backend/cuda/cuda_backend.h"
#endif

namespace loom {
namespace {

using backend_checks::present;

constexpr double kU = 1.0 / 512;  // bf16's unit roundoff
constexpr double kCopyTol = 1 * kU, kOpTol = 4 * kU, kChainTol = 12 * kU;

constexpr int kB = 3, kT = 13, kN = kB * kT, kC = 96, kNH = 3, kOC = 131, kVl = 67, kVocabStart = 5;
constexpr int kMaxT = 17;

constexpr int kRopeNH = 4, kRopeNKV = 2, kRopeHS = 32, kRopeWidth = (kRopeNH + 2 * kRopeNKV) * kRopeHS;

// RoPE's inverse frequencies (kRopeHS / 2) f32 on the backend's device.
Tensor rope_frequencies(Backend& backend) {
  const std::vector<float> f =
      kernels::cpu::rope_inverse_frequencies(kRopeHS, 500000.0f, {true, 8.0f, 1.0f, 4.0f, 8192});
  Tensor t = backend.zeros({kRopeHS / 2}, DType::kF32);
  backend.from_host(t, f.data());
  return t;
}

// Document starts of rows first_row .. first_row + n - 1 of (B, T) sequences that pack documents
// of lengths 4, 1, 3, 5 (the 13 positions of a sequence) into every row but the second, which
// holds one document: the ops' doc_starts.
std::vector<int32_t> packed_doc_starts(int first_row, int n) {
  static_assert(kT == 13, "the document lengths below fill a sequence of 13");
  constexpr int kStarts[kT] = {0, 0, 0, 0, 4, 5, 5, 5, 8, 8, 8, 8, 8};
  std::vector<int32_t> starts(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const int row = first_row + i;
    starts[static_cast<size_t>(i)] = (row / kT) % kB == 1 ? 0 : kStarts[row % kT];
  }
  return starts;
}

enum class Role { kOverwrite, kAccumulate };

// One run of an op on one backend: inputs made from the seed, outputs read back as floats.
class Io {
 public:
  Io(Backend& backend, bool prefill) : backend_(backend), prefill_(prefill) {}

  // Random values of the backend's activation dtype (or f32), the same for every backend.
  Tensor act(const std::string& name, const Shape& shape, float scale = 1.0f, float offset = 0.0f) {
    return upload(name, shape, backend_.activation_dtype(), scale, offset);
  }
  Tensor f32(const std::string& name, const Shape& shape, float scale = 1.0f, float offset = 0.0f) {
    return upload(name, shape, DType::kF32, scale, offset);
  }
  Tensor ids(const std::string& name, int n, int lo, int hi, bool some_ignored = false) {
    std::vector<int32_t> v = testing::random_ints(static_cast<size_t>(n), seed_of(name), lo, hi);
    if (some_ignored) {
      for (size_t i = 0; i < v.size(); i += 5) v[i] = -1;
    }
    Tensor t = backend_.zeros({n}, DType::kI32);
    backend_.from_host(t, v.data());
    return t;
  }
  // packed_doc_starts on the device.
  Tensor doc_starts(int first_row, int n) {
    const std::vector<int32_t> v = packed_doc_starts(first_row, n);
    Tensor t = backend_.zeros({n}, DType::kI32);
    backend_.from_host(t, v.data());
    return t;
  }
  // An output: zeros, or (the second run) random values the op must overwrite or add to.
  Tensor out(const std::string& name, const Shape& shape, DType dtype, Role role) {
    Tensor t = backend_.zeros(shape, dtype);
    if (prefill_) {
      std::vector<float> p = testing::random_floats(static_cast<size_t>(shape.numel()), seed_of(name + "/prefill"));
      put(t, p);
      prefills_[name] = read(t);
    }
    roles_[name] = role;
    dtypes_[name] = dtype;
    outputs_.emplace_back(name, t);
    return t;
  }
  Tensor out_act(const std::string& name, const Shape& shape, Role role = Role::kOverwrite) {
    return out(name, shape, backend_.activation_dtype(), role);
  }
  // An input the op updates in part (a KV cache): random values of the activation dtype, the same
  // in both runs, read back as an output. Both runs must then leave the same values, as for an
  // overwritten output, and the reference checks the part kept as well as the part written.
  Tensor in_out(const std::string& name, const Shape& shape) {
    Tensor t = act(name, shape);
    roles_[name] = Role::kOverwrite;
    dtypes_[name] = t.dtype();
    outputs_.emplace_back(name, t);
    return t;
  }
  Backend& backend() { return backend_; }

  // Every output, as floats, after the op ran.
  std::map<std::string, std::vector<float>> results() {
    backend_.synchronize();
    std::map<std::string, std::vector<float>> r;
    for (const auto& [name, t] : outputs_) r[name] = read(t);
    return r;
  }
  const std::map<std::string, std::vector<float>>& prefills() const { return prefills_; }
  const std::map<std::string, Role>& roles() const { return roles_; }
  DType dtype_of(const std::string& name) const { return dtypes_.at(name); }

 private:
  static uint32_t seed_of(const std::string& name) { return static_cast<uint32_t>(1000 + stream_id_of(name) % 100000); }

  Tensor upload(const std::string& name, const Shape& shape, DType dtype, float scale, float offset) {
    std::vector<float> v = testing::random_floats(static_cast<size_t>(shape.numel()), seed_of(name));
    for (float& x : v) x = offset + scale * x;
    Tensor t = backend_.zeros(shape, dtype);
    put(t, v);
    return t;
  }
  void put(const Tensor& t, const std::vector<float>& v) {
    Tensor staging = Tensor::zeros(t.shape(), DType::kF32);
    std::memcpy(staging.f32(), v.data(), v.size() * sizeof(float));
    if (t.dtype() == DType::kF64) {
      std::vector<double> wide(v.begin(), v.end());
      backend_.from_host(t, wide.data());
      return;
    }
    if (t.dtype() == DType::kF32) {
      backend_.from_host(t, staging.f32());
      return;
    }
    Tensor rounded = Tensor::zeros(t.shape(), t.dtype());
    CpuBackend().copy(rounded, staging);
    backend_.from_host(t, rounded.raw());
  }
  std::vector<float> read(const Tensor& t) {
    Tensor host = Tensor::zeros(t.shape(), t.dtype());
    backend_.to_host(host.raw(), t);
    Tensor wide = Tensor::zeros(t.shape(), DType::kF32);
    if (t.dtype() == DType::kF64) {
      for (int64_t i = 0; i < t.numel(); ++i) wide.f32()[i] = static_cast<float>(host.f64()[i]);
    } else {
      CpuBackend().copy(wide, host);
    }
    return std::vector<float>(wide.f32(), wide.f32() + wide.numel());
  }

  Backend& backend_;
  bool prefill_;
  std::vector<std::pair<std::string, Tensor>> outputs_;
  std::map<std::string, std::vector<float>> prefills_;
  std::map<std::string, Role> roles_;
  std::map<std::string, DType> dtypes_;
};

struct OpCase {
  std::string name;
  double tolerance;  // bf16 against fp32 (see the file comment)
  std::function<void(Io&)> run;
};

std::vector<OpCase> op_cases() {
  const DType f32 = DType::kF32;
  std::vector<OpCase> cases;
  cases.push_back({"token_embedding_forward", kCopyTol, [](Io& io) {
    Tensor tokens = io.ids("tokens", kN, 0, kVocabStart + kVl + 9);  // some outside the slice
    io.backend().token_embedding_forward(io.out_act("out", {kN, kC}), tokens, io.act("wte", {kVl, kC}), kVocabStart);
  }});
  // Rows from the fifth of the sequences, as a sequence-parallel rank's; doc_starts covers the same
  // rows.
  for (bool packed : {false, true}) {
    cases.push_back({packed ? "position_embedding_forward_packed" : "position_embedding_forward", kCopyTol,
                     [packed](Io& io) {
                       io.backend().position_embedding_forward(io.out_act("out", {kN, kC}, Role::kAccumulate),
                                                               io.act("wpe", {kMaxT, kC}), kT, 4,
                                                               packed ? io.doc_starts(4, kN) : Tensor());
                     }});
  }
  cases.push_back({"token_embedding_backward", kCopyTol, [f32](Io& io) {
    Tensor tokens = io.ids("tokens", kN, 0, kVocabStart + kVl + 9);
    io.backend().token_embedding_backward(io.out("dwte", {kVl, kC}, f32, Role::kAccumulate), io.act("dout", {kN, kC}),
                                          tokens, kVocabStart);
  }});
  for (bool packed : {false, true}) {
    cases.push_back({packed ? "position_embedding_backward_packed" : "position_embedding_backward", kCopyTol,
                     [f32, packed](Io& io) {
                       io.backend().position_embedding_backward(io.out("dwpe", {kMaxT, kC}, f32, Role::kAccumulate),
                                                                io.act("dout", {kN, kC}), kT, 4,
                                                                packed ? io.doc_starts(4, kN) : Tensor());
                     }});
  }
  cases.push_back({"layernorm_forward", kOpTol, [f32](Io& io) {
    io.backend().layernorm_forward(io.out_act("out", {kN, kC}), io.out("mean", {kN}, f32, Role::kOverwrite),
                                   io.out("rstd", {kN}, f32, Role::kOverwrite), io.act("inp", {kN, kC}, 2.0f, 0.5f),
                                   io.act("weight", {kC}, 0.5f, 1.0f), io.act("bias", {kC}, 0.1f));
  }});
  cases.push_back({"residual_layernorm_forward", kOpTol, [f32](Io& io) {
    io.backend().residual_layernorm_forward(io.out_act("residual_out", {kN, kC}), io.out_act("out", {kN, kC}),
                                            io.out("mean", {kN}, f32, Role::kOverwrite),
                                            io.out("rstd", {kN}, f32, Role::kOverwrite), io.act("residual", {kN, kC}),
                                            io.act("delta", {kN, kC}), io.act("delta_bias", {kC}, 0.1f),
                                            io.act("weight", {kC}, 0.5f, 1.0f), io.act("bias", {kC}, 0.1f));
  }});
  cases.push_back({"residual_add", 2 * kU, [](Io& io) {
    io.backend().residual_add(io.out_act("out", {kN, kC}), io.act("a", {kN, kC}), io.act("b", {kN, kC}),
                              io.act("bias", {kC}, 0.1f));
  }});
  cases.push_back({"layernorm_backward", kOpTol, [f32](Io& io) {
    // The statistics of the forward on the same input.
    Tensor inp = io.act("inp", {kN, kC}, 2.0f, 0.5f), weight = io.act("weight", {kC}, 0.5f, 1.0f);
    Tensor mean = io.backend().zeros({kN}, f32), rstd = io.backend().zeros({kN}, f32);
    Tensor scratch = io.backend().zeros({kN, kC}, io.backend().activation_dtype());
    io.backend().layernorm_forward(scratch, mean, rstd, inp, weight, io.act("bias", {kC}, 0.1f));
    io.backend().layernorm_backward(io.out_act("dresidual", {kN, kC}, Role::kAccumulate),
                                    io.out("dweight", {kC}, f32, Role::kAccumulate),
                                    io.out("dbias", {kC}, f32, Role::kAccumulate), io.act("dout", {kN, kC}), inp, weight,
                                    mean, rstd);
  }});
  // RMSNorm: kOpTol as the LayerNorm (one op on rounded inputs: x, weight off by u each, their
  // product by 2u, the statistic's sum of squares of rounded inputs by ~u/2 after the square root,
  // the bf16 output one more u; 4u). The backward's dresidual = rstd * (g - norm * mean(g * norm))
  // with g = weight * dout: products of three rounded values (3u) and one rounding (u); dweight
  // sums dout * norm in f32 (2u). Inputs of both signs around 0 (no centring); eps 1e-6 (Llama's).
  constexpr float kRmsEps = 1e-6f;
  cases.push_back({"rmsnorm_forward", kOpTol, [f32](Io& io) {
    io.backend().rmsnorm_forward(io.out_act("out", {kN, kC}), io.out("rstd", {kN}, f32, Role::kOverwrite),
                                 io.act("inp", {kN, kC}, 2.0f), io.act("weight", {kC}, 0.5f, 1.0f), kRmsEps);
  }});
  cases.push_back({"residual_rmsnorm_forward", kOpTol, [f32](Io& io) {
    io.backend().residual_rmsnorm_forward(io.out_act("residual_out", {kN, kC}), io.out_act("out", {kN, kC}),
                                          io.out("rstd", {kN}, f32, Role::kOverwrite), io.act("residual", {kN, kC}),
                                          io.act("delta", {kN, kC}), io.act("delta_bias", {kC}, 0.1f),
                                          io.act("weight", {kC}, 0.5f, 1.0f), kRmsEps);
  }});
  cases.push_back({"rmsnorm_backward", kOpTol, [f32](Io& io) {
    // The statistic of the forward on the same input.
    Tensor inp = io.act("inp", {kN, kC}, 2.0f), weight = io.act("weight", {kC}, 0.5f, 1.0f);
    Tensor rstd = io.backend().zeros({kN}, f32);
    Tensor scratch = io.backend().zeros({kN, kC}, io.backend().activation_dtype());
    io.backend().rmsnorm_forward(scratch, rstd, inp, weight, kRmsEps);
    io.backend().rmsnorm_backward(io.out_act("dresidual", {kN, kC}, Role::kAccumulate),
                                  io.out("dweight", {kC}, f32, Role::kAccumulate), io.act("dout", {kN, kC}), inp,
                                  weight, rstd);
  }});
  for (Epilogue e : {Epilogue::kNone, Epilogue::kBias, Epilogue::kBiasGelu}) {
    const std::string name = e == Epilogue::kNone ? "matmul_forward" : e == Epilogue::kBias ? "matmul_forward_bias"
                                                                                             : "matmul_forward_bias_gelu";
    cases.push_back({name, kOpTol, [e](Io& io) {
      const float s = 1.0f / std::sqrt(static_cast<float>(kC));
      io.backend().matmul_forward(io.out_act("out", {kN, kOC}),
                                  e == Epilogue::kBiasGelu ? io.out_act("pre", {kN, kOC}) : Tensor(),
                                  io.act("inp", {kN, kC}), io.act("weight", {kOC, kC}, s),
                                  e == Epilogue::kNone ? Tensor() : io.act("bias", {kOC}, 0.1f), e);
    }});
  }
  cases.push_back({"matmul_backward", kOpTol, [f32](Io& io) {
    io.backend().matmul_backward(io.out_act("dinp", {kN, kC}), io.out("dweight", {kOC, kC}, f32, Role::kAccumulate),
                                 io.act("dout", {kN, kOC}), io.act("inp", {kN, kC}), io.act("weight", {kOC, kC}, 0.1f));
  }});
  cases.push_back({"bias_backward", kOpTol, [f32](Io& io) {
    io.backend().bias_backward(io.out("dbias", {kOC}, f32, Role::kAccumulate), io.act("dout", {kN, kOC}));
  }});
  cases.push_back({"gelu_backward", kOpTol, [](Io& io) {
    io.backend().gelu_backward(io.out_act("dinp", {kN, kOC}), io.act("pre", {kN, kOC}, 3.0f), io.act("dout", {kN, kOC}));
  }});
  // SwiGLU, F = kOC (odd: the GPU's single-element path), gates in [-3, 3]. kOpTol: silu(g)'s
  // relative condition number |1 + g (1 - s)| is <= 2 there, so a rounded gate moves silu by
  // <= 2u, the rounded up by u and the rounded output by u (4u); in the backward silu'(g) moves
  // by <= |g silu''(g)| u <= 0.6u absolutely against |silu'| ~ 0.5 to 1 where the norm sits, and
  // dout, up and the output add u each: under 4u.
  cases.push_back({"swiglu_forward", kOpTol, [](Io& io) {
    io.backend().swiglu_forward(io.out_act("out", {kN, kOC}), io.act("gu", {kN, 2 * kOC}, 3.0f));
  }});
  cases.push_back({"swiglu_backward", kOpTol, [](Io& io) {
    io.backend().swiglu_backward(io.out_act("dgu", {kN, 2 * kOC}), io.act("gu", {kN, 2 * kOC}, 3.0f),
                                 io.act("dout", {kN, kOC}));
  }});
  // Rotary position embeddings on a grouped-query qkv (kRopeNH = 4 query heads, 2 key/value heads
  // of 32; Llama 3.1's theta and scaling), in place: qkv is an input the op rewrites (in_out).
  // 2u: the rotation is orthogonal, so the inputs' rounding (<= u each, relatively) moves the
  // rotated values by <= u norm-wise and rounding them to bf16 adds u; v is its input's rounding
  // alone (u). The backward is the same rotation transposed. Positions from 4, from 0 (the
  // backward's), and decoding's one row per sequence at position 1000.
  cases.push_back({"rope_forward", 2 * kU, [](Io& io) {
    io.backend().rope_forward(io.in_out("qkv", {kN, kRopeWidth}), rope_frequencies(io.backend()), kB, kT, kRopeNH,
                              kRopeNKV, 4, Tensor());
  }});
  cases.push_back({"rope_forward_decode", 2 * kU, [](Io& io) {
    io.backend().rope_forward(io.in_out("qkv", {kB, kRopeWidth}), rope_frequencies(io.backend()), kB, 1, kRopeNH,
                              kRopeNKV, 1000, Tensor());
  }});
  cases.push_back({"rope_forward_packed", 2 * kU, [](Io& io) {
    io.backend().rope_forward(io.in_out("qkv", {kN, kRopeWidth}), rope_frequencies(io.backend()), kB, kT, kRopeNH,
                              kRopeNKV, 0, io.doc_starts(0, kN));
  }});
  for (bool packed : {false, true}) {
    cases.push_back({packed ? "rope_backward_packed" : "rope_backward", 2 * kU, [packed](Io& io) {
      io.backend().rope_backward(io.in_out("dqkv", {kN, kRopeWidth}), rope_frequencies(io.backend()), kB, kT, kRopeNH,
                                 kRopeNKV, packed ? io.doc_starts(0, kN) : Tensor());
    }});
  }
  // Heads of kHeadSize: (NH, NKV) as many kv heads as heads, grouped, multi-query.
  struct Heads {
    const char* suffix;
    int NH, NKV;
  };
  constexpr int kHeadSize = kC / kNH;
  for (const Heads& heads : {Heads{"", kNH, kNH}, Heads{"_gqa", 4, 2}, Heads{"_mqa", 4, 1}}) {
    const int NH = heads.NH, NKV = heads.NKV;
    const int Cl = NH * kHeadSize, KV = NKV * kHeadSize, W = Cl + 2 * KV;  // W: [q | k | v]
    const std::string suffix = heads.suffix;
    for (bool packed : {false, true}) {
      const std::string packing = packed ? "_packed" : "";
      cases.push_back({"attention_forward" + suffix + packing, kChainTol, [f32, NH, NKV, Cl, W, packed](Io& io) {
        io.backend().attention_forward(io.out_act("out", {kN, Cl}),
                                       io.out("lse", {kB * NH * kT}, f32, Role::kOverwrite), io.act("qkv", {kN, W}),
                                       kB, kT, NH, NKV, packed ? io.doc_starts(0, kN) : Tensor());
      }});
      cases.push_back({"attention_backward" + suffix + packing, kChainTol, [f32, NH, NKV, Cl, W, packed](Io& io) {
        Tensor qkv = io.act("qkv", {kN, W});
        Tensor out = io.backend().zeros({kN, Cl}, io.backend().activation_dtype());
        Tensor lse = io.backend().zeros({kB * NH * kT}, f32);
        Tensor doc_starts = packed ? io.doc_starts(0, kN) : Tensor();
        io.backend().attention_forward(out, lse, qkv, kB, kT, NH, NKV, doc_starts);
        io.backend().attention_backward(io.out_act("dqkv", {kN, W}), io.act("dout", {kN, Cl}), qkv, out, lse, kB, kT,
                                        NH, NKV, doc_starts);
      }});
    }
    // The first row of the cache, one in the middle and its last.
    for (int pos : {0, 11, kMaxT - 1}) {
      cases.push_back({"attention_decode" + suffix + "_pos" + std::to_string(pos), kChainTol,
                       [pos, NH, NKV, Cl, KV, W](Io& io) {
                         io.backend().attention_decode(io.out_act("out", {kB, Cl}),
                                                       io.in_out("k_cache", {kB, kMaxT, KV}),
                                                       io.in_out("v_cache", {kB, kMaxT, KV}),
                                                       io.act("qkv", {kB, W}), NH, NKV, pos);
                       }});
    }
  }
  cases.push_back({"vocab_cross_entropy", kOpTol, [f32](Io& io) {
    Backend& be = io.backend();
    Tensor logits = io.act("logits", {kN, kVl}, 3.0f);
    Tensor targets = io.ids("targets", kN, 0, kVocabStart + kVl + 9, /*some_ignored=*/true);
    Tensor row_max = io.out("row_max", {kN}, f32, Role::kOverwrite);
    Tensor sum_exp = io.out("sum_exp", {kN}, f32, Role::kOverwrite);
    Tensor target_logit = io.out("target_logit", {kN}, f32, Role::kOverwrite);
    be.vocab_row_max(row_max, logits);
    be.vocab_sum_exp(sum_exp, target_logit, logits, targets, row_max, kVocabStart);
    be.vocab_losses(io.out("losses", {kN}, f32, Role::kOverwrite), row_max, sum_exp, target_logit, targets);
    be.vocab_cross_entropy_backward(io.out_act("dlogits", {kN, kVl}), logits, targets, row_max, sum_exp, kVocabStart,
                                    0.25f);
  }});
  cases.push_back({"sum_of_squares", kOpTol, [](Io& io) {
    Backend& be = io.backend();
    Tensor result = io.out("result", {1}, be.accumulator_dtype(), Role::kOverwrite);
    be.sum_of_squares(result, io.f32("x", {1001}), /*accumulate=*/false);
    be.sum_of_squares(result, io.f32("y", {77}), /*accumulate=*/true);
  }});
  cases.push_back({"adamw_update", kOpTol, [f32](Io& io) {
    Backend& be = io.backend();
    constexpr int n = 301;
    // The optimizer's state is f32 on every backend; only the compute copy is in its precision.
    Tensor master = io.f32("master", {n}), grad = io.f32("grad", {n}, 0.1f);
    Tensor m = io.f32("m", {n}, 0.01f), v = io.f32("v", {n}, 0.001f, 0.002f);
    Tensor norm = be.zeros({1}, be.accumulator_dtype());
    be.sum_of_squares(norm, grad, false);
    std::vector<double> host_norm(1);
    Tensor host = Tensor::zeros({1}, be.accumulator_dtype());
    be.to_host(host.raw(), norm);
    const double sq = be.accumulator_dtype() == DType::kF64 ? *host.f64() : *host.f32();
    if (be.accumulator_dtype() == DType::kF64) {
      *host.f64() = std::sqrt(sq);
    } else {
      *host.f32() = static_cast<float>(std::sqrt(sq));
    }
    be.from_host(norm, host.raw());
    // The compute copy starts as the master weights in the backend's dtype, as in training;
    // elements outside the segments (padding) must stay as they are.
    Tensor compute = be.precision() == Precision::kF32 ? Tensor() : io.act("master", {n});
    kernels::cpu::AdamWArenaHyper hyper;
    hyper.lr = 1e-2f;
    hyper.weight_decay = 0.1f;
    hyper.step = 3;
    hyper.max_norm = 0.5f;  // the norm of grad is ~1: clipping applies
    be.adamw_update(master, compute, grad, m, v, {{0, 120, 1}, {120, 250, 0}, {260, n, 1}}, norm, hyper);
    for (const auto& [name, t] : {std::pair{"master_after", &master}, {"m_after", &m}, {"v_after", &v},
                                  {"compute_after", &compute}}) {
      Tensor copy = io.out(name, {n}, f32, Role::kOverwrite);
      be.copy(copy, present(*t) ? *t : master);  // fp32: the master is the compute copy
    }
  }});
  return cases;
}

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

// Runs the case twice on `backend` and checks the backward convention; returns the outputs of the
// run from zeros.
std::map<std::string, std::vector<float>> run_checked(const OpCase& c, Backend& backend) {
  Io clean(backend, false), prefilled(backend, true);
  c.run(clean);
  c.run(prefilled);
  std::map<std::string, std::vector<float>> a = clean.results(), b = prefilled.results();
  for (const auto& [name, role] : clean.roles()) {
    SCOPED_TRACE(backend.name() + " " + c.name + " output " + name);
    const std::vector<float>& first = a.at(name);
    std::vector<float> second = b.at(name);
    if (role == Role::kAccumulate) {
      const std::vector<float>& p = prefilled.prefills().at(name);
      for (size_t i = 0; i < second.size(); ++i) second[i] -= p[i];
      // (prefill + x) - prefill is x up to two roundings: of the sum (relative u of |p| + |x|)
      // and of x alone (u of |x|); u is bf16's for a bf16 output, else f32's (with margin).
      const bool bf16_output = clean.dtype_of(name) == DType::kBF16;
      const double u = bf16_output ? kU : 1e-7;
      for (size_t i = 0; i < second.size(); ++i) {
        const double bound = 2 * u * (std::fabs(p[i]) + 2 * std::fabs(first[i])) + 1e-12;
        if (std::fabs(second[i] - first[i]) <= bound) continue;
        ADD_FAILURE() << "element " << i << ": the accumulated output minus its prefill is " << second[i]
                      << ", alone it is " << first[i];
        break;
      }
    } else {
      for (size_t i = 0; i < second.size(); ++i) {
        if (second[i] == first[i]) continue;
        ADD_FAILURE() << "element " << i << ": an overwritten output depends on its old value: " << second[i]
                      << " after a prefill, " << first[i] << " after zeros";
        break;
      }
    }
  }
  return a;
}

std::vector<std::unique_ptr<Backend>> backends_under_test() {
  std::vector<std::unique_ptr<Backend>> list;
  list.push_back(std::make_unique<CpuBackend>(Precision::kBF16));
#ifdef LOOM_HAS_CUDA
  if (device_count() > 0) list.push_back(make_cuda_backend(0));
#endif
  return list;
}

class BackendOpsTest : public ::testing::TestWithParam<OpCase> {};

TEST_P(BackendOpsTest, EveryBackendMatchesCpuFp32) {
  const OpCase& c = GetParam();
  CpuBackend reference(Precision::kF32);
  const std::map<std::string, std::vector<float>> want = run_checked(c, reference);
  for (const auto& [name, values] : want) {
    for (float x : values) ASSERT_TRUE(std::isfinite(x)) << c.name << " output " << name << " is not finite";
  }
  for (const std::unique_ptr<Backend>& backend : backends_under_test()) {
    const std::map<std::string, std::vector<float>> got = run_checked(c, *backend);
    const double tol = backend->precision() == Precision::kF32 ? 1e-5 : c.tolerance;
    for (const auto& [name, values] : want) {
      const double err = relative_error(got.at(name), values);
      EXPECT_LE(err, tol) << backend->name() << " " << c.name << " output " << name << ": relative error " << err
                          << " above " << tol;
    }
  }
#ifdef LOOM_HAS_CUDA
  // Reported as skipped only if the CPU backends passed: a failure above still fails the test.
  if (device_count() == 0) GTEST_SKIP() << "the CPU backends passed; no GPU here, so CudaBackend did not run";
#endif
}

INSTANTIATE_TEST_SUITE_P(Ops, BackendOpsTest, ::testing::ValuesIn(op_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& param) { return param.param.name; });

TEST(BackendOpsTest, ShapeAndDtypeMismatchesNameTheOpAndTheTensor) {
  CpuBackend backend(Precision::kBF16);
  Tensor out = backend.zeros({4, 8}, DType::kF32);  // f32 where bf16 is expected
  Tensor inp = backend.zeros({4, 8}, DType::kBF16), w = backend.zeros({8}, DType::kBF16);
  try {
    backend.layernorm_forward(out, {}, {}, inp, w, w);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layernorm_forward : out is (4, 8) f32"), std::string::npos) << e.what();
  }
}

TEST(BackendOpsTest, RMSNormRefusesANonPositiveEps) {
  CpuBackend backend(Precision::kF32);
  Tensor out = backend.zeros({4, 8}, DType::kF32), inp = backend.zeros({4, 8}, DType::kF32);
  Tensor w = backend.zeros({8}, DType::kF32);
  try {
    backend.rmsnorm_forward(out, {}, inp, w, 0.0f);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rmsnorm_forward: eps must be positive"), std::string::npos) << e.what();
  }
}

TEST(BackendOpsTest, SwiGLURefusesAGuNotTwiceAsWideAndAnAliasedGradient) {
  CpuBackend backend(Precision::kBF16);
  const DType bf16 = DType::kBF16;
  Tensor out = backend.zeros({4, 8}, bf16), dgu = backend.zeros({4, 16}, bf16);
  try {
    backend.swiglu_forward(out, backend.zeros({4, 8}, bf16));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("swiglu_forward : gu is (4, 8) bf16"), std::string::npos) << e.what();
  }
  try {
    backend.swiglu_backward(dgu, dgu, out);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("swiglu_backward: dgu must not alias gu or dout"), std::string::npos)
        << e.what();
  }
}

TEST(BackendOpsTest, RoPERefusesAQkvOfAnotherWidthAndKeyHeadsThatDoNotDivideTheQueryHeads) {
  CpuBackend backend(Precision::kBF16);
  const DType bf16 = DType::kBF16;
  Tensor inv_freq = backend.zeros({4}, DType::kF32);  // head size 8
  try {
    // 4 query heads and 2 key/value heads of 8: rows of 64, not 48.
    backend.rope_forward(backend.zeros({6, 48}, bf16), inv_freq, 2, 3, 4, 2, 0, Tensor());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_forward : qkv is (6, 48) bf16 on cpu ; expected (6, 64) bf16"),
              std::string::npos)
        << e.what();
  }
  try {
    backend.rope_backward(backend.zeros({6, 80}, bf16), inv_freq, 2, 3, 4, 3, Tensor());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_backward : the 3 key/value heads must divide the 4 query heads"),
              std::string::npos)
        << e.what();
  }
  try {
    backend.rope_forward(backend.zeros({2, 64}, bf16), inv_freq, 2, 1, 4, 2, -1, Tensor());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_forward : positions -1 .. -1 outside 0 .."), std::string::npos)
        << e.what();
  }
}

TEST(BackendOpsTest, AttentionDecodeRefusesAPositionOutsideTheCache) {
  CpuBackend backend(Precision::kBF16);
  const DType bf16 = DType::kBF16;
  Tensor out = backend.zeros({2, 8}, bf16), qkv = backend.zeros({2, 24}, bf16);
  Tensor k_cache = backend.zeros({2, 5, 8}, bf16), v_cache = backend.zeros({2, 5, 8}, bf16);
  try {
    backend.attention_decode(out, k_cache, v_cache, qkv, 2, 2, 5);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention_decode: position 5 outside the cache's 5 positions"),
              std::string::npos)
        << e.what();
  }
  // A cache of another shape than (B, max_T, Cl) is named.
  try {
    backend.attention_decode(out, backend.zeros({10, 8}, bf16), v_cache, qkv, 2, 2, 0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention_decode : k_cache is (10, 8) bf16"), std::string::npos) << e.what();
  }
}

// Grouped-query attention's contract: the kv heads must divide the heads, and a qkv, dqkv or cache
// sized for another number of kv heads is named with the shape expected.
TEST(BackendOpsTest, AttentionRefusesBadKeyValueHeads) {
  CpuBackend backend(Precision::kF32);
  const DType f32 = DType::kF32;
  const int B = 2, T = 3, N = B * T, NH = 4, HS = 8, Cl = NH * HS;
  Tensor out = backend.zeros({N, Cl}, f32), lse = backend.zeros({B * NH * T}, f32);
  const std::string not_dividing = testing::error_of([&] {
    backend.attention_forward(out, lse, backend.zeros({N, Cl + 2 * 3 * HS}, f32), B, T, NH, 3, Tensor());
  });
  EXPECT_NE(not_dividing.find("attention_forward : NKV 3 key/value heads must divide the NH 4 query heads"),
            std::string::npos)
      << not_dividing;
  // A multi-head qkv (N, 3 * Cl) handed to an attention of 2 kv heads, which expects (N, Cl + 2 * 2 * HS).
  const std::string multi_head_qkv = testing::error_of([&] {
    backend.attention_forward(out, lse, backend.zeros({N, 3 * Cl}, f32), B, T, NH, 2, Tensor());
  });
  EXPECT_NE(multi_head_qkv.find("attention_forward : qkv is (6, 96) f32 on cpu ; expected (6, 64) f32"),
            std::string::npos)
      << multi_head_qkv;
  Tensor qkv = backend.zeros({N, Cl + 2 * 2 * HS}, f32);
  const std::string bad_dqkv = testing::error_of([&] {
    backend.attention_backward(backend.zeros({N, 3 * Cl}, f32), out, qkv, out, lse, B, T, NH, 2, Tensor());
  });
  EXPECT_NE(bad_dqkv.find("attention_backward : dqkv is (6, 96) f32 on cpu ; expected (6, 64) f32"),
            std::string::npos)
      << bad_dqkv;
  // Caches of Cl channels, where 1 kv head needs HS.
  Tensor step_out = backend.zeros({B, Cl}, f32), step_qkv = backend.zeros({B, Cl + 2 * HS}, f32);
  const std::string bad_cache = testing::error_of([&] {
    backend.attention_decode(step_out, backend.zeros({B, 5, Cl}, f32), backend.zeros({B, 5, Cl}, f32), step_qkv,
                             NH, 1, 0);
  });
  EXPECT_NE(bad_cache.find("attention_decode : k_cache is (2, 5, 32) f32 on cpu ; expected (2, 5, 8) f32"),
            std::string::npos)
      << bad_cache;
}

// doc_starts is (N) i32 for the attention and RoPE, and covers out's rows for the position
// embedding: another size or dtype is named with the op.
TEST(BackendOpsTest, PackedOpsRefuseDocStartsOfAnotherShapeOrDtype) {
  CpuBackend backend(Precision::kF32);
  const DType f32 = DType::kF32, i32 = DType::kI32;
  const int B = 2, T = 3, N = B * T, NH = 2, HS = 8, Cl = NH * HS;
  Tensor out = backend.zeros({N, Cl}, f32), lse = backend.zeros({B * NH * T}, f32);
  Tensor qkv = backend.zeros({N, 3 * Cl}, f32);
  const std::string attention = testing::error_of([&] {
    backend.attention_forward(out, lse, qkv, B, T, NH, NH, backend.zeros({N - 1}, i32));
  });
  EXPECT_NE(attention.find("attention_forward : doc_starts is (5) i32 on cpu ; expected (6) i32"), std::string::npos)
      << attention;
  const std::string attention_backward = testing::error_of([&] {
    backend.attention_backward(qkv, out, qkv, out, lse, B, T, NH, NH, backend.zeros({N}, f32));
  });
  EXPECT_NE(attention_backward.find("attention_backward : doc_starts is (6) f32 on cpu ; expected (6) i32"),
            std::string::npos)
      << attention_backward;
  const std::string rope = testing::error_of([&] {
    backend.rope_backward(qkv, backend.zeros({HS / 2}, f32), B, T, NH, NH, backend.zeros({2 * N}, i32));
  });
  EXPECT_NE(rope.find("rope_backward : doc_starts is (12) i32 on cpu ; expected (6) i32"), std::string::npos) << rope;
  // A sequence-parallel rank's 3 rows: doc_starts of the whole micro-batch is refused.
  const std::string position = testing::error_of([&] {
    backend.position_embedding_forward(backend.zeros({N / 2, Cl}, f32), backend.zeros({T, Cl}, f32), T, 3,
                                       backend.zeros({N}, i32));
  });
  EXPECT_NE(position.find("position_embedding_forward : doc_starts is (6) i32 on cpu ; expected (3) i32"),
            std::string::npos)
      << position;
}

}  // namespace
}  // namespace loom
