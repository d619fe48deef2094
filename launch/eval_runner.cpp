#include "launch/eval_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/backend/host_copy.h"
#include "core/base/check.h"
#include "core/decoder.h"
#include "core/train_step.h"
#include "data/loader.h"
#include "data/token_dataset.h"
#include "launch/evaluation.h"

namespace loom {

namespace {

// A sequence to score: tokens (L) and its targets (L, -1 = not counted).
struct Row {
  std::vector<int32_t> tokens, targets;
  std::vector<int32_t> doc_starts;  // empty: the row is one document
};

// The ids of `text`, each checked against the model's vocabulary: a tokenizer of a larger
// vocabulary than the model's is the wrong one.
std::vector<int32_t> encode_checked(const TextCodec& codec, const std::string& text, int vocab, const std::string& at) {
  std::vector<int32_t> ids;
  try {
    ids = codec.encode(text);
  } catch (const UserError& e) {
    fail_user(at, "cannot encode the text with", codec.name + ":", e.what());
  }
  for (const int32_t id : ids) {
    if (id >= vocab) {
      fail_user(at, codec.name, "gives token id", id, "but the model has", vocab,
                "tokens: evaluate with the tokenizer the model was trained with");
    }
  }
  return ids;
}

// Scores `rows` (this replica's) in forward passes of at most batch_rows sequences, each padded
// to its longest row (or to the fixed shape): padding comes after a row's tokens, which
// attention never looks ahead to, and counts no target.
std::vector<RowLikelihood> score_rows(const LayoutModel& model, const std::vector<Row>& rows) {
  std::vector<RowLikelihood> scored;
  const size_t batch = static_cast<size_t>(std::max(1, model.batch_rows));
  for (size_t begin = 0; begin < rows.size(); begin += batch) {
    const size_t end = std::min(rows.size(), begin + batch);
    size_t T = 1;
    for (size_t r = begin; r < end; ++r) T = std::max(T, rows[r].tokens.size());
    if (model.fixed_shape) T = static_cast<size_t>(model.chunks[0]->config().max_seq_len);
    const int B = static_cast<int>(model.fixed_shape ? batch : end - begin);
    std::vector<int32_t> tokens(static_cast<size_t>(B) * T, 0), targets(static_cast<size_t>(B) * T, -1);
    bool packed = false;
    for (size_t r = begin; r < end; ++r) {
      std::copy(rows[r].tokens.begin(), rows[r].tokens.end(), tokens.begin() + static_cast<int64_t>((r - begin) * T));
      std::copy(rows[r].targets.begin(), rows[r].targets.end(), targets.begin() + static_cast<int64_t>((r - begin) * T));
      packed = packed || !rows[r].doc_starts.empty();
    }
    // Packed rows keep their documents apart; a row without doc_starts is one document, and
    // each padding position a document of its own.
    std::vector<int32_t> doc_starts;
    if (packed) {
      doc_starts.resize(static_cast<size_t>(B) * T);
      for (size_t r = 0; r < static_cast<size_t>(B); ++r) {
        const Row* row = begin + r < end ? &rows[begin + r] : nullptr;
        const size_t own = row ? row->tokens.size() : 0;
        for (size_t t = 0; t < T; ++t) {
          doc_starts[r * T + t] = t >= own ? static_cast<int32_t>(t) : row->doc_starts.empty() ? 0 : row->doc_starts[t];
        }
      }
    }
    const MicroBatch mb{tokens.data(), targets.data(), B, static_cast<int>(T), packed ? doc_starts.data() : nullptr};
    const std::vector<RowLikelihood> got = row_log_likelihoods(model.chunks, std::span<const MicroBatch>(&mb, 1));
    scored.insert(scored.end(), got.begin(), got.begin() + static_cast<int64_t>(end - begin));
  }
  return scored;
}

// values summed over `group` in place (host buffers).
void sum_over(parallel::Communicator& group, std::vector<double>& values) {
  if (group.size() > 1 && !values.empty()) {
    group.all_reduce(values.data(), values.data(), values.size(), DType::kF64, parallel::ReduceOp::kSum);
  }
}

}  // namespace

TextCodec tokenizer_codec(std::shared_ptr<const Tokenizer> tokenizer, const std::string& path) {
  TextCodec codec;
  codec.encode = [tokenizer](const std::string& text) { return tokenizer->encode(text); };
  codec.decode = [tokenizer](const std::vector<int32_t>& ids) { return tokenizer->decode(ids); };
  codec.eos = tokenizer->eos_id();
  codec.name = "the tokenizer " + path;
  return codec;
}

TextCodec addition_codec(const AdditionTask& task) {
  TextCodec codec;
  codec.encode = [task](const std::string& text) { return task.encode(text); };
  codec.decode = [task](const std::vector<int32_t>& ids) {
    return task.decode(ids.data(), static_cast<int>(ids.size()));
  };
  codec.name = "the addition task's alphabet (0-9, + and =)";
  return codec;
}

namespace {

// The loss of this replica's `rows`, summed over the replicas.
LossResult finish_loss(const LayoutModel& model, const std::vector<Row>& rows, int64_t sequences) {
  parallel::Communicator& dp = *model.dp;
  std::vector<double> sums{0, 0};  // log-likelihood, tokens
  for (const RowLikelihood& r : score_rows(model, rows)) {
    sums[0] += r.log_likelihood;
    sums[1] += r.count;
  }
  sum_over(dp, sums);
  LossResult result;
  result.tokens = static_cast<int64_t>(sums[1]);
  result.sequences = sequences;
  result.loss = -sums[0] / sums[1];
  result.perplexity = std::exp(result.loss);
  return result;
}

}  // namespace

LossResult evaluate_loss_task(const LayoutModel& model, const std::string& dir, const std::string& split, int limit) {
  const GPT& first = *model.chunks[0];
  const int T = first.config().max_seq_len, V = first.config().vocab_size;
  const TokenDataset data = TokenDataset::open_split(dir, split);
  if (static_cast<int64_t>(data.vocab_size()) > V) {
    fail_user("the dataset", data.name(), "has a vocabulary of", data.vocab_size(), "tokens but the model only", V,
              "; evaluate on data tokenized with the model's tokenizer");
  }
  if (data.tokens() < 2) fail_user("the", split, "split of", dir, "has", data.tokens(), "tokens; at least 2 are needed");
  parallel::Communicator& dp = *model.dp;
  std::vector<Row> rows;
  if (data.has_loss_mask()) {
    // Instruction data: the rows training reads, whole examples packed with document masking,
    // and only the tokens of the mask counted, in stream order.
    LoaderOptions options;
    options.layout.seq_len = T;
    options.layout.micro_batch_size = 1;
    options.shuffle = false;
    options.prefetch_steps = 0;
    const TokenLoader loader({BlendSource{&data, 1.0}}, options, LoaderState{});
    int64_t sequences = static_cast<int64_t>(loader.packing_report().rows);
    if (limit > 0) sequences = std::min<int64_t>(sequences, limit);
    for (int64_t s = dp.rank(); s < sequences; s += dp.size()) {
      Row row;
      row.tokens.resize(static_cast<size_t>(T));
      row.targets.resize(static_cast<size_t>(T));
      row.doc_starts.resize(static_cast<size_t>(T));
      loader.read_sample(static_cast<uint64_t>(s), row.tokens.data(), row.targets.data(), row.doc_starts.data());
      rows.push_back(std::move(row));
    }
    return finish_loss(model, rows, sequences);
  }
  int64_t sequences = static_cast<int64_t>((data.tokens() - 2) / static_cast<uint64_t>(T)) + 1;
  if (limit > 0) sequences = std::min<int64_t>(sequences, limit);
  for (int64_t s = dp.rank(); s < sequences; s += dp.size()) {
    const uint64_t begin = static_cast<uint64_t>(s) * static_cast<uint64_t>(T);
    const uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(T) + 1, data.tokens() - begin);
    std::vector<int32_t> window(n);
    data.read(begin, n, window.data());
    Row row;
    row.tokens.assign(window.begin(), window.end() - 1);
    row.targets.assign(window.begin() + 1, window.end());
    rows.push_back(std::move(row));
  }
  return finish_loss(model, rows, sequences);
}

ChoiceResult evaluate_multiple_choice(const LayoutModel& model, const TextCodec& codec,
                                      const std::vector<ChoiceDoc>& docs, const std::string& path,
                                      const std::string& delimiter) {
  const GPTConfig& config = model.chunks[0]->config();
  const int T = config.max_seq_len;
  // Every document's rows, on every rank: a document the model cannot take fails everywhere.
  std::vector<std::vector<Row>> doc_rows(docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    const ChoiceDoc& doc = docs[d];
    const std::string at = path + ":" + std::to_string(doc.line) + ":";
    std::string context = doc.context;
    const size_t kept = context.find_last_not_of(" \t\n\r\f\v");
    const std::string moved = kept == std::string::npos ? context : context.substr(kept + 1);
    context.resize(context.size() - moved.size());
    std::vector<int32_t> context_ids = encode_checked(codec, context, config.vocab_size, at);
    for (size_t c = 0; c < doc.choices.size(); ++c) {
      const std::string continuation = moved + delimiter + doc.choices[c];
      std::vector<int32_t> whole = encode_checked(codec, context + continuation, config.vocab_size, at);
      std::vector<int32_t> prefix = context_ids;
      if (context.empty()) {
        if (codec.eos < 0) {
          fail_user(at, "the context is empty and", codec.name, "has no end-of-sequence token to start from");
        }
        prefix = {codec.eos};
      }
      const size_t own = whole.size() > context_ids.size() ? whole.size() - context_ids.size() : 0;
      if (own == 0) fail_user(at, "choice", c, "adds no token of its own after the context");
      if (own > static_cast<size_t>(T)) {
        fail_user(at, "choice", c, "has", own, "tokens but the model sees at most", T, "positions");
      }
      std::vector<int32_t> sequence = prefix;
      sequence.insert(sequence.end(), whole.end() - static_cast<int64_t>(own), whole.end());
      // The context's oldest tokens go first when the sequence is longer than the model's window.
      if (sequence.size() > static_cast<size_t>(T) + 1) {
        sequence.erase(sequence.begin(), sequence.end() - (T + 1));
      }
      Row row;
      row.tokens.assign(sequence.begin(), sequence.end() - 1);
      row.targets.assign(row.tokens.size(), -1);
      for (size_t t = row.tokens.size() - own; t < row.tokens.size(); ++t) row.targets[t] = sequence[t + 1];
      doc_rows[d].push_back(std::move(row));
    }
  }
  parallel::Communicator& dp = *model.dp;
  std::vector<Row> mine;
  for (size_t d = static_cast<size_t>(dp.rank()); d < docs.size(); d += static_cast<size_t>(dp.size())) {
    mine.insert(mine.end(), doc_rows[d].begin(), doc_rows[d].end());
  }
  const std::vector<RowLikelihood> scored = score_rows(model, mine);
  // Every choice's log-likelihood in one flat list (this replica's documents filled), summed
  // over the replicas.
  std::vector<size_t> offset(docs.size() + 1, 0);
  for (size_t d = 0; d < docs.size(); ++d) offset[d + 1] = offset[d] + docs[d].choices.size();
  std::vector<double> flat(offset.back(), 0.0);
  size_t next = 0;
  for (size_t d = static_cast<size_t>(dp.rank()); d < docs.size(); d += static_cast<size_t>(dp.size())) {
    for (size_t c = 0; c < docs[d].choices.size(); ++c) flat[offset[d] + c] = scored[next++].log_likelihood;
  }
  sum_over(dp, flat);
  ChoiceResult result;
  result.log_likelihoods.resize(docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    result.log_likelihoods[d].assign(flat.begin() + static_cast<int64_t>(offset[d]),
                                     flat.begin() + static_cast<int64_t>(offset[d + 1]));
  }
  score_choices(docs, result);
  return result;
}

void score_choices(const std::vector<ChoiceDoc>& docs, ChoiceResult& result) {
  std::vector<double> acc(docs.size()), acc_norm(docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    const std::vector<double>& ll = result.log_likelihoods[d];
    std::vector<double> per_character(ll.size());
    for (size_t c = 0; c < ll.size(); ++c) {
      per_character[c] = ll[c] / static_cast<double>(utf8_characters(docs[d].choices[c]));
    }
    acc[d] = best_choice(ll) == docs[d].gold;
    acc_norm[d] = best_choice(per_character) == docs[d].gold;
  }
  result.acc = mean_score(acc);
  result.acc_norm = mean_score(acc_norm);
}

MeanScore evaluate_exact_match(const GPT& whole, parallel::Communicator& decoders, const TextCodec& codec,
                               const std::vector<AnswerDoc>& docs, const std::string& path) {
  const int T = whole.config().max_seq_len, V = whole.config().vocab_size;
  std::vector<std::vector<int32_t>> prompts(docs.size());
  std::vector<int> lengths(docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    const std::string at = path + ":" + std::to_string(docs[d].line) + ":";
    prompts[d] = encode_checked(codec, docs[d].prompt, V, at);
    lengths[d] = static_cast<int>(encode_checked(codec, docs[d].answer, V, at).size());
    if (prompts[d].empty()) fail_user(at, "the prompt encodes to no token");
    if (static_cast<int>(prompts[d].size()) + lengths[d] - 1 > T) {
      fail_user(at, "the prompt's", prompts[d].size(), "tokens and up to", lengths[d], "answer tokens exceed the model's",
                T, "positions");
    }
  }
  std::vector<double> right(docs.size(), 0.0);
  for (size_t d = static_cast<size_t>(decoders.rank()); d < docs.size(); d += static_cast<size_t>(decoders.size())) {
    SamplingSettings greedy;
    if (codec.eos >= 0) greedy.stop_tokens = {codec.eos};
    greedy.stop = [&codec](int, const std::vector<int32_t>& ids) {
      return codec.decode(ids).find('\n') != std::string::npos;
    };
    std::vector<int32_t> ids = generate_tokens(whole, prompts[d], lengths[d], 1, greedy)[0];
    if (!ids.empty() && ids.back() == codec.eos) ids.pop_back();
    const std::string text = codec.decode(ids);
    right[d] = trim_whitespace(text.substr(0, text.find('\n'))) == trim_whitespace(docs[d].answer);
  }
  sum_over(decoders, right);
  return mean_score(right);
}

MeanScore evaluate_addition(const GPT& whole, parallel::Communicator& decoders, const AdditionTask& task, int limit) {
  std::vector<AdditionTask::Problem> problems = task.test_problems();
  if (limit > 0 && static_cast<size_t>(limit) < problems.size()) problems.resize(static_cast<size_t>(limit));
  std::vector<AdditionTask::Problem> mine;
  for (size_t i = static_cast<size_t>(decoders.rank()); i < problems.size(); i += static_cast<size_t>(decoders.size())) {
    mine.push_back(problems[i]);
  }
  std::vector<int64_t> answers;
  addition_accuracy(whole, task, mine, &answers);
  std::vector<double> right(problems.size(), 0.0);
  for (size_t j = 0; j < mine.size(); ++j) {
    const size_t i = static_cast<size_t>(decoders.rank()) + j * static_cast<size_t>(decoders.size());
    right[i] = answers[j] == mine[j].a + mine[j].b;
  }
  sum_over(decoders, right);
  return mean_score(right);
}

const char* eval_kind_name(EvalTask::Kind kind) {
  switch (kind) {
    case EvalTask::Kind::kLoss: return "loss";
    case EvalTask::Kind::kMultipleChoice: return "multiple_choice";
    case EvalTask::Kind::kExactMatch: return "exact_match";
    case EvalTask::Kind::kAddition: return "addition";
  }
  return "?";
}

EvalTask load_eval_task(EvalTask::Kind kind, const std::string& source, int limit, const std::string& delimiter,
                        uint64_t addition_seed, int test_problems) {
  if (limit < 0) fail_user("the evaluation limit is", limit, "but must be >= 0 (0: every document)");
  EvalTask task;
  task.kind = kind;
  task.source = source;
  task.limit = limit;
  task.delimiter = delimiter;
  std::string stem = std::filesystem::path(source).stem().string();
  switch (kind) {
    case EvalTask::Kind::kLoss: {
      // DIR[:split], the split "val" by default; a colon inside DIR stays part of it when what
      // follows the last one names a directory.
      task.dir = source;
      task.split = "val";
      const size_t colon = source.rfind(':');
      if (colon != std::string::npos && colon > 0 && source.find('/', colon) == std::string::npos) {
        task.dir = source.substr(0, colon);
        task.split = source.substr(colon + 1);
      }
      if (task.split.empty()) fail_user("the loss task", source, "names an empty split; write DIR or DIR:SPLIT");
      if (!std::filesystem::is_directory(task.dir)) {
        fail_user("the loss task's dataset", task.dir, "is not a directory (give a dataset directory from loom prepare)");
      }
      stem = std::filesystem::path(task.dir).filename().string() + "_" + task.split;
      break;
    }
    case EvalTask::Kind::kMultipleChoice: task.choice_docs = read_choice_docs(source, limit); break;
    case EvalTask::Kind::kExactMatch: task.answer_docs = read_answer_docs(source, limit); break;
    case EvalTask::Kind::kAddition: {
      size_t used = 0;
      int digits = 0;
      try {
        digits = std::stoi(source, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != source.size()) fail_user("--addition expects a number of digits, got '" + source + "'");
      task.addition.emplace(digits, test_problems, addition_seed);
      stem = "addition" + source;
      break;
    }
  }
  task.name = stem.empty() ? eval_kind_name(kind) : stem;
  return task;
}

TaskReport run_eval_task(const EvalTask& task, const EvalModels& models) {
  TaskReport report;
  report.kind = eval_kind_name(task.kind);
  report.source = task.source;
  report.name = task.name;
  auto mean_values = [&report](const char* key, const MeanScore& s) {
    report.values.push_back({key, s.mean});
    report.values.push_back({std::string(key) + "_stderr", s.stderr_of_mean});
    report.size = s.n;
  };
  if (task.generative() && models.whole == nullptr) return report;
  if ((task.kind == EvalTask::Kind::kMultipleChoice || task.kind == EvalTask::Kind::kExactMatch) && !models.codec) {
    fail_user("the task", task.source, "needs the model's tokenizer; pass --tokenizer PATH");
  }
  switch (task.kind) {
    case EvalTask::Kind::kLoss: {
      const LossResult r = evaluate_loss_task(models.layout, task.dir, task.split, task.limit);
      report.source = task.dir + ":" + task.split;
      report.size = r.sequences;
      report.values = {{"loss", r.loss}, {"perplexity", r.perplexity}, {"tokens", static_cast<double>(r.tokens)}};
      break;
    }
    case EvalTask::Kind::kMultipleChoice: {
      const ChoiceResult r =
          evaluate_multiple_choice(models.layout, *models.codec, task.choice_docs, task.source, task.delimiter);
      mean_values("acc", r.acc);
      mean_values("acc_norm", r.acc_norm);
      break;
    }
    case EvalTask::Kind::kExactMatch:
      mean_values("exact_match",
                  evaluate_exact_match(*models.whole, *models.decoders, *models.codec, task.answer_docs, task.source));
      break;
    case EvalTask::Kind::kAddition: {
      const AdditionTask& addition = *task.addition;
      const GPTConfig& c = models.whole->config();
      if (c.vocab_size < AdditionTask::kVocabSize || c.max_seq_len < addition.sequence_length()) {
        fail_user("the addition task of", addition.digits(), "digits needs a model of at least",
                  AdditionTask::kVocabSize, "tokens and", addition.sequence_length(), "positions; this one has",
                  c.vocab_size, "and", c.max_seq_len);
      }
      mean_values("exact_match", evaluate_addition(*models.whole, *models.decoders, addition, task.limit));
      break;
    }
  }
  return report;
}

void copy_shard_from_whole(const GPT& whole, GPT& chunk) {
  LOOM_CHECK(whole.config() == chunk.config(), "copy_shard_from_whole needs models of one config");
  HostCopy host(chunk.backend(), chunk.parameter_arena(), /*download=*/true);
  for (const Parameter& p : chunk.parameters()) {
    const float* from = whole.parameter(p.name).value.f32();
    const int64_t columns = global_columns(p.global_shape);
    float* to = host.host().f32() + chunk.arena_offset(p);
    for (const ShardBlock& b : p.blocks) {
      for (int64_t r = 0; r < b.rows; ++r) {
        std::memcpy(to, from + (b.row0 + r) * columns + b.col0, static_cast<size_t>(b.cols) * sizeof(float));
        to += b.cols;
      }
    }
  }
  host.upload();
}

}  // namespace loom
