#include "core/cuda/gpt_trainer.h"

#include "core/backend/cpu_backend.h"

#include <cmath>

#include "core/base/check.h"
#include "core/base/cuda/check.h"
#include "core/cuda/device_tensor.h"
#include "core/model/gpt2_layout.h"
#include "kernels/cpu/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "parallel/solo_communicator.h"

namespace loom::cuda {

namespace k = kernels::cuda;

namespace {

constexpr int kPerLayer = 12;          // tensors per block, in core/gpt.h's order
constexpr int64_t kParamAlign = 64;    // elements: every tensor starts 128-byte aligned in bf16
enum LayerTensor : int {
  kLn1W, kLn1B, kQkvW, kQkvB, kProjW, kProjB, kLn2W, kLn2B, kFcW, kFcB, kFcProjW, kFcProjB
};

int64_t align_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

}  // namespace

int padded_vocab(int V) { return static_cast<int>(align_up(V, 128)); }

// Activations of one micro-batch, N = B * T rows; (rows, columns), bf16 unless marked f32.
struct GPTTrainer::Buffers {
  Tensor params;                   // (P) bf16: the compute copy
  Tensor master, grads, m, v;      // (P) f32
  Tensor segments;                 // the AdamW segment table, as bytes
  Tensor norm;                     // (1) f32: the global gradient norm of the step
  Tensor norm_scratch;             // f32
  Tensor tokens, targets;          // (N) i32
  std::vector<Tensor> x;           // L + 1 of (N, C): the residual stream entering each block, then ln_f's input
  std::vector<Tensor> x_mid;       // L of (N, C): after the attention's residual add (ln_2's input)
  std::vector<Tensor> ln1, ln2;    // L of (N, C)
  std::vector<Tensor> ln1_stats, ln2_stats;  // L of (2, N) f32: mean, rstd
  std::vector<Tensor> qkv;         // L of (N, 3C)
  std::vector<Tensor> atty;        // L of (N, C)
  std::vector<Tensor> lse;         // L of (B, NH, T) f32
  std::vector<Tensor> fch_pre, fch;  // L of (N, 4C)
  Tensor lnf, lnf_stats;           // (N, C), (2, N) f32
  Tensor projected;                // (N, C): a projection's output before its residual add
  Tensor logits;                   // (N, Vp): logits, then their gradient in place
  Tensor dresidual, dln, datty;    // (N, C)
  Tensor dqkv;                     // (N, 3C)
  Tensor dfch;                     // (N, 4C)
  Tensor float_scratch;            // f32: LayerNorm, bias and attention backward scratch
  Tensor embedding_scratch;        // bytes
};

GPTTrainer::GPTTrainer(Context& context, const GPTConfig& config, const AdamWSettings& settings, int B,
                       int T, parallel::Communicator* dp_host, parallel::Communicator* dp_device)
    : context_(context),
      config_(config),
      settings_(settings),
      B_(B),
      T_(T),
      Vp_(padded_vocab(config.vocab_size)),
      dp_host_(dp_host),
      dp_device_(dp_device) {
  config_.validate();
  LOOM_CHECK(B > 0 && T > 0 && T <= config.max_seq_len, "GPU micro-batch (B, T) = (", B, ",", T,
             ") must be positive with T <= max_seq_len", config.max_seq_len);
  LOOM_CHECK((dp_host == nullptr) == (dp_device == nullptr), "data parallelism needs both the host and the device communicator");
  LOOM_CHECK(dp_host == nullptr || dp_host->size() == dp_device->size(), "data-parallel groups differ in size:",
             dp_host->size(), "and", dp_device->size());
  if (dp_host_ == nullptr) {
    solo_ = std::make_unique<parallel::SoloCommunicator>("dp");
    dp_host_ = solo_.get();
  }
  const int64_t C = config.n_embd, L = config.n_layer;

  // Device layout: core/gpt.h's parameters() order, each tensor aligned, wte padded to Vp rows.
  std::vector<std::pair<int64_t, bool>> sizes;  // (elements, decay) per tensor, from GPT-2's layout
  for (const TensorSpec& t : gpt2_layout(config, 0, config.n_layer, true, true)) {
    sizes.push_back({t.global.numel(), t.decay});
  }
  int64_t device_offset = 0, host_offset = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const auto [n, decay] = sizes[i];
    slots_.push_back({device_offset, host_offset, n});
    segments_.push_back({device_offset, device_offset + n, decay ? 1 : 0});
    const int64_t held = i == 0 ? static_cast<int64_t>(Vp_) * C : n;  // wte's padding rows
    device_offset = align_up(device_offset + held, kParamAlign);
    host_offset += n;
    num_parameters_ += n;
  }
  const int64_t P = device_offset;
  kernels::cpu::check_adamw_segments(segments_.data(), static_cast<int>(segments_.size()), P);

  buffers_ = std::make_unique<Buffers>();
  Buffers& b = *buffers_;
  const int64_t N = static_cast<int64_t>(B) * T;
  b.params = device_zeros(context, {P}, DType::kBF16);
  b.master = device_zeros(context, {P}, DType::kF32);
  b.grads = device_zeros(context, {P}, DType::kF32);
  b.m = device_zeros(context, {P}, DType::kF32);
  b.v = device_zeros(context, {P}, DType::kF32);
  const auto segment_bytes = static_cast<int64_t>(segments_.size() * sizeof(k::AdamWSegment));
  b.segments = device_empty(context, {segment_bytes / 4}, DType::kI32);
  static_assert(sizeof(k::AdamWSegment) % 4 == 0);
  copy(context, b.segments, Tensor::view(segments_.data(), {segment_bytes / 4}, DType::kI32));
  b.norm = device_zeros(context, {1}, DType::kF32);
  b.norm_scratch = device_zeros(context, {static_cast<int64_t>(k::gradient_norm_scratch_floats())}, DType::kF32);
  b.tokens = device_zeros(context, {N}, DType::kI32);
  b.targets = device_zeros(context, {N}, DType::kI32);
  const auto bf = DType::kBF16;
  for (int64_t l = 0; l <= L; ++l) b.x.push_back(device_zeros(context, {N, C}, bf));
  for (int64_t l = 0; l < L; ++l) {
    b.x_mid.push_back(device_zeros(context, {N, C}, bf));
    b.ln1.push_back(device_zeros(context, {N, C}, bf));
    b.ln2.push_back(device_zeros(context, {N, C}, bf));
    b.ln1_stats.push_back(device_zeros(context, {2, N}, DType::kF32));
    b.ln2_stats.push_back(device_zeros(context, {2, N}, DType::kF32));
    b.qkv.push_back(device_zeros(context, {N, 3 * C}, bf));
    b.atty.push_back(device_zeros(context, {N, C}, bf));
    b.lse.push_back(device_zeros(context, {B, config.n_head, T}, DType::kF32));
    b.fch_pre.push_back(device_zeros(context, {N, 4 * C}, bf));
    b.fch.push_back(device_zeros(context, {N, 4 * C}, bf));
  }
  b.lnf = device_zeros(context, {N, C}, bf);
  b.lnf_stats = device_zeros(context, {2, N}, DType::kF32);
  b.projected = device_zeros(context, {N, C}, bf);
  b.logits = device_zeros(context, {N, Vp_}, bf);
  b.dresidual = device_zeros(context, {N, C}, bf);
  b.dln = device_zeros(context, {N, C}, bf);
  b.datty = device_zeros(context, {N, C}, bf);
  b.dqkv = device_zeros(context, {N, 3 * C}, bf);
  b.dfch = device_zeros(context, {N, 4 * C}, bf);
  const int Ni = static_cast<int>(N), Ci = static_cast<int>(C);
  const size_t scratch = std::max({k::layernorm_backward_scratch_floats(Ni, Ci),
                                   k::bias_backward_scratch_floats(Ni, 4 * Ci),
                                   k::bias_backward_scratch_floats(Ni, 3 * Ci),
                                   k::attention_backward_scratch_floats(B, T, config.n_head)});
  b.float_scratch = device_zeros(context, {static_cast<int64_t>(scratch)}, DType::kF32);
  b.embedding_scratch =
      device_zeros(context, {static_cast<int64_t>((k::embedding_backward_scratch_bytes(Ni) + 3) / 4)}, DType::kI32);
  matmul_ = std::make_unique<k::Matmul>(context.allocator());
}

GPTTrainer::~GPTTrainer() {
  context_.synchronize();
  matmul_.reset();
  buffers_.reset();
}

void GPTTrainer::load_weights(const GPT& model) {
  LOOM_CHECK(model.config() == config_, "load_weights from a model of another configuration");
  LOOM_CHECK(model.parameters().size() == slots_.size() && model.vocab_count() == config_.vocab_size,
             "load_weights needs a one-rank CPU model (no tensor or pipeline parallelism)");
  const float* host = model.parameter_arena().f32();
  for (const ParamSlot& s : slots_) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(buffers_->master.f32() + s.device_offset, host + s.host_offset,
                                    static_cast<size_t>(s.count) * sizeof(float), cudaMemcpyHostToDevice,
                                    context_.stream()));
  }
  k::f32_to_bf16(buffers_->params.bf16_data(), buffers_->master.f32(), buffers_->master.numel(), context_.stream());
  context_.synchronize();
}

void GPTTrainer::store_weights(GPT& model) const {
  LOOM_CHECK(model.config() == config_ && model.parameters().size() == slots_.size(),
             "store_weights into a model of another configuration or layout");
  float* host = model.parameter_arena().f32();
  for (const ParamSlot& s : slots_) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(host + s.host_offset, buffers_->master.f32() + s.device_offset,
                                    static_cast<size_t>(s.count) * sizeof(float), cudaMemcpyDeviceToHost,
                                    context_.stream()));
  }
  context_.synchronize();
}

void GPTTrainer::load_optimizer(const AdamW& optimizer) {
  // With data parallelism (ZeRO-1) each replica's host optimizer holds its slice of the moments:
  // each writes its slice into zeroed device moments, and a sum over the replicas assembles them.
  Buffers& b = *buffers_;
  LOOM_CUDA_CHECK(cudaMemsetAsync(b.m.raw(), 0, b.m.nbytes(), context_.stream()));
  LOOM_CUDA_CHECK(cudaMemsetAsync(b.v.raw(), 0, b.v.nbytes(), context_.stream()));
  for (const AdamW::OwnedRun& run : optimizer.owned_runs()) {
    const ParamSlot& s = slots_.at(run.param);
    const size_t bytes = static_cast<size_t>(run.count) * sizeof(float);
    const int64_t at = s.device_offset + run.local_offset;
    LOOM_CUDA_CHECK(cudaMemcpyAsync(b.m.f32() + at, optimizer.moment_m().f32() + run.state_offset, bytes,
                                    cudaMemcpyHostToDevice, context_.stream()));
    LOOM_CUDA_CHECK(cudaMemcpyAsync(b.v.f32() + at, optimizer.moment_v().f32() + run.state_offset, bytes,
                                    cudaMemcpyHostToDevice, context_.stream()));
  }
  if (dp_device_ != nullptr && dp_device_->size() > 1) {
    for (Tensor* moments : {&b.m, &b.v}) {
      dp_device_->all_reduce(moments->raw(), moments->raw(), static_cast<size_t>(moments->numel()), DType::kF32,
                             parallel::ReduceOp::kSum);
    }
    dp_device_->synchronize();  // a stream-ordered reduction's error surfaces here, named
  }
  step_ = optimizer.step_count();
  context_.synchronize();
}

void GPTTrainer::store_optimizer(AdamW& optimizer) const {
  // Every replica holds all the moments; each host optimizer takes its own slice.
  for (const AdamW::OwnedRun& run : optimizer.owned_runs()) {
    const ParamSlot& s = slots_.at(run.param);
    const size_t bytes = static_cast<size_t>(run.count) * sizeof(float);
    const int64_t at = s.device_offset + run.local_offset;
    LOOM_CUDA_CHECK(cudaMemcpyAsync(optimizer.moment_m().f32() + run.state_offset, buffers_->m.f32() + at, bytes,
                                    cudaMemcpyDeviceToHost, context_.stream()));
    LOOM_CUDA_CHECK(cudaMemcpyAsync(optimizer.moment_v().f32() + run.state_offset, buffers_->v.f32() + at, bytes,
                                    cudaMemcpyDeviceToHost, context_.stream()));
  }
  optimizer.set_step_count(step_);
  context_.synchronize();
}

void GPTTrainer::upload_batch(const MicroBatch& mb) {
  LOOM_CHECK(mb.B == B_ && mb.T == T_, "micro-batch (B, T) = (", mb.B, ",", mb.T, ") but the GPU trainer was built for (",
             B_, ",", T_, ")");
  check_token_ids(mb.tokens, mb.B, mb.T, 0, config_.vocab_size, false, "token");
  check_token_ids(mb.targets, mb.B, mb.T, 0, config_.vocab_size, true, "target");
  const size_t bytes = static_cast<size_t>(B_) * T_ * sizeof(int32_t);
  LOOM_CUDA_CHECK(cudaMemcpyAsync(buffers_->tokens.raw(), mb.tokens, bytes, cudaMemcpyHostToDevice, context_.stream()));
  LOOM_CUDA_CHECK(cudaMemcpyAsync(buffers_->targets.raw(), mb.targets, bytes, cudaMemcpyHostToDevice, context_.stream()));
}

void GPTTrainer::forward_backward(const MicroBatch& mb, float* losses, float dloss, bool backward) {
  upload_batch(mb);
  Buffers& b = *buffers_;
  const cudaStream_t s = context_.stream();
  const int B = B_, T = T_, N = B_ * T_, C = config_.n_embd, L = config_.n_layer, NH = config_.n_head;
  const int V = config_.vocab_size;
  bf16* const params = b.params.bf16_data();
  float* const grads = b.grads.f32();
  auto w = [&](size_t index) { return params + slots_[index].device_offset; };
  auto g = [&](size_t index) { return grads + slots_[index].device_offset; };
  auto lw = [&](int l, int t) { return w(2 + static_cast<size_t>(l) * kPerLayer + t); };
  auto lg = [&](int l, int t) { return g(2 + static_cast<size_t>(l) * kPerLayer + t); };
  const size_t lnf = 2 + static_cast<size_t>(L) * kPerLayer;
  auto mean = [](const Tensor& stats) { return stats.f32(); };
  auto rstd = [N](const Tensor& stats) { return stats.f32() + N; };
  const int32_t* tokens = b.tokens.i32();

  // Forward. Each block's second LayerNorm and the next block's first (or ln_f) are fused with
  // the residual add and the projection bias before them.
  k::embedding_forward(b.x[0].bf16_data(), tokens, w(0), w(1), N, T, C, 0, V, 0, s);
  k::residual_layernorm_forward(b.x[0].bf16_data(), b.ln1[0].bf16_data(), mean(b.ln1_stats[0]), rstd(b.ln1_stats[0]),
                                b.x[0].bf16_data(), nullptr, nullptr, lw(0, kLn1W), lw(0, kLn1B), N, C, s);
  for (int l = 0; l < L; ++l) {
    const size_t li = static_cast<size_t>(l);
    matmul_->forward(b.qkv[li].bf16_data(), nullptr, b.ln1[li].bf16_data(), lw(l, kQkvW), lw(l, kQkvB), N, C, 3 * C,
                     k::Epilogue::kBias, s);
    k::attention_forward(b.atty[li].bf16_data(), b.lse[li].f32(), b.qkv[li].bf16_data(), B, T, C, NH, s);
    matmul_->forward(b.projected.bf16_data(), nullptr, b.atty[li].bf16_data(), lw(l, kProjW), nullptr, N, C, C,
                     k::Epilogue::kNone, s);
    k::residual_layernorm_forward(b.x_mid[li].bf16_data(), b.ln2[li].bf16_data(), mean(b.ln2_stats[li]),
                                  rstd(b.ln2_stats[li]), b.x[li].bf16_data(), b.projected.bf16_data(), lw(l, kProjB),
                                  lw(l, kLn2W), lw(l, kLn2B), N, C, s);
    matmul_->forward(b.fch[li].bf16_data(), b.fch_pre[li].bf16_data(), b.ln2[li].bf16_data(), lw(l, kFcW), lw(l, kFcB),
                     N, C, 4 * C, k::Epilogue::kBiasGelu, s);
    matmul_->forward(b.projected.bf16_data(), nullptr, b.fch[li].bf16_data(), lw(l, kFcProjW), nullptr, N, 4 * C, C,
                     k::Epilogue::kNone, s);
    const bool last = l + 1 == L;
    Tensor& next_ln = last ? b.lnf : b.ln1[li + 1];
    Tensor& next_stats = last ? b.lnf_stats : b.ln1_stats[li + 1];
    k::residual_layernorm_forward(b.x[li + 1].bf16_data(), next_ln.bf16_data(), mean(next_stats), rstd(next_stats),
                                  b.x_mid[li].bf16_data(), b.projected.bf16_data(), lw(l, kFcProjB),
                                  last ? w(lnf) : lw(l + 1, kLn1W), last ? w(lnf + 1) : lw(l + 1, kLn1B), N, C, s);
  }
  // Logits against the padded wte (its zero rows give zero logits the loss ignores), then the
  // loss, which leaves d(loss)/d(logits) in their place.
  matmul_->forward(b.logits.bf16_data(), nullptr, b.lnf.bf16_data(), w(0), nullptr, N, C, Vp_, k::Epilogue::kNone, s);
  k::fused_cross_entropy(b.logits.bf16_data(), losses, b.targets.i32(), dloss, N, V, Vp_, s);
  if (!backward) return;

  // Backward. dresidual carries the gradient of the residual stream from the top down.
  float* scratch = b.float_scratch.f32();
  LOOM_CUDA_CHECK(cudaMemsetAsync(b.dresidual.raw(), 0, b.dresidual.nbytes(), s));
  matmul_->backward(b.dln.bf16_data(), g(0), b.logits.bf16_data(), b.lnf.bf16_data(), w(0), N, C, Vp_, s);
  k::layernorm_backward(b.dresidual.bf16_data(), g(lnf), g(lnf + 1), b.dln.bf16_data(), b.x[static_cast<size_t>(L)].bf16_data(),
                        w(lnf), mean(b.lnf_stats), rstd(b.lnf_stats), N, C, scratch, s);
  for (int l = L - 1; l >= 0; --l) {
    const size_t li = static_cast<size_t>(l);
    // x[l+1] = x_mid + fch @ W_fcproj^T + b_fcproj
    k::bias_backward(lg(l, kFcProjB), b.dresidual.bf16_data(), N, C, scratch, s);
    matmul_->backward(b.dfch.bf16_data(), lg(l, kFcProjW), b.dresidual.bf16_data(), b.fch[li].bf16_data(),
                      lw(l, kFcProjW), N, 4 * C, C, s);
    k::gelu_backward(b.dfch.bf16_data(), b.fch_pre[li].bf16_data(), b.dfch.bf16_data(), static_cast<int64_t>(N) * 4 * C, s);
    k::bias_backward(lg(l, kFcB), b.dfch.bf16_data(), N, 4 * C, scratch, s);
    matmul_->backward(b.dln.bf16_data(), lg(l, kFcW), b.dfch.bf16_data(), b.ln2[li].bf16_data(), lw(l, kFcW), N, C,
                      4 * C, s);
    k::layernorm_backward(b.dresidual.bf16_data(), lg(l, kLn2W), lg(l, kLn2B), b.dln.bf16_data(),
                          b.x_mid[li].bf16_data(), lw(l, kLn2W), mean(b.ln2_stats[li]), rstd(b.ln2_stats[li]), N, C,
                          scratch, s);
    // x_mid = x + atty @ W_proj^T + b_proj
    k::bias_backward(lg(l, kProjB), b.dresidual.bf16_data(), N, C, scratch, s);
    matmul_->backward(b.datty.bf16_data(), lg(l, kProjW), b.dresidual.bf16_data(), b.atty[li].bf16_data(),
                      lw(l, kProjW), N, C, C, s);
    k::attention_backward(b.dqkv.bf16_data(), b.datty.bf16_data(), b.qkv[li].bf16_data(), b.atty[li].bf16_data(),
                          b.lse[li].f32(), B, T, C, NH, scratch, s);
    k::bias_backward(lg(l, kQkvB), b.dqkv.bf16_data(), N, 3 * C, scratch, s);
    matmul_->backward(b.dln.bf16_data(), lg(l, kQkvW), b.dqkv.bf16_data(), b.ln1[li].bf16_data(), lw(l, kQkvW), N, C,
                      3 * C, s);
    k::layernorm_backward(b.dresidual.bf16_data(), lg(l, kLn1W), lg(l, kLn1B), b.dln.bf16_data(), b.x[li].bf16_data(),
                          lw(l, kLn1W), mean(b.ln1_stats[li]), rstd(b.ln1_stats[li]), N, C, scratch, s);
  }
  k::embedding_backward(g(0), g(1), b.dresidual.bf16_data(), tokens, N, T, C, 0, V, 0, b.embedding_scratch.raw(), s);
}

namespace {

// The step's loss from the per-row losses of each micro-batch (accum rows of N on the host):
// the mean over micro-batches of each one's global mean, as loom::train_step reports it.
double step_loss(const std::vector<float>& losses, const std::vector<float>& global_counts, int N,
                 parallel::Communicator& dp_host) {
  const size_t accum = global_counts.size();
  std::vector<float> sums(accum, 0.0f);
  for (size_t i = 0; i < accum; ++i) {
    double sum = 0;
    for (int n = 0; n < N; ++n) sum += losses[i * static_cast<size_t>(N) + static_cast<size_t>(n)];
    sums[i] = static_cast<float>(sum);
  }
  if (dp_host.size() > 1) dp_host.all_reduce(sums.data(), sums.data(), accum, DType::kF32, parallel::ReduceOp::kSum);
  double loss = 0;
  for (size_t i = 0; i < accum; ++i) loss += global_counts[i] > 0 ? sums[i] / static_cast<double>(global_counts[i]) : 0.0;
  return loss / static_cast<double>(accum);
}

}  // namespace

StepResult GPTTrainer::step(std::span<const MicroBatch> micro_batches, float lr) {
  LOOM_CHECK(!micro_batches.empty(), "a GPU step needs at least one micro-batch");
  const size_t accum = micro_batches.size();
  const int N = B_ * T_;
  CpuBackend host_backend;  // the counts are host values over the host group
  const std::vector<float> global = loss_shares(micro_batches, *dp_host_, host_backend).global;
  Buffers& b = *buffers_;
  const cudaStream_t s = context_.stream();
  Tensor losses = device_empty(context_, {static_cast<int64_t>(accum), N}, DType::kF32);
  LOOM_CUDA_CHECK(cudaMemsetAsync(b.grads.raw(), 0, b.grads.nbytes(), s));
  for (size_t i = 0; i < accum; ++i) {
    // d(step loss)/d(row loss): the micro-batch's global mean over counted rows, over accum.
    const float dloss = global[i] > 0 ? 1.0f / (global[i] * static_cast<float>(accum)) : 0.0f;
    forward_backward(micro_batches[i], losses.f32() + i * static_cast<size_t>(N), dloss, true);
  }
  if (dp_device_ != nullptr && dp_device_->size() > 1) {
    dp_device_->all_reduce(b.grads.raw(), b.grads.raw(), static_cast<size_t>(b.grads.numel()), DType::kF32,
                           parallel::ReduceOp::kSum);
  }
  k::sum_of_squares(b.norm.f32(), b.grads.f32(), b.grads.numel(), false, b.norm_scratch.f32(), s);
  k::finish_norm(b.norm.f32(), s);
  k::AdamWHyper hyper;
  hyper.lr = lr;
  hyper.beta1 = settings_.beta1;
  hyper.beta2 = settings_.beta2;
  hyper.eps = settings_.eps;
  hyper.weight_decay = settings_.weight_decay;
  hyper.step = step_ + 1;
  hyper.max_norm = settings_.grad_clip;
  k::adamw_update(b.master.f32(), b.params.bf16_data(), b.grads.f32(), b.m.f32(), b.v.f32(), b.master.numel(),
                  reinterpret_cast<const k::AdamWSegment*>(b.segments.raw()), static_cast<int>(segments_.size()),
                  b.norm.f32(), hyper, s);
  StepResult result;
  // The host reads what the gradient reduction fed: a peer that never arrived is a named timeout
  // here, not garbage from an aborted NCCL operation.
  if (dp_device_ != nullptr) dp_device_->synchronize();
  const std::vector<float> host_losses = download_floats(context_, losses);  // synchronises
  const std::vector<float> norm = download_floats(context_, b.norm);
  result.loss = step_loss(host_losses, global, N, *dp_host_);
  result.grad_norm = norm[0];
  result.updated = std::isfinite(result.grad_norm);
  if (result.updated) ++step_;
  return result;
}

double GPTTrainer::evaluate(std::span<const MicroBatch> micro_batches) {
  LOOM_CHECK(!micro_batches.empty(), "evaluation needs at least one micro-batch");
  const size_t accum = micro_batches.size();
  const int N = B_ * T_;
  CpuBackend host_backend;  // the counts are host values over the host group
  const std::vector<float> global = loss_shares(micro_batches, *dp_host_, host_backend).global;
  Tensor losses = device_empty(context_, {static_cast<int64_t>(accum), N}, DType::kF32);
  for (size_t i = 0; i < accum; ++i) {
    forward_backward(micro_batches[i], losses.f32() + i * static_cast<size_t>(N), 0.0f, false);
  }
  return step_loss(download_floats(context_, losses), global, N, *dp_host_);
}

}  // namespace loom::cuda
