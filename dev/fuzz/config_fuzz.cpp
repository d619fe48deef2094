// libFuzzer target for configs and the size validation behind them: the input, as protobuf text,
// goes through what `loom train` does with a config before it allocates a model
// (parse_config_text, the --set overrides, validate_config, fit_model_to_data, model_config_of,
// pipeline_split, estimate_memory, check_memory_fits); a config whose estimate is small is then
// built, as the ranks of its layout would build it, so that AddressSanitizer sees every byte a
// model writes and an estimate smaller than the model is caught. A UserError is the expected
// answer to a bad config; any other exception, a crash, a sanitizer report or a leak is a bug.
//
// Input: protobuf text of a RunConfig. Two kinds of comment line, which the parser skips, say more:
//   #set a.b=c         applied with apply_config_override after the parse (the `--set` flag)
//   #token_vocab N     the vocabulary the token shards would have (data.tokens; default 50257),
//                      since no shard is read here
// so every seed is a valid .pbtxt file (dev/fuzz/config_seeds/).
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <cblas.h>
#include <google/protobuf/stubs/logging.h>

#include "core/base/check.h"
#include "core/config.h"
#include "core/gpt.h"
#include "launch/memory_plan.h"
#include "launch/run_shape.h"
#include "parallel/communicator.h"

namespace {

// What the memory check assumes a host has: a workstation's share, so that big models are
// refused by the estimate (as they would be) and small ones go on to be built.
constexpr int64_t kHostBytes = int64_t{24} << 30;
// Models are built only when the estimate is under this (the fuzzer's speed and memory).
constexpr int64_t kBuildBytes = int64_t{64} << 20;
// A forward and backward run only when parameters x tokens is under this.
constexpr int64_t kRunWork = int64_t{1} << 22;
constexpr int kDefaultTokenVocab = 50257;

[[noreturn]] void report_bug(const std::string& what) {
  std::fprintf(stderr, "config_fuzz: BUG: %s\n", what.c_str());
  std::abort();
}

// One rank of a tensor-parallel group, for building that rank's share of a model: GPT's
// constructor and init_weights only ask for the group's size and the rank. Any collective is a
// bug in this target (it builds, it does not run, a tp > 1 model).
class ShapeOnlyCommunicator : public loom::parallel::Communicator {
 public:
  ShapeOnlyCommunicator(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int world_rank_of(int group_rank) const override { return group_rank; }
  void all_reduce(const void*, void*, size_t, loom::DType, loom::parallel::ReduceOp) override { refuse(); }
  void all_gather(const void*, void*, size_t, loom::DType) override { refuse(); }
  void reduce_scatter(const void*, void*, size_t, loom::DType, loom::parallel::ReduceOp) override { refuse(); }
  std::unique_ptr<loom::parallel::CommRequest> all_reduce_async(const void*, void*, size_t, loom::DType,
                                                                loom::parallel::ReduceOp) override {
    refuse();
  }
  std::unique_ptr<loom::parallel::CommRequest> reduce_scatter_async(const void*, void*, size_t, loom::DType,
                                                                    loom::parallel::ReduceOp) override {
    refuse();
  }
  std::unique_ptr<loom::parallel::CommRequest> all_gather_async(const void*, void*, size_t, loom::DType) override {
    refuse();
  }
  void broadcast(void*, size_t, loom::DType, int) override { refuse(); }
  void send(const void*, size_t, loom::DType, int, int) override { refuse(); }
  void recv(void*, size_t, loom::DType, int, int) override { refuse(); }
  void send_recv_batch(std::span<const loom::parallel::P2POp>) override { refuse(); }
  std::unique_ptr<loom::parallel::CommRequest> send_recv_batch_async(std::span<const loom::parallel::P2POp>) override {
    refuse();
  }
  void barrier() override { refuse(); }
  std::unique_ptr<Communicator> split(int, int, const std::string&) override { refuse(); }

 private:
  [[noreturn]] static void refuse() { report_bug("a collective was called while building a model"); }
  int rank_, size_;
  std::string name_ = "tp";
};

struct FuzzInput {
  std::vector<std::string> overrides;
  int token_vocab = kDefaultTokenVocab;
};

FuzzInput directives_of(std::string_view text) {
  FuzzInput in;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    if (line.starts_with("#set ")) {
      in.overrides.emplace_back(line.substr(5));
    } else if (line.starts_with("#token_vocab ")) {
      const std::string_view n = line.substr(13);
      std::from_chars(n.data(), n.data() + n.size(), in.token_vocab);
    }
  }
  return in;
}

// The shape of tensor-parallel rank `tp_rank` of virtual stage `virtual_stage`, as estimate_memory
// and model_parallel_for lay it out.
loom::StageShape stage_shape_of(const loom::config::RunConfig& cfg, const std::vector<int>& split,
                                int virtual_stage, int tp_rank) {
  const loom::config::ParallelConfig& p = cfg.parallel();
  loom::StageShape shape;
  shape.tp = p.tp();
  shape.tp_rank = tp_rank;
  for (int s = 0; s < virtual_stage; ++s) shape.first_layer += split[static_cast<size_t>(s)];
  shape.end_layer = shape.first_layer + split[static_cast<size_t>(virtual_stage)];
  shape.first_stage = virtual_stage == 0;
  shape.last_stage = virtual_stage == static_cast<int>(split.size()) - 1;
  shape.sequence_parallel = p.sequence_parallel();
  shape.arena_multiple = p.dp();
  return shape;
}

// Builds the share `shape` describes and initialises it: ASan checks every write against the
// arena the model allocated, and the arena must be what arena_elements says.
void build_share(const loom::GPTConfig& model, const loom::StageShape& shape) {
  ShapeOnlyCommunicator tp(shape.tp_rank, shape.tp);
  loom::ModelParallel parallel;
  parallel.tp = &tp;
  parallel.sequence_parallel = shape.sequence_parallel;
  parallel.arena_multiple = shape.arena_multiple;
  parallel.first_layer = shape.first_layer;
  parallel.end_layer = shape.end_layer;
  parallel.first_stage = shape.first_stage;
  parallel.last_stage = shape.last_stage;
  loom::GPT gpt(model, parallel);
  gpt.init_weights(1);
  const int64_t expected = loom::GPT::arena_elements(model, shape);
  if (gpt.parameter_arena().numel() != expected || gpt.gradient_arena().numel() != expected) {
    report_bug("arena_elements says " + std::to_string(expected) + " but the model built " +
               std::to_string(gpt.parameter_arena().numel()));
  }
}

// The whole model on one rank (what rank 0 holds for evaluation), one step's forward and backward
// of a micro-batch in the config's recomputation mode: every activation buffer is written.
void run_whole_model(const loom::config::RunConfig& cfg, const loom::GPTConfig& model, int64_t T) {
  loom::GPT gpt(model);
  gpt.init_weights(cfg.train().seed());
  gpt.set_recompute(static_cast<loom::Recompute>(cfg.train().recompute()));
  const int B = cfg.train().micro_batch_size();
  const int N = B * static_cast<int>(T);
  std::vector<int32_t> tokens(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i) {
    tokens[static_cast<size_t>(i)] = i % model.vocab_size;
    targets[static_cast<size_t>(i)] = i % 3 == 0 ? -1 : (i * 7) % model.vocab_size;
  }
  gpt.forward(tokens.data(), targets.data(), B, static_cast<int>(T));
  gpt.backward();
}

void check_config(const std::string& text) {
  const FuzzInput in = directives_of(text);
  loom::config::RunConfig cfg = loom::parse_config_text(text, "fuzz");
  for (const std::string& o : in.overrides) loom::apply_config_override(cfg, o);
  loom::validate_config(cfg);
  loom::fit_model_to_data(cfg, in.token_vocab);
  const loom::GPTConfig model = loom::model_config_of(cfg);

  const std::vector<int> split = loom::pipeline_split(cfg);
  const loom::config::ParallelConfig& p = cfg.parallel();
  int64_t blocks = 0;
  for (int n : split) blocks += n;
  if (static_cast<int64_t>(split.size()) != int64_t{p.pp()} * p.virtual_stages() || blocks != model.n_layer) {
    report_bug("pipeline_split gave " + std::to_string(split.size()) + " stages holding " +
               std::to_string(blocks) + " blocks for a validated config");
  }

  const loom::MemoryEstimate estimate = loom::estimate_memory(cfg);
  (void)estimate.describe();
  loom::check_memory_fits(estimate, 1, true, kHostBytes);
  if (estimate.per_rank() + estimate.rank0_whole_model >= kBuildBytes) return;

  // The first rank of the layout, and the last one (the last stage's head, the last vocabulary
  // slice: the shares that differ from the first).
  const int stages = static_cast<int>(split.size());
  build_share(model, stage_shape_of(cfg, split, 0, 0));
  if (stages > 1 || p.tp() > 1) build_share(model, stage_shape_of(cfg, split, stages - 1, p.tp() - 1));

  const int64_t T = cfg.data().has_tokens() ? cfg.data().tokens().seq_len() : model.max_seq_len;
  // B x T fits in int: layout_of checked it for the estimate.
  const int64_t tokens = cfg.train().micro_batch_size() * T;
  if (loom::GPT::arena_elements(model, loom::StageShape{}) < kRunWork / tokens) run_whole_model(cfg, model, T);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field that is not UTF-8; the parse goes on, and so do we, quietly.
  google::protobuf::SetLogHandler(nullptr);
  // One thread: the kernels are built without OpenMP here, and OpenBLAS's own threads would only
  // spin against the fuzzer on a busy machine (the target checks memory, not speed).
  openblas_set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    check_config(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const loom::UserError&) {
    // A bad config, reported as one: the expected outcome.
  } catch (const std::exception& e) {
    report_bug(std::string("exception other than UserError: ") + e.what());
  }
  return 0;
}
