// The evaluations of `loom eval` and of training's periodic evaluations (docs/evaluation.md), run
// on a model in any parallel layout.
//
//   loss              a dataset split's mean cross-entropy per token and its perplexity
//   multiple choice   each choice scored by the log-likelihood of its tokens after the context
//                     (row_log_likelihoods, core/train_step.h): accuracy and length-normalised
//                     accuracy, as lm-evaluation-harness defines them
//   exact match       greedy answers to prompts, compared with the expected answer
//   addition          the built-in addition task's held-out problems (launch/evaluation.h)
//
// The log-likelihood evaluations run on the parallel model: the tensor-parallel and pipeline
// ranks of a replica score the same documents, the data-parallel replicas share the documents
// out (document i to replica i % dp) and sum their scores. The generative ones decode with the
// KV cache on whole models: the ranks of `decoders` that hold one share the documents out.
// Every rank tokenizes and checks every document first, so a document the model cannot take
// stops every rank alike with `FILE:LINE: what is wrong`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/gpt.h"
#include "data/addition.h"
#include "data/tokenizer.h"
#include "launch/eval_tasks.h"
#include "parallel/communicator.h"

namespace loom {

// Text <-> token ids for an evaluation: a tokenizer, or the addition task's alphabet.
struct TextCodec {
  std::function<std::vector<int32_t>(const std::string&)> encode;
  std::function<std::string(const std::vector<int32_t>&)> decode;
  int32_t eos = -1;  // the end-of-sequence token; -1: none
  std::string name;  // for messages: the tokenizer's path, or "the addition task's alphabet"
};
TextCodec tokenizer_codec(std::shared_ptr<const Tokenizer> tokenizer, const std::string& path);
TextCodec addition_codec(const AdditionTask& task);

// The model a log-likelihood evaluation runs: this rank's chunks (one per virtual stage it
// holds, as train_step takes them) and the data-parallel group (host buffers: MPI or one rank).
struct LayoutModel {
  std::span<GPT* const> chunks;
  parallel::Communicator* dp = nullptr;
  int batch_rows = 8;  // sequences per forward pass
  // Every forward pass of batch_rows x the model's max_seq_len (rows and positions padded), as a
  // training run's model is shaped; else each pass is as long as its longest sequence.
  bool fixed_shape = false;
};

struct LossResult {
  double loss = 0;        // mean cross-entropy per predicted token (nats)
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // predicted tokens
  int64_t sequences = 0;
};
// The split `split` of the dataset directory `dir` (written by `loom prepare`): its token stream
// cut into consecutive sequences of the model's max_seq_len + 1 tokens (each predicts max_seq_len,
// a last shorter one what remains), the first `limit` of them (0: all). Collective.
LossResult evaluate_loss_task(const LayoutModel& model, const std::string& dir, const std::string& split, int limit);

struct ChoiceResult {
  MeanScore acc, acc_norm;
  // Per document, per choice: the summed log-likelihood of the choice's tokens (every rank).
  std::vector<std::vector<double>> log_likelihoods;
};
// The documents of `path` scored by the model. A choice is scored as `delimiter` + the choice after
// the context; whitespace ending the context moves to the front of the continuation, and the
// continuation's tokens are those that encoding context + continuation whole adds after the
// context's own (the harness's split); an empty context is the end-of-sequence token. The context
// is cut from the left to fit the model's positions. Collective.
ChoiceResult evaluate_multiple_choice(const LayoutModel& model, const TextCodec& codec,
                                      const std::vector<ChoiceDoc>& docs, const std::string& path,
                                      const std::string& delimiter = " ");
// acc and acc_norm of documents from their choices' log-likelihoods (not collective).
void score_choices(const std::vector<ChoiceDoc>& docs, ChoiceResult& result);

// Greedy continuations of each prompt, at most as many tokens as the answer encodes to alone,
// ending early at the end-of-sequence token or at a newline; one document is right when the text before the first
// newline, trimmed of whitespace, equals the trimmed answer. Collective over `decoders`, each
// holding the whole model.
MeanScore evaluate_exact_match(const GPT& whole, parallel::Communicator& decoders, const TextCodec& codec,
                               const std::vector<AnswerDoc>& docs, const std::string& path);
// The first `limit` (0: all) held-out problems of `task`, answered greedily. Collective over
// `decoders`, each holding the whole model.
MeanScore evaluate_addition(const GPT& whole, parallel::Communicator& decoders, const AdditionTask& task, int limit);

// A task as `loom eval`'s flags and train.eval_task name it, its documents read and checked.
struct EvalTask {
  enum class Kind { kLoss, kMultipleChoice, kExactMatch, kAddition };
  Kind kind = Kind::kLoss;
  std::string source;  // the JSONL file, DIR[:split], or the addition task's digits
  std::string name;    // its results' prefix in the metrics: the file's (directory's) name without extension
  int limit = 0;       // documents (sequences, problems) evaluated; 0: all
  std::string delimiter = " ";  // multiple choice: between the context and each choice
  std::vector<ChoiceDoc> choice_docs;
  std::vector<AnswerDoc> answer_docs;
  std::string dir, split;               // loss
  std::optional<AdditionTask> addition;  // addition
  bool generative() const { return kind == Kind::kExactMatch || kind == Kind::kAddition; }
};
const char* eval_kind_name(EvalTask::Kind kind);  // "loss", "multiple_choice", "exact_match", "addition"
// Reads and checks the task's documents (UserError FILE:LINE for a bad line): every rank alike.
// `addition_seed`, `test_problems`: the addition task's, from the model's run config.
EvalTask load_eval_task(EvalTask::Kind kind, const std::string& source, int limit, const std::string& delimiter,
                        uint64_t addition_seed = 1337, int test_problems = 1000);

// One task's results: what `loom eval` prints and writes and training's metrics record.
struct TaskReport {
  std::string kind, source, name;
  int64_t size = 0;  // documents, problems or sequences
  std::vector<std::pair<std::string, double>> values;  // e.g. acc, acc_stderr, acc_norm, acc_norm_stderr
};

// What the tasks run on. `whole`/`decoders`: the ranks that decode (each holding the whole
// model) and their group; `whole` null: this rank takes no part in generative tasks (their
// report is then empty).
struct EvalModels {
  LayoutModel layout;
  const GPT* whole = nullptr;
  parallel::Communicator* decoders = nullptr;
  const TextCodec* codec = nullptr;  // needed by multiple-choice and exact-match tasks
};
// Collective over the layout's groups (log-likelihood tasks) or `decoders` (generative ones).
TaskReport run_eval_task(const EvalTask& task, const EvalModels& models);

// This rank's share of `whole` (a CPU model in fp32 holding every tensor) copied into `chunk`,
// a model of the same config in any layout: each of its tensors' blocks from the whole tensor.
void copy_shard_from_whole(const GPT& whole, GPT& chunk);

}  // namespace loom
