// The model: a pipeline stage of a GPT-2 or Llama-family transformer (GPTConfig::family),
// tensor-parallel (Megatron-style) with optional sequence parallelism.
//
// Forward and backward are written out per layer (no autograd). Each tensor-parallel rank holds:
// the rows of the fused QKV weight for its query heads (and, for grouped-query attention, the
// key/value heads that serve them) and the matching columns of the attention output projection;
// a contiguous slice of the MLP's hidden units (rows of c_fc or of Llama's fused gate/up, columns
// of the MLP output projection); a contiguous slice of the vocabulary (rows of the token
// embedding and the output projection), so that the full-vocabulary logits never exist on one
// rank (vocabulary-parallel cross-entropy). Norms, wpe and the row-parallel biases are
// replicated. Communication happens only in the paired regions of parallel/regions.h. With
// sequence parallelism the residual stream, norms and dropout-free token-wise work hold N / tp of
// the N = B * T token rows per rank.
//
// One rank is the case tp = 1 of the same code (its regions are copies), so the single-process
// trainer and every parallel layout share one implementation. The ops run on a Backend
// (core/backend/backend.h) in its precision: fp32, or bf16 activations and compute weights with
// f32 master weights and gradients; the tensors come from the family's parameter layout
// (core/model/layout.h), the blocks from core/model/gpt2_block.h and llama_block.h.
//
//   GPT-2: x = wte[tokens] + wpe[:T]; each block: x += attn(ln_1(x)); x += mlp(ln_2(x));
//          logits = ln_f(x) @ wte^T
//   Llama: x = embed_tokens[tokens]; each block: x += attn(rope; rmsnorm_1(x)); x += swiglu(rmsnorm_2(x));
//          logits = norm(x) @ (lm_head or embed_tokens)^T
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/config.h"
#include "core/model/embedding_head.h"
#include "core/model/llama_block.h"
#include "core/model/layout.h"
#include "core/model/stage_context.h"
#include "core/parameter.h"
#include "core/parameter_set.h"
#include "core/tensor.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace loom {

// The model families (docs/models.md): the block, the positions and the norms differ; the
// pipeline of embedding, blocks and head, the parallel layouts and the optimizer are shared.
enum class Family : uint8_t {
  kGpt2,   // LayerNorm, learned positions, GELU MLP, biases, tied embeddings
  kLlama,  // RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention, no biases
};

struct GPTConfig {
  int n_layer = 2;
  int n_head = 4;
  int n_embd = 128;
  int vocab_size = 16;
  int max_seq_len = 16;
  Family family = Family::kGpt2;
  // Llama family only (GPT-2 keeps these defaults).
  int n_kv_head = 0;          // key/value heads; 0: n_head
  int intermediate_size = 0;  // SwiGLU hidden units; 0: llama_intermediate_size(n_embd)
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool tie_embeddings = false;
  bool qkv_bias = false;
  // Llama 3's rotary frequency scaling (rope_llama3 false: none).
  bool rope_llama3 = false;
  float rope_factor = 8.0f, rope_low_freq_factor = 1.0f, rope_high_freq_factor = 4.0f;
  int rope_original_max_position = 8192;

  bool llama() const { return family == Family::kLlama; }
  // The derived sizes, whatever the family: key/value heads, head size, MLP hidden units.
  int kv_heads() const { return llama() && n_kv_head > 0 ? n_kv_head : n_head; }
  int head_size() const { return n_embd / n_head; }
  int64_t mlp_hidden() const;
  // Whether the output projection is the token embedding (always for GPT-2).
  bool tied() const { return !llama() || tie_embeddings; }
  // Throws UserError naming the first invalid field.
  void validate() const;
  bool operator==(const GPTConfig&) const = default;
};

// Llama's default MLP width for n_embd C: 8C/3 rounded up to a multiple of 256.
int64_t llama_intermediate_size(int64_t n_embd);
// The model of a run config's model section (vocab_size and seq_len must be set); validated.
GPTConfig gpt_config_of(const config::ModelConfig& m);
// Writes `c` into a run config's model section (every field the family has).
void set_model_config(const GPTConfig& c, config::ModelConfig* m);

// How this rank's share of the model is laid out.
struct ModelParallel {
  parallel::Communicator* tp = nullptr;  // the tensor-parallel group; null: one rank
  bool sequence_parallel = false;
  // The parameter and gradient arenas are padded (with zeros) to a multiple of this, so that a
  // data-parallel optimizer can cut them into dp equal slices.
  int arena_multiple = 1;
  // Pipeline stage: blocks [first_layer, end_layer) (end_layer -1: through the last). The first
  // stage also holds the embeddings, the last the final LayerNorm and the output projection,
  // whose weight is the last stage's own copy of wte (a runner keeps the copies equal by summing
  // their gradients).
  int first_layer = 0;
  int end_layer = -1;
  bool first_stage = true;
  bool last_stage = true;
  parallel::Communicator* pp = nullptr;         // the pipeline group; null: one stage
  parallel::Communicator* embedding = nullptr;  // first + last stage (ProcessGrid::embedding())
  // Runs the model's ops (core/backend/backend.h); null: a CpuBackend in fp32 of the model's own.
  Backend* backend = nullptr;
  // false: no gradient arena (a model that only runs forward: evaluation, sampling, the whole
  // model rank 0 assembles); backward() is then an error.
  bool gradients = true;
};

// What the sizes of one rank's share depend on (ModelParallel without its communicators), so
// that they can be known before anything is allocated: memory estimates, size validation.
struct StageShape {
  int tp = 1, tp_rank = 0;
  int first_layer = 0, end_layer = -1;  // -1: through the last block
  bool first_stage = true, last_stage = true;
  bool sequence_parallel = false;
  int arena_multiple = 1;
  Precision precision = Precision::kF32;  // the backend's: bf16 activations take half the bytes
  // Each activation buffer starts at a multiple of this many floats: 1 on the CPU, 64 (256 bytes,
  // what cuBLASLt's fastest kernels want; it needs 16) on a GPU.
  int64_t align_floats = 1;
};

// Activation recomputation: what the forward keeps for the backward.
//   kNone       every block's activations are kept.
//   kSelective  the attention core (its output and log-sum-exp) is recomputed from QKV in the
//               backward: per block, N x C/tp + B x NH/tp x T fewer floats.
//   kFull       only each block's output (the residual stream) is kept; the backward reruns the
//               block's forward (communication included) before differentiating it.
// Results are bitwise identical in every mode.
enum class Recompute : uint8_t { kNone = 0, kSelective = 1, kFull = 2 };

// UserError unless every id of ids (B, T) lies in [0, V) (or is -1, when -1 is allowed: targets
// that do not count). The message names the id and its (b, t) position, t counted from
// first_position.
void check_token_ids(const int32_t* ids, int B, int T, int first_position, int V, bool allow_ignore,
                     const char* what);

// UserError unless doc_starts (B, T) describes documents packed into each sequence as the ops take
// them (core/backend/backend.h): for the token at position t, 0 <= doc_starts[t] <= t, and either
// doc_starts[t] == doc_starts[t - 1] (the document goes on) or doc_starts[t] == t (one begins).
void check_doc_starts(const int32_t* doc_starts, int B, int T);

// Blocks per pipeline stage, as even as possible, earlier stages taking the remainder.
std::vector<int> even_block_split(int n_layer, int stages);

// This rank's layout in `grid`: its tensor-parallel group, its pipeline stage holding
// blocks_per_stage[its pp rank] blocks after those of the earlier stages, arenas padded for dp.
// With `chunks` > 1 (interleaved pipeline) the model is cut into chunks * pp virtual stages and
// blocks_per_stage has one count per virtual stage: chunk c of pipeline rank s is virtual stage
// c * pp + s.
ModelParallel model_parallel_for(const parallel::ProcessGrid& grid,
                                 const std::vector<int>& blocks_per_stage, bool sequence_parallel,
                                 int chunk = 0, int chunks = 1);

// Called during the backward of a step's last micro-batch: every gradient element at arena
// offset >= the argument is final (summed over micro-batches and, for sequence parallelism, over
// the tensor-parallel group).
using GradientsReady = std::function<void(int64_t arena_offset)>;

class GPT {
 public:
  // UserError if the layout does not fit the model (heads not divisible by tp, ...).
  explicit GPT(const GPTConfig& config, const ModelParallel& parallel = {});
  GPT(const GPT&) = delete;
  GPT& operator=(const GPT&) = delete;
  ~GPT();

  const GPTConfig& config() const { return config_; }
  parallel::Communicator& tp() const { return *tp_; }
  parallel::Communicator& pp() const { return *pp_; }
  // Elements of one stage boundary buffer for a micro-batch of (B, T).
  int64_t stage_elements(int B, int T) const;
  // After the step's last backward, with several stages: sums the gradients of the two copies of
  // wte (first and last stage) so that both take the same update. Collective over the embedding
  // group; a no-op elsewhere.
  void sum_tied_embedding_gradients();
  bool sequence_parallel() const { return sequence_parallel_; }
  // The backend the model runs on; its arenas (parameters, gradients, activations) live on the
  // backend's device, so host code reads and writes them through it (core/backend/host_copy.h);
  // a decoder of the model runs on it too.
  Backend& backend() const { return *backend_; }
  std::vector<Parameter>& parameters() { return params_; }
  const std::vector<Parameter>& parameters() const { return params_; }
  const Parameter& parameter(const std::string& name) const;
  // Elements of the whole (unsharded) tensors this stage holds: the model's parameter count
  // when there is one stage.
  int64_t num_parameters() const;
  int first_layer() const { return first_layer_; }
  int end_layer() const { return end_layer_; }
  bool first_stage() const { return first_stage_; }
  bool last_stage() const { return last_stage_; }
  // What an optimizer of this chunk updates: the parameters, their arenas, the groups, the backend.
  ParameterSet parameter_set();
  // This rank's parameter values (resp. gradients) as one flat buffer, in parameters() order, on
  // the backend's device.
  Tensor parameter_arena() const { return param_arena_; }
  Tensor gradient_arena() const { return grad_arena_; }
  // The vocabulary slice [vocab_start, vocab_start + vocab_count) whose logits this rank holds.
  int vocab_start() const { return vocab_start_; }
  int vocab_count() const { return vocab_count_; }

  // GPT-2 initialisation drawn at each element's global index from a counter-based RNG keyed by
  // (seed, parameter name): N(0, 0.02) for matrices and embeddings, 0.02 / sqrt(2 n_layer) for
  // the residual projections, zero biases, unit LayerNorm gains. Identical for every layout.
  void init_weights(uint64_t seed);

  // Runs the model on tokens (B, T); every tensor-parallel rank passes the same tokens. With
  // targets (B, T) (-1 = not counted) it returns the mean cross-entropy over counted positions
  // (0 when none count); without, returns 0. UserError for a token or target outside the
  // vocabulary. logits() is valid until backward(). doc_starts (B, T) packs several documents
  // into a sequence (check_doc_starts): each token attends only to earlier tokens of its own
  // document and its position counts from its document's start, so a packed sequence computes
  // what its documents would as separate sequences; null is one document per sequence. Every
  // pipeline stage takes it (each stage's attention masks).
  float forward(const int32_t* tokens, const int32_t* targets, int B, int T, const int32_t* doc_starts = nullptr);
  // With deferral on, forward() does not wait for its loss (it returns 0): the row losses stay on
  // the device until take_losses() reads them, so that a step's micro-batches run without the
  // host waiting for each (train_step reads them once, after the last backward). Turning it off
  // drops losses not taken (a step that failed half-way).
  void set_defer_loss(bool defer) {
    defer_loss_ = defer;
    if (!defer) pending_losses_.clear();
  }
  // The mean losses of the forwards with targets since the last call, in order, as forward()
  // would have returned them. Collective over the tensor-parallel group (synchronises it).
  std::vector<float> take_losses();
  // (B, T, vocab_count()) logits of the last forward: this rank's vocabulary slice (fp32 only).
  const float* logits() const;
  // The same as a (B * T, vocab_count()) view of the activation dtype (f32 or bf16).
  Tensor logits_view() const;
  // Llama: the rotary inverse frequencies (head size / 2) f32 on the backend's device, for a
  // decoder of the model; empty for GPT-2.
  const Tensor& rope_frequencies() const { return inv_freq_; }
  // The dtype of activations and of the stage boundary buffers below (f32 or bf16).
  DType activation_dtype() const { return act_; }

  // Pipeline stage boundaries, for a micro-batch of (B, T); each is (rows of this rank, C), the
  // rows being N / tp with sequence parallelism, else N = B * T.
  // A stage that is not the first reads its input from stage_input(): fill it, then forward().
  // The buffers hold activation_dtype() elements.
  void* stage_input(int B, int T);
  // A stage that is not the last leaves its output here after forward().
  const void* stage_output() const;
  // A stage that is not the last reads the gradient of its output from here: fill it, then
  // backward().
  void* stage_output_grad();
  // A stage that is not the first leaves the gradient of its input here after backward().
  const void* stage_input_grad() const;

  // Targets counted (not -1) in the last forward of the active slot.
  int counted_targets() const;

  // Activation slots: each micro-batch in flight (pipeline schedules run several forwards before
  // their backwards) keeps its activations in its own slot. forward() and backward() work on the
  // active slot; slot 0 is active until another is chosen.
  void use_slot(int slot);

  // Accumulates d(loss_scale * loss)/d(params) into the gradients; loss_scale = 1 / accum steps
  // for gradient accumulation. Needs the preceding forward to have had targets. For the last
  // micro-batch of a step, `last_micro_batch` finishes the gradients as the backward goes: with
  // sequence parallelism the replicated LayerNorm and wpe gradients, which each rank computed
  // from its own token rows, are summed over the tensor-parallel group, and `ready` (if given) is
  // told how much of the arena is final after each block.
  void backward(float loss_scale = 1.0f, bool last_micro_batch = true, const GradientsReady& ready = {});
  void zero_grad();
  // Offset of a parameter's first element in the arenas.
  int64_t arena_offset(const Parameter& p) const;

  // Takes effect at the next forward.
  void set_recompute(Recompute mode) { recompute_ = mode; }
  Recompute recompute() const { return recompute_; }
  // Bytes of activations (forward and backward buffers) for a micro-batch of (B, T) under `mode`.
  size_t activation_bytes(Recompute mode, int B, int T) const;

  // Without building a model (nothing allocated), in 64-bit checked arithmetic (UserError for
  // a size that overflows or a dimension the kernels cannot index): the floats of the parameter
  // arena of the rank `shape` describes (its gradient arena is as large), and of one activation
  // slot for a micro-batch of (B, T). The same numbers a GPT built for that rank uses.
  static int64_t arena_elements(const GPTConfig& config, const StageShape& shape);
  static int64_t activation_elements(const GPTConfig& config, const StageShape& shape, Recompute mode,
                                     int64_t B, int64_t T);
  // Every parameter tensor of the whole model, by name with its global shape, in parameters()
  // order (the tied output projection is wte itself). What a checkpoint of the model stores.
  struct ParameterShape {
    std::string name;
    Shape global;
  };
  static std::vector<ParameterShape> parameter_shapes(const GPTConfig& config);

 private:
  struct Layout;
  struct Activations;
  StageShape stage_shape() const;
  Layout layout_for(int B, int T) const;
  static Layout layout_of(const GPTConfig& config, const StageShape& shape, int64_t B, int64_t T);
  // Assigns the buffers of `a` for `mode` from `base` (null: only counts); returns the floats used.
  static int64_t carve_activations(const GPTConfig& config, const StageShape& shape, Activations& a, Recompute mode,
                                   float* base);
  void ensure_activations(int B, int T);
  StageOps stage_ops() const;
  // A forward's row losses on the device and the targets that say which count.
  struct PendingLoss {
    Tensor rows;                   // (N) f32
    std::vector<int32_t> targets;  // (N), on the host
  };
  float read_loss(const PendingLoss& pending);
  // The head's tensors: their compute values, or their gradients.
  HeadWeights head_weights(bool grads) const;
  void layer_forward(int layer, const void* residual_in);
  LlamaBlockConfig llama_block_config() const;
  // The residual stream entering block `layer` (== the stage's output for end_layer).
  const void* block_input(int layer) const;

  GPTConfig config_;
  int first_layer_ = 0, end_layer_ = 0;
  bool first_stage_ = true, last_stage_ = true;
  // Indices into params_ of the tensors a stage may or may not hold (npos: not held).
  static constexpr size_t npos = static_cast<size_t>(-1);
  size_t wte_ = npos, wpe_ = npos, layer0_ = npos, lnf_ = npos;
  size_t block_tensors_ = 0;  // per block
  size_t head_tensors_ = 0;   // from lnf_ on: the final norm's and an untied output projection
  Tensor inv_freq_;           // Llama: the rotary inverse frequencies (head size / 2) f32, on the device
  std::unique_ptr<parallel::Communicator> solo_;     // owned when no tp group was given
  std::unique_ptr<parallel::Communicator> solo_pp_;  // owned when no pp group was given
  std::unique_ptr<Backend> owned_backend_;           // owned when no backend was given
  Backend* backend_ = nullptr;
  parallel::Communicator* tp_ = nullptr;
  parallel::Communicator* pp_ = nullptr;
  parallel::Communicator* embedding_ = nullptr;  // null unless the tied wte has two copies
  bool sequence_parallel_ = false;
  int arena_multiple_ = 1;
  int vocab_start_ = 0, vocab_count_ = 0;
  Device device_ = Device::kCPU;  // the backend's: where every arena lives
  Precision precision_ = Precision::kF32;
  DType act_ = DType::kF32;  // activations and compute weights
  Tensor param_arena_;       // f32 master weights
  Tensor grad_arena_;        // f32 gradients (none without ModelParallel::gradients)
  bool has_gradients_ = true;
  Tensor compute_arena_;     // the weights in act_ when that is not f32 (else unused)
  std::vector<Parameter> params_;
  // Per parameter: with sequence parallelism each tp rank computes only its token rows' part of
  // the gradient (the replicated LayerNorms and wpe; not the row-parallel biases, whose output
  // gradient is gathered whole).
  std::vector<bool> partial_under_sp_;
  std::vector<Init> inits_;  // per parameter: its initialisation (core/model/layout.h)
  std::vector<std::unique_ptr<Activations>> slots_;
  Activations* acts_ = nullptr;  // the active slot
  Recompute recompute_ = Recompute::kNone;
  bool defer_loss_ = false;
  std::vector<PendingLoss> pending_losses_;
};

// The whole (unsharded) tensor of parameter `p` of a tensor-parallel model, assembled on every
// rank of the tp group (collective over it), on the host. `host_tp` is a communicator of host
// buffers over the same ranks as the model's tp group (null: the model's own, when that one
// takes host buffers, as on the CPU); a model on a GPU passes the MPI group its NCCL one mirrors.
std::vector<float> gather_parameter(const GPT& model, const Parameter& p, parallel::Communicator* host_tp = nullptr);

}  // namespace loom
