#include "core/gpt.h"

#include "core/base/checked_math.h"

#include <algorithm>
#include <cmath>

#include "core/backend/cpu_backend.h"
#include "core/backend/host_copy.h"
#include "core/model/gpt2_block.h"
#include "core/model/embedding_head.h"
#include "core/model/layout.h"
#include "core/model/llama_block.h"
#include "core/model/stage_context.h"
#include "kernels/cpu/rope.h"
#include "core/rng.h"
#include "kernels/cpu/cross_entropy.h"
#include "parallel/regions.h"
#include "parallel/solo_communicator.h"

namespace loom {

namespace k = kernels::cpu;
using parallel::Communicator;

namespace {

// The tensors of the rank `shape` describes, in parameters() order, with the part of each global
// tensor it holds: the family's layout (core/model/layout.h), cut for this rank. Shapes come from
// the config: their sizes are checked (core/base/checked_math.h).
struct ParameterSpec {
  TensorSpec tensor;
  std::vector<ShardBlock> blocks;
};

std::vector<ParameterSpec> parameter_specs(const GPTConfig& config, const StageShape& shape) {
  const int end_layer = shape.end_layer < 0 ? config.n_layer : shape.end_layer;
  std::vector<ParameterSpec> specs;
  for (TensorSpec& t : model_layout(config, shape.first_layer, end_layer, shape.first_stage, shape.last_stage)) {
    std::vector<ShardBlock> blocks = shard_blocks(t, config, shape.tp, shape.tp_rank);
    specs.push_back({std::move(t), std::move(blocks)});
  }
  return specs;
}

// Carves the blocks of a stage, of either family: each keeps all its activations, or (selective
// recomputation) all but an attention core they share, or (full recomputation) only its output,
// the rest being one block's buffers every block reuses. residual3 is always the block's own: it
// is the next block's input.
template <class BlockActivations, class CarveBlock, class CarveCore>
void carve_blocks(ArenaCarver& arena, const StageDims& s, bool sp, Recompute mode, size_t count,
                  std::vector<BlockActivations>& layers, CarveBlock carve_block, CarveCore carve_core) {
  layers.resize(count);
  BlockActivations shared{};
  if (mode == Recompute::kFull) carve_block(arena, s, sp, true, shared);
  if (mode == Recompute::kSelective) carve_core(arena, s, shared);
  for (BlockActivations& l : layers) {
    if (mode == Recompute::kFull) {
      l = shared;
    } else {
      carve_block(arena, s, sp, mode == Recompute::kNone, l);
      if (mode == Recompute::kSelective) {
        l.atty = shared.atty;
        l.att_lse = shared.att_lse;
      }
    }
    l.residual3 = arena.take_act(static_cast<int64_t>(s.Nl) * s.C);
  }
}

HeadNorm head_norm_of(const GPTConfig& config) { return HeadNorm{config.llama(), config.norm_eps}; }

kernels::cpu::RopeScaling rope_scaling_of(const GPTConfig& c) {
  kernels::cpu::RopeScaling r;
  r.llama3 = c.rope_llama3;
  r.factor = c.rope_factor;
  r.low_freq_factor = c.rope_low_freq_factor;
  r.high_freq_factor = c.rope_high_freq_factor;
  r.original_max_position = c.rope_original_max_position;
  return r;
}

}  // namespace

// The sizes of this rank's share of a micro-batch (core/model/stage_context.h).
struct GPT::Layout : StageDims {};

// One activation slot: the micro-batch of its last forward and the buffers of the stage's pieces.
struct GPT::Activations {
  Tensor arena;
  Layout shape{};
  // The micro-batch of the last forward, for its backward: on the host (checks, the count of
  // targets) and on the device (the ops).
  std::vector<int32_t> tokens;
  std::vector<int32_t> targets;
  std::vector<int32_t> doc_starts;
  Tensor device_tokens;      // (N) i32
  Tensor device_targets;     // (N) i32
  Tensor device_doc_starts;  // (N) i32; shape.doc_starts views it when the micro-batch packs documents
  bool has_targets = false;
  bool forwarded = false;  // a forward whose backward has not run yet
  int counted = 0;
  void* embedded;    // (N, C): partial token embeddings, then (Nl, C) of the residual stream's start
  std::vector<Gpt2BlockActivations> layers;         // GPT-2's blocks
  std::vector<LlamaBlockActivations> llama_layers;  // or Llama's
  HeadActivations head;
  StageScratch scratch;
};

void GPTConfig::validate() const {
  auto positive = [](const char* name, int v) {
    if (v <= 0) fail_user(name, "is", v, "but must be a positive integer");
  };
  positive("n_layer", n_layer);
  positive("n_head", n_head);
  positive("n_embd", n_embd);
  positive("vocab_size", vocab_size);
  positive("seq_len", max_seq_len);
  if (n_embd % n_head != 0) {
    fail_user("n_head =", n_head, "must divide n_embd =", n_embd);
  }
  if (!llama()) return;
  if (n_kv_head < 0 || (n_kv_head > 0 && n_head % n_kv_head != 0)) {
    fail_user("n_kv_head =", n_kv_head, "must divide n_head =", n_head,
              "(each key/value head serves n_head / n_kv_head query heads)");
  }
  if (intermediate_size < 0) fail_user("intermediate_size is", intermediate_size, "but must be positive");
  checked_dimension(mlp_hidden(), "intermediate_size");
  if (head_size() % 2 != 0) {
    fail_user("the head size n_embd / n_head =", head_size(), "must be even: rotary embeddings turn pairs of channels");
  }
  if (!(rope_theta > 0 && std::isfinite(rope_theta))) {
    fail_user("rope_theta is", rope_theta, "but must be a finite number > 0");
  }
  if (!(norm_eps > 0 && std::isfinite(norm_eps))) fail_user("norm_eps is", norm_eps, "but must be a finite number > 0");
  if (rope_llama3) {
    if (!(rope_factor >= 1 && std::isfinite(rope_factor))) {
      fail_user("rope_scaling.factor is", rope_factor, "but must be a finite number >= 1");
    }
    const bool ordered = rope_low_freq_factor > 0 && rope_low_freq_factor < rope_high_freq_factor;
    if (!ordered || !std::isfinite(rope_high_freq_factor)) {
      fail_user("rope_scaling needs 0 < low_freq_factor < high_freq_factor, not", rope_low_freq_factor, "and",
                rope_high_freq_factor);
    }
    if (rope_original_max_position <= 0) {
      fail_user("rope_scaling.original_max_position is", rope_original_max_position, "but must be positive");
    }
  }
}

int64_t GPTConfig::mlp_hidden() const {
  if (!llama()) return checked_mul(4, n_embd, "4 x n_embd");
  return intermediate_size > 0 ? intermediate_size : llama_intermediate_size(n_embd);
}

int64_t llama_intermediate_size(int64_t n_embd) {
  const int64_t hidden = checked_mul(8, n_embd, "8 x n_embd") / 3;
  return (hidden + 255) / 256 * 256;
}

GPTConfig gpt_config_of(const config::ModelConfig& m) {
  GPTConfig c;
  c.n_layer = m.n_layer();
  c.n_head = m.n_head();
  c.n_embd = m.n_embd();
  c.vocab_size = m.vocab_size();
  c.max_seq_len = m.seq_len();
  if (m.family() == config::ModelConfig::FAMILY_LLAMA) {
    c.family = Family::kLlama;
    c.n_kv_head = m.has_n_kv_head() ? m.n_kv_head() : 0;
    c.intermediate_size = m.has_intermediate_size() ? m.intermediate_size() : 0;
    c.rope_theta = m.rope_theta();
    c.norm_eps = m.norm_eps();
    c.tie_embeddings = m.tie_embeddings();
    c.qkv_bias = m.qkv_bias();
    c.rope_llama3 = m.has_rope_scaling();
    c.rope_factor = m.rope_scaling().factor();
    c.rope_low_freq_factor = m.rope_scaling().low_freq_factor();
    c.rope_high_freq_factor = m.rope_scaling().high_freq_factor();
    c.rope_original_max_position = m.rope_scaling().original_max_position();
  }
  c.validate();
  return c;
}

void set_model_config(const GPTConfig& c, config::ModelConfig* m) {
  m->set_n_layer(c.n_layer);
  m->set_n_head(c.n_head);
  m->set_n_embd(c.n_embd);
  m->set_vocab_size(c.vocab_size);
  m->set_seq_len(c.max_seq_len);
  if (!c.llama()) return;
  m->set_family(config::ModelConfig::FAMILY_LLAMA);
  m->set_n_kv_head(c.kv_heads());
  m->set_intermediate_size(static_cast<int32_t>(c.mlp_hidden()));
  m->set_rope_theta(c.rope_theta);
  m->set_norm_eps(c.norm_eps);
  m->set_tie_embeddings(c.tie_embeddings);
  m->set_qkv_bias(c.qkv_bias);
  if (c.rope_llama3) {
    config::ModelConfig::RopeScaling* r = m->mutable_rope_scaling();
    r->set_factor(c.rope_factor);
    r->set_low_freq_factor(c.rope_low_freq_factor);
    r->set_high_freq_factor(c.rope_high_freq_factor);
    r->set_original_max_position(c.rope_original_max_position);
  }
}

GPT::GPT(const GPTConfig& config, const ModelParallel& parallel)
    : config_(config),
      first_layer_(parallel.first_layer),
      end_layer_(parallel.end_layer < 0 ? config.n_layer : parallel.end_layer),
      first_stage_(parallel.first_stage),
      last_stage_(parallel.last_stage),
      sequence_parallel_(parallel.sequence_parallel),
      arena_multiple_(parallel.arena_multiple) {
  config_.validate();
  LOOM_CHECK(0 <= first_layer_ && first_layer_ <= end_layer_ && end_layer_ <= config_.n_layer,
             "pipeline stage blocks [", first_layer_, ",", end_layer_, ") outside 0 ..", config_.n_layer);
  LOOM_CHECK(!first_stage_ || first_layer_ == 0, "the first stage must start at block 0, not", first_layer_);
  LOOM_CHECK(!last_stage_ || end_layer_ == config_.n_layer, "the last stage must end at block",
             config_.n_layer, "not", end_layer_);
  if (parallel.tp == nullptr) {
    solo_ = std::make_unique<parallel::SoloCommunicator>("tp");
    tp_ = solo_.get();
  } else {
    tp_ = parallel.tp;
  }
  if (parallel.pp == nullptr) {
    solo_pp_ = std::make_unique<parallel::SoloCommunicator>("pp");
    pp_ = solo_pp_.get();
  } else {
    pp_ = parallel.pp;
  }
  // Only a tied output projection has a second copy of the embedding to keep equal.
  if (parallel.embedding != nullptr && parallel.embedding->size() > 1 && config_.tied()) {
    embedding_ = parallel.embedding;
  }
  if (parallel.backend == nullptr) {
    owned_backend_ = std::make_unique<CpuBackend>(Precision::kF32);
    backend_ = owned_backend_.get();
  } else {
    backend_ = parallel.backend;
  }
  device_ = backend_->device();
  precision_ = backend_->precision();
  act_ = backend_->activation_dtype();
  const int tp = tp_->size();
  if (config_.n_head % tp != 0) {
    fail_user("tensor parallelism tp =", tp, "must divide n_head =", config_.n_head,
              "(each rank computes whole heads)");
  }
  if (config_.vocab_size < tp) {
    fail_user("tensor parallelism tp =", tp, "exceeds vocab_size =", config_.vocab_size);
  }
  if (config_.llama() && config_.kv_heads() % tp != 0) {
    fail_user("tensor parallelism tp =", tp, "must divide n_kv_head =", config_.kv_heads(),
              "(each rank holds whole key/value groups with their query heads; Loom does not replicate key/value "
              "heads, so tp may not exceed n_kv_head)");
  }
  if (config_.mlp_hidden() % tp != 0) {
    fail_user("tensor parallelism tp =", tp, "must divide the MLP's", config_.mlp_hidden(),
              "hidden units (intermediate_size)");
  }
  const StageShape shape = stage_shape();
  // This rank's slice of the vocabulary, as the layout splits wte.
  vocab_start_ = static_cast<int>(split_start(config_.vocab_size, tp, shape.tp_rank));
  vocab_count_ = static_cast<int>(split_start(config_.vocab_size, tp, shape.tp_rank + 1)) - vocab_start_;
  std::vector<ParameterSpec> specs = parameter_specs(config_, shape);
  // Where the tensors outside the blocks are (model_layout's order): the token embedding first,
  // GPT-2's positions after it, the final norm and any untied output projection last.
  const bool embedding_held = first_stage_ || (last_stage_ && config_.tied());
  if (embedding_held) wte_ = 0;
  if (first_stage_ && !config_.llama()) wpe_ = 1;
  layer0_ = (embedding_held ? 1 : 0) + (wpe_ != npos ? 1 : 0);
  head_tensors_ = config_.llama() ? (config_.tied() ? 1 : 2) : 2;
  if (last_stage_) lnf_ = specs.size() - head_tensors_;
  block_tensors_ = block_tensor_count(config_);

  // The arenas live where the backend computes (a GPU's memory for CudaBackend).
  const int64_t total = arena_elements(config_, shape);
  param_arena_ = backend_->zeros({total}, DType::kF32);
  has_gradients_ = parallel.gradients;
  if (has_gradients_) grad_arena_ = backend_->zeros({total}, DType::kF32);
  // bf16: the weights the ops read, rounded from the f32 master at each forward.
  if (act_ != DType::kF32) compute_arena_ = backend_->zeros({total}, act_);
  int64_t offset = 0;
  for (ParameterSpec& s : specs) {
    const int64_t n = local_elements(s.blocks);
    int64_t rows = 0;
    for (const ShardBlock& b : s.blocks) rows += b.rows;
    const Shape local = s.tensor.global.rank() == 1 ? Shape{n} : Shape{rows, s.blocks[0].cols};
    Parameter p;
    p.name = s.tensor.name;
    p.global_shape = s.tensor.global;
    p.blocks = std::move(s.blocks);
    p.value = param_arena_.slice_rows(offset, offset + n).reshaped(local);
    if (parallel.gradients) p.grad = grad_arena_.slice_rows(offset, offset + n).reshaped(local);
    p.compute = act_ == DType::kF32 ? p.value : compute_arena_.slice_rows(offset, offset + n).reshaped(local);
    p.decay = s.tensor.decay;
    p.tp_replicated = s.tensor.sharding == Sharding::kReplicated;
    p.tied_copy = p.name == token_embedding_name(config_) && !first_stage_;
    partial_under_sp_.push_back(s.tensor.partial_under_sequence_parallel);
    inits_.push_back(s.tensor.init);
    params_.push_back(std::move(p));
    offset += n;
  }
  if (config_.llama()) {
    // The rotary frequencies, once, on the backend's device.
    const std::vector<float> inv_freq = kernels::cpu::rope_inverse_frequencies(config_.head_size(), config_.rope_theta,
                                                                              rope_scaling_of(config_));
    inv_freq_ = backend_->zeros({static_cast<int64_t>(inv_freq.size())}, DType::kF32);
    backend_->from_host(inv_freq_, inv_freq.data());
  }
}

GPT::~GPT() = default;

const Parameter& GPT::parameter(const std::string& name) const {
  for (const Parameter& p : params_) {
    if (p.name == name) return p;
  }
  LOOM_CHECK(false, "no parameter named", name);
  throw Error("unreachable");
}

int64_t GPT::num_parameters() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += p.global_shape.numel();
  return n;
}

const float* GPT::logits() const {
  LOOM_CHECK(acts_ != nullptr, "logits() before any forward");
  LOOM_CHECK(act_ == DType::kF32 && device_ == Device::kCPU, "logits() of a", backend_->name(),
             "model: read logits_view()");
  return static_cast<const float*>(acts_->head.logits);
}

Tensor GPT::logits_view() const {
  LOOM_CHECK(acts_ != nullptr, "logits_view() before any forward");
  return stage_ops().rows(acts_->head.logits, acts_->shape.N, acts_->shape.Vl);
}

const void* GPT::block_input(int l) const {
  const Activations& a = *acts_;
  if (l == first_layer_) return a.embedded;
  const size_t previous = static_cast<size_t>(l - first_layer_) - 1;
  return config_.llama() ? a.llama_layers[previous].residual3 : a.layers[previous].residual3;
}

void* GPT::stage_input(int B, int T) {
  ensure_activations(B, T);
  return acts_->embedded;
}

const void* GPT::stage_output() const {
  LOOM_CHECK(acts_ != nullptr, "stage_output() before any forward");
  return block_input(end_layer_);
}

void* GPT::stage_output_grad() {
  LOOM_CHECK(acts_ != nullptr, "stage_output_grad() before any forward");
  return acts_->scratch.dresidual;
}

const void* GPT::stage_input_grad() const {
  LOOM_CHECK(acts_ != nullptr, "stage_input_grad() before any backward");
  return acts_->scratch.dresidual;
}

size_t GPT::activation_bytes(Recompute mode, int B, int T) const {
  return static_cast<size_t>(activation_elements(config_, stage_shape(), mode, B, T)) * sizeof(float);
}

StageShape GPT::stage_shape() const {
  return StageShape{tp_->size(), tp_->rank(),  first_layer_,    end_layer_,
                    first_stage_, last_stage_,  sequence_parallel_, arena_multiple_,
                    precision_,   device_ == Device::kCPU ? 1 : 64};
}

int64_t GPT::arena_elements(const GPTConfig& config, const StageShape& shape) {
  config.validate();
  LOOM_CHECK(shape.arena_multiple > 0, "arena_multiple", shape.arena_multiple);
  // Blocks are alike: the tensors outside them, plus one block's times the count (a config with
  // a billion blocks is refused without listing them).
  auto held = [&](int blocks) {
    StageShape s = shape;
    s.end_layer = s.first_layer + blocks;
    int64_t n = 0;
    for (const ParameterSpec& p : parameter_specs(config, s)) n = checked_add(n, local_elements(p.blocks), "the parameter count");
    return n;
  };
  const int blocks = (shape.end_layer < 0 ? config.n_layer : shape.end_layer) - shape.first_layer;
  const int64_t outside = held(0);
  const int64_t per_block = blocks > 0 ? held(1) - outside : 0;
  const int64_t total = checked_add(outside, checked_mul(per_block, blocks, "the parameter count"), "the parameter count");
  const int64_t m = shape.arena_multiple;
  return checked_add(total, m - 1, "the parameter count") / m * m;
}

std::vector<GPT::ParameterShape> GPT::parameter_shapes(const GPTConfig& config) {
  config.validate();
  std::vector<ParameterShape> shapes;
  for (ParameterSpec& p : parameter_specs(config, StageShape{})) shapes.push_back({std::move(p.tensor.name), p.tensor.global});
  return shapes;
}

int64_t GPT::activation_elements(const GPTConfig& config, const StageShape& shape, Recompute mode, int64_t B,
                                 int64_t T) {
  // Linear in the blocks (each adds the same buffers): counted for none and one, then scaled.
  auto count = [&](int blocks) {
    StageShape s = shape;
    s.end_layer = s.first_layer + blocks;
    Activations counting;  // a slot's worth
    counting.shape = layout_of(config, s, B, T);
    return carve_activations(config, s, counting, mode, nullptr);
  };
  const int blocks = (shape.end_layer < 0 ? config.n_layer : shape.end_layer) - shape.first_layer;
  const int64_t outside = count(0);
  const int64_t per_block = blocks > 0 ? count(1) - outside : 0;
  return checked_add(outside, checked_mul(per_block, blocks, "the activations of a micro-batch"),
                     "the activations of a micro-batch");
}

void GPT::init_weights(uint64_t seed) {
  const float residual_std = 0.02f / std::sqrt(2.0f * static_cast<float>(config_.n_layer));
  // Drawn on the host, then one copy to the device (none on the CPU). The padding stays zero.
  HostCopy host(*backend_, param_arena_, /*download=*/false);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Parameter p = host_parameter(params_[i], host.host(), arena_offset(params_[i]));
    float* data = p.value.f32();
    const int64_t n = p.value.numel();
    switch (inits_[i]) {
      case Init::kZeros: std::fill(data, data + n, 0.0f); break;
      case Init::kOnes: std::fill(data, data + n, 1.0f); break;
      case Init::kNormal:
      case Init::kResidualNormal:
        fill_parameter_normal(p, CounterRng(seed, stream_id_of(p.name)), 0.0f,
                              inits_[i] == Init::kResidualNormal ? residual_std : 0.02f);
        break;
    }
  }
  host.upload();
}

GPT::Layout GPT::layout_for(int B, int T) const { return layout_of(config_, stage_shape(), B, T); }

GPT::Layout GPT::layout_of(const GPTConfig& config, const StageShape& shape, int64_t B, int64_t T) {
  const int tp = shape.tp;
  const int64_t tokens = checked_mul(B, T, "the tokens of a micro-batch (B x T)");
  const int N = checked_dimension(tokens, "the tokens of a micro-batch (train.micro_batch_size x the sequence length)");
  if (shape.sequence_parallel && N % tp != 0) {
    fail_user("sequence parallelism splits the", N, "tokens of a micro-batch (B * T = " + std::to_string(B) + " * " +
              std::to_string(T) + ") over tp =", tp, "ranks, which needs B * T divisible by tp");
  }
  Layout s{};
  s.B = static_cast<int>(B);
  s.T = static_cast<int>(T);
  s.N = N;
  s.Nl = shape.sequence_parallel ? N / tp : N;
  s.C = config.n_embd;
  s.NHl = config.n_head / tp;
  s.NKVl = config.kv_heads() / tp;
  s.Cl = s.C / tp;
  s.QKVl = checked_dimension(static_cast<int64_t>(s.NHl + 2 * s.NKVl) * config.head_size(),
                             "the q, k, v columns per rank");
  s.Fl = checked_dimension(config.mlp_hidden() / tp, "the MLP width per rank");
  s.MLPl = checked_dimension(static_cast<int64_t>(s.Fl) * (config.llama() ? 2 : 1), "the MLP width per rank");
  s.Vl = static_cast<int>(split_start(config.vocab_size, tp, shape.tp_rank + 1) -
                         split_start(config.vocab_size, tp, shape.tp_rank));
  s.first_row = shape.sequence_parallel ? shape.tp_rank * s.Nl : 0;
  return s;
}

int64_t GPT::carve_activations(const GPTConfig& config, const StageShape& shape, Activations& a, Recompute mode,
                               float* base) {
  // The activation planner: which buffers each piece keeps under the recompute mode, in one
  // arena whose bf16 buffers take half the floats.
  const StageDims& s = a.shape;
  const bool sp = shape.sequence_parallel;
  ArenaCarver arena(base, shape.precision == Precision::kBF16, shape.align_floats);
  a.embedded = arena.take_act(static_cast<int64_t>(s.N) * s.C);
  const size_t blocks = static_cast<size_t>(shape.end_layer - shape.first_layer);
  if (config.llama()) {
    carve_blocks(arena, s, sp, mode, blocks, a.llama_layers, carve_llama_block, carve_llama_attention_core);
  } else {
    carve_blocks(arena, s, sp, mode, blocks, a.layers, carve_gpt2_block, carve_gpt2_attention_core);
  }
  // The head's buffers exist on the last stage only.
  carve_head(arena, s, sp, shape.last_stage, head_norm_of(config), a.head);
  carve_stage_scratch(arena, s, a.scratch);
  return arena.used();
}

void GPT::use_slot(int slot) {
  LOOM_CHECK(slot >= 0, "activation slot", slot);
  while (slots_.size() <= static_cast<size_t>(slot)) slots_.push_back(std::make_unique<Activations>());
  acts_ = slots_[static_cast<size_t>(slot)].get();
}

int GPT::counted_targets() const { return acts_ ? acts_->counted : 0; }

void GPT::ensure_activations(int B, int T) {
  if (!acts_) use_slot(0);
  Activations& a = *acts_;
  a.shape = layout_for(B, T);
  const int64_t total = carve_activations(config_, stage_shape(), a, recompute_, nullptr);
  if (a.arena.numel() < total) a.arena = backend_->zeros({total}, DType::kF32);
  carve_activations(config_, stage_shape(), a, recompute_, a.arena.f32());
}

StageOps GPT::stage_ops() const { return StageOps{*backend_, *tp_, sequence_parallel_, act_}; }

LlamaBlockConfig GPT::llama_block_config() const {
  return LlamaBlockConfig{config_.norm_eps, inv_freq_, config_.qkv_bias};
}

void GPT::layer_forward(int l, const void* residual) {
  Activations& a = *acts_;
  const size_t local = static_cast<size_t>(l - first_layer_);
  const size_t first = layer0_ + local * block_tensors_;
  if (config_.llama()) {
    llama_block_forward(stage_ops(), a.shape, llama_block_config(),
                        LlamaBlockWeights::values(params_, first, config_.qkv_bias), a.llama_layers[local], residual,
                        a.scratch.dlocal);
  } else {
    gpt2_block_forward(stage_ops(), a.shape, Gpt2BlockWeights::values(params_, first), a.layers[local], residual,
                       a.scratch.dlocal);
  }
}

float GPT::forward(const int32_t* tokens, const int32_t* targets, int B, int T, const int32_t* doc_starts) {
  const int V = config_.vocab_size;
  if (B <= 0) fail_user("batch size is", B, "but must be positive");
  if (T <= 0 || T > config_.max_seq_len) {
    fail_user("sequence length is", T, "but the model takes 1 ..", config_.max_seq_len,
              "positions (model.seq_len)");
  }
  LOOM_CHECK(!first_stage_ || tokens != nullptr, "the first pipeline stage needs the tokens");
  LOOM_CHECK(targets == nullptr || last_stage_, "only the last pipeline stage takes targets");
  if (tokens) check_token_ids(tokens, B, T, 0, V, false, "token");
  if (targets) check_token_ids(targets, B, T, 0, V, true, "target");
  if (doc_starts) check_doc_starts(doc_starts, B, T);
  ensure_activations(B, T);
  Activations& a = *acts_;
  const Layout& s = a.shape;
  const int N = s.N;
  a.counted = 0;
  // The ids go to the device once per micro-batch (a plain assignment on the CPU).
  auto upload = [&](Tensor& device, std::vector<int32_t>& host, const int32_t* ids) {
    host.assign(ids, ids + N);
    if (device.numel() != N) device = backend_->zeros({N}, DType::kI32);
    backend_->from_host(device, host.data());
  };
  if (tokens) upload(a.device_tokens, a.tokens, tokens);
  if (doc_starts) {
    upload(a.device_doc_starts, a.doc_starts, doc_starts);
    a.shape.doc_starts = a.device_doc_starts;  // the backward (and any recomputation) reads it there too
  }
  a.has_targets = targets != nullptr;
  a.forwarded = true;
  const StageOps ops = stage_ops();
  Backend& be = *backend_;
  // The optimizer, a checkpoint or init_weights() wrote the f32 master: the compute copy follows
  // (a conversion of the weights once per micro-batch, against 2 N FLOPs per weight for the
  // matmuls).
  if (act_ != DType::kF32) be.copy(compute_arena_, param_arena_);

  if (first_stage_) {
    embedding_forward(ops, s, params_[wte_].compute, wpe_ != npos ? params_[wpe_].compute : Tensor(), a.device_tokens,
                      vocab_start_, a.embedded, a.scratch.dlocal);
  }  // else: the previous stage's output was written into a.embedded (stage_input())
  for (int l = first_layer_; l < end_layer_; ++l) {
    layer_forward(l, block_input(l));
  }
  if (!last_stage_) return 0.0f;
  if (a.has_targets) upload(a.device_targets, a.targets, targets);
  head_forward(ops, s, head_norm_of(config_), head_weights(false), stage_output(),
               a.has_targets ? a.device_targets : Tensor(), vocab_start_, a.head);
  if (!a.has_targets) return 0.0f;
  a.counted = 0;
  for (int i = 0; i < N; ++i) a.counted += targets[i] != k::kIgnoreTarget;
  // The row losses, set aside on the device (deferred: read with the step's others) or read
  // back now (the stream's one wait of a forward on a GPU).
  if (defer_loss_) {
    PendingLoss pending{backend_->zeros({N}, DType::kF32), a.targets};
    backend_->copy(pending.rows, ops.stats(a.head.losses, N));
    pending_losses_.push_back(std::move(pending));
    return 0.0f;
  }
  return read_loss(PendingLoss{ops.stats(a.head.losses, N), a.targets});
}

float GPT::read_loss(const PendingLoss& pending) {
  // Summed in f64 over the counted rows, in row order.
  std::vector<float> rows(pending.targets.size());
  tp_->synchronize();  // a stream-ordered group's reductions are complete (or their error thrown)
  backend_->to_host(rows.data(), pending.rows);
  double sum = 0;
  int counted = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (pending.targets[i] != k::kIgnoreTarget) {
      sum += rows[i];
      ++counted;
    }
  }
  return counted ? static_cast<float>(sum / counted) : 0.0f;
}

std::vector<float> GPT::take_losses() {
  std::vector<float> losses;
  for (const PendingLoss& pending : pending_losses_) losses.push_back(read_loss(pending));
  pending_losses_.clear();
  return losses;
}

HeadWeights GPT::head_weights(bool grads) const {
  auto t = [&](size_t i) { return grads ? params_[i].grad : params_[i].compute; };
  // GPT-2: ln_f's weight and bias, the tied wte. Llama: norm's weight, then the tied
  // embed_tokens or the untied lm_head.
  if (!config_.llama()) return {t(lnf_), t(lnf_ + 1), t(wte_)};
  return {t(lnf_), Tensor(), config_.tied() ? t(wte_) : t(lnf_ + 1)};
}

void GPT::backward(float loss_scale, bool last_micro_batch, const GradientsReady& ready) {
  LOOM_CHECK(has_gradients_, "backward() of a model built without gradients");
  LOOM_CHECK(acts_ && acts_->forwarded && (!last_stage_ || acts_->has_targets),
             "GPT::backward needs a forward", last_stage_ ? "with targets" : "", "first");
  Activations& a = *acts_;
  const Layout& s = a.shape;
  const StageOps ops = stage_ops();

  const float dloss = a.counted ? loss_scale / static_cast<float>(a.counted) : 0.0f;
  // With sequence parallelism, some gradients cover only this rank's token rows
  // (partial_under_sp_); once a step's gradients are complete they are summed over the tp group.
  const bool sum_partials = last_micro_batch && sequence_parallel_ && tp_->size() > 1;
  // `announce`: tell `ready` that the arena from first_param on is final.
  auto finish = [&](size_t first_param, size_t count, bool announce = true) {
    if (sum_partials) {
      for (size_t i = first_param; i < first_param + count; ++i) {
        Parameter& p = params_[i];
        if (partial_under_sp_[i]) {
          parallel::SequenceParallelGradients::sum(*tp_, p.grad.f32(), static_cast<size_t>(p.grad.numel()));
        }
      }
    }
    if (announce && last_micro_batch && ready) {
      ready(first_param < params_.size() ? arena_offset(params_[first_param]) : 0);
    }
  };
  if (last_stage_) {
    head_backward(ops, s, head_norm_of(config_), head_weights(false), head_weights(true), stage_output(),
                  a.device_targets, vocab_start_, dloss, a.head, a.scratch);
    finish(lnf_, head_tensors_);
  }  // else: the next stage's gradient of this stage's output is in a.scratch.dresidual

  // dresidual holds d(loss)/d(output of block l) and, through the residual connections, turns
  // into d(loss)/d(input of block l) as the block's branches accumulate into it.
  for (int l = end_layer_ - 1; l >= first_layer_; --l) {
    const size_t local = static_cast<size_t>(l - first_layer_);
    const size_t first = layer0_ + local * block_tensors_;
    const void* residual = block_input(l);
    // Full recomputation reruns the block from its input into the shared buffers (writing the
    // same residual3 again); dresidual is untouched and dlocal/dfull are free here.
    if (recompute_ == Recompute::kFull) layer_forward(l, residual);
    const bool recompute_attention = recompute_ == Recompute::kSelective;
    if (config_.llama()) {
      llama_block_backward(ops, s, llama_block_config(), LlamaBlockWeights::values(params_, first, config_.qkv_bias),
                           LlamaBlockWeights::grads(params_, first, config_.qkv_bias), a.llama_layers[local], residual,
                           a.scratch, recompute_attention);
    } else {
      gpt2_block_backward(ops, s, Gpt2BlockWeights::values(params_, first), Gpt2BlockWeights::grads(params_, first),
                          a.layers[local], residual, a.scratch, recompute_attention);
    }
    finish(first, block_tensors_);
  }
  if (first_stage_) {
    embedding_backward(ops, s, params_[wte_].grad, wpe_ != npos ? params_[wpe_].grad : Tensor(), a.device_tokens,
                       vocab_start_, a.scratch);
  }  // else: a.scratch.dresidual is the gradient of this stage's input (stage_input_grad())
  // The tensors before the first block (wte and wpe, or the last stage's wte) are final now,
  // unless wte's two copies still have to be summed (sum_tied_embedding_gradients, after the
  // pipeline has drained); the optimizer then posts that bucket itself.
  finish(0, layer0_, embedding_ == nullptr);
  a.has_targets = false;  // logits now hold their gradient: a second backward would be wrong
  a.forwarded = false;
}

void GPT::zero_grad() {
  if (has_gradients_) backend_->zero(grad_arena_);
}

int64_t GPT::stage_elements(int B, int T) const {
  const Layout s = layout_for(B, T);
  return static_cast<int64_t>(s.Nl) * s.C;
}

void GPT::sum_tied_embedding_gradients() {
  if (embedding_ == nullptr || wte_ == npos) return;
  Parameter& p = params_[wte_];
  parallel::TiedEmbeddingGradients::sum(*embedding_, p.grad.f32(), static_cast<size_t>(p.grad.numel()));
}

int64_t GPT::arena_offset(const Parameter& p) const { return p.value.f32() - param_arena_.f32(); }

ParameterSet GPT::parameter_set() {
  ParameterSet set;
  set.parameters = &params_;
  set.master = param_arena_;
  set.grads = grad_arena_;
  if (act_ != DType::kF32) set.compute = compute_arena_;
  set.tp = tp_;
  set.pp = pp_;
  set.backend = backend_;
  return set;
}

void check_token_ids(const int32_t* ids, int B, int T, int first_position, int V, bool allow_ignore,
                     const char* what) {
  for (int i = 0; i < B * T; ++i) {
    if ((ids[i] < 0 && !(allow_ignore && ids[i] == -1)) || ids[i] >= V) {
      fail_user(what, "id", ids[i], "at (b, t) = (" + std::to_string(i / T) + ", " +
                std::to_string(first_position + i % T) + ")", "is outside the vocabulary [0,", V,
                allow_ignore ? ") (or -1 to skip)" : ")");
    }
  }
}

void check_doc_starts(const int32_t* doc_starts, int B, int T) {
  for (int i = 0; i < B * T; ++i) {
    const int t = i % T, start = doc_starts[i];
    const bool goes_on = t > 0 && start == doc_starts[i - 1];
    if (start != t && !goes_on) {
      fail_user("doc_starts", start, "at (b, t) = (" + std::to_string(i / T) + ", " + std::to_string(t) + ")",
                "is neither the start of the previous token's document",
                t > 0 ? std::to_string(doc_starts[i - 1]) : std::string("(none: a sequence's first token)"),
                "nor its own position: each token's document begins where the previous token's did or at the token");
    }
  }
}

std::vector<int> even_block_split(int n_layer, int stages) {
  LOOM_CHECK(stages > 0 && n_layer >= 0, "split of", n_layer, "blocks over", stages, "stages");
  std::vector<int> split;
  for (int s = 0; s < stages; ++s) split.push_back(n_layer / stages + (s < n_layer % stages ? 1 : 0));
  return split;
}

ModelParallel model_parallel_for(const parallel::ProcessGrid& grid,
                                 const std::vector<int>& blocks_per_stage, bool sequence_parallel,
                                 int chunk, int chunks) {
  const int p = grid.shape().pp;
  LOOM_CHECK(chunks >= 1 && chunk >= 0 && chunk < chunks, "chunk", chunk, "of", chunks);
  LOOM_CHECK(static_cast<int>(blocks_per_stage.size()) == p * chunks, blocks_per_stage.size(),
             "block counts for", p, "pipeline stages x", chunks, "chunks");
  const int stage = chunk * p + grid.coord().pp;  // the virtual stage
  int first = 0;
  for (int s = 0; s < stage; ++s) first += blocks_per_stage[static_cast<size_t>(s)];
  ModelParallel layout;
  layout.tp = &grid.tp();
  layout.sequence_parallel = sequence_parallel;
  layout.arena_multiple = grid.shape().dp;
  layout.first_layer = first;
  layout.end_layer = first + blocks_per_stage[static_cast<size_t>(stage)];
  layout.first_stage = stage == 0;
  layout.last_stage = stage == p * chunks - 1;
  layout.pp = &grid.pp();
  layout.embedding = &grid.embedding();
  return layout;
}

std::vector<float> gather_parameter(const GPT& model, const Parameter& p, parallel::Communicator* host_tp) {
  parallel::Communicator& tp = host_tp != nullptr ? *host_tp : model.tp();
  LOOM_CHECK(tp.size() == model.tp().size() && tp.rank() == model.tp().rank(), "gather_parameter over",
             tp.name(), "which is not the model's tensor-parallel group");
  // Each rank places its blocks into a zero tensor (replicated tensors: rank 0 only) and the sum
  // over the group assembles the whole.
  std::vector<float> global(static_cast<size_t>(p.global_shape.numel()), 0.0f);
  if (!p.tp_replicated || tp.rank() == 0) {
    HostCopy local(model.backend(), p.value, /*download=*/true);
    place_into_global(p, local.host().f32(), global.data());
  }
  if (tp.size() > 1) tp.all_reduce(global.data(), global.data(), global.size(), DType::kF32, parallel::ReduceOp::kSum);
  return global;
}

}  // namespace loom
