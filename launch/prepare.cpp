// `loom prepare`: text or JSONL files (or Megatron-LM datasets) -> a dataset directory
// (tokenizer and token shards of a train and a val split) that `loom train` reads. The work is
// data/prepare.h's; this file reads the flags, draws a progress bar when stderr is a terminal,
// and prints the summary.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "data/megatron_dataset.h"
#include "data/prepare.h"
#include "core/config.h"
#include "launch/cli.h"
#include "launch/commands.h"

namespace loom {

const std::vector<FlagSpec>& prepare_flags() {
  static const std::vector<FlagSpec> flags = {
      {"input", "PATH", "a text or JSONL file (may be .gz or .zst), a directory of them (read recursively, sorted), "
                        "or a Megatron dataset (PREFIX, PREFIX.bin or PREFIX.idx)", true},
      {"out", "DIR", "the dataset directory to write"},
      {"tokenizer", "PATH", "tokenizer to use: a tokenizer.json, a SentencePiece .model file, or a directory holding one (or BPE's two files)"},
      {"vocab-size", "N", "instead of --tokenizer: train a SentencePiece tokenizer of N pieces on the inputs "
                          "(Megatron input: the ids' vocabulary; neither: the largest id + 1)"},
      {"format", "FORMAT",
       "text or jsonl: format of the files not named *.jsonl (default text; *.jsonl files are JSONL); "
       "chat, prompt-completion or alpaca: every input is instruction data for fine-tuning in that format (docs/data.md)"},
      {"template", "model|plain", "instruction data: render with the tokenizer's chat template (default model), or "
                                  "Loom's plain ### Instruction / ### Response template"},
      {"train-on", "assistant|all", "instruction data: the tokens that count in the loss (default assistant: the "
                                    "answers and the tokens that end them)"},
      {"on-bad-example", "stop|skip", "instruction data: stop at the first bad example (default), or skip and count them"},
      {"jsonl-field", "NAME", "the field of each JSONL object that holds the text (default text)"},
      {"documents", "file|blank-line", "text: one document per file, or per blank-line-separated block (default file)"},
      {"val-fraction", "F", "share of documents in the val split, 0 <= F < 1 (default 0.01)"},
      {"shard-mb", "MB", "maximum shard size in MiB (default 256)"},
      {"threads", "N", "tokenizing threads; 0 = every core (default 0)"},
      {"seed", "S", "seed of the val split and of the tokenizer's training sample (default 0)"},
      {"max-sentences", "N", "train the tokenizer on a random sample of N lines; 0 = all (default 1000000)"},
      {"force", "", "replace a dataset already in DIR"},
      {"help", "", "show this help"},
  };
  return flags;
}

namespace {

bool is_instruction_format(const std::string& format) {
  return format == "chat" || format == "prompt-completion" || format == "alpaca";
}

// A flag's value as a double: "--NAME expects a number, got 'x'" otherwise.
double double_flag(const ParsedArgs& a, const std::string& name, double fallback) {
  if (!a.has(name)) return fallback;
  const std::string v = a.get(name, "");
  size_t used = 0;
  double out = 0;
  try {
    out = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || !std::isfinite(out)) fail_user("--" + name, "expects a number, got '" + v + "'");
  return out;
}

InstructionOptions instruction_options_of(const ParsedArgs& a, const std::string& format) {
  for (const char* text_only : {"documents", "jsonl-field", "vocab-size", "max-sentences"}) {
    if (a.has(text_only)) fail_user("--" + std::string(text_only), "does not apply to --format", format);
  }
  InstructionOptions o;
  o.format = format == "chat" ? InstructionFormat::kChat
             : format == "alpaca" ? InstructionFormat::kAlpaca : InstructionFormat::kPromptCompletion;
  const std::string chat_template = a.get("template", "model");
  if (chat_template != "model" && chat_template != "plain") {
    fail_user("--template is '" + chat_template + "' but must be model or plain");
  }
  o.plain_template = chat_template == "plain";
  const std::string train_on = a.get("train-on", "assistant");
  if (train_on != "assistant" && train_on != "all") {
    fail_user("--train-on is '" + train_on + "' but must be assistant or all");
  }
  o.train_on_all = train_on == "all";
  const std::string on_bad = a.get("on-bad-example", "stop");
  if (on_bad != "stop" && on_bad != "skip") fail_user("--on-bad-example is '" + on_bad + "' but must be stop or skip");
  o.skip_bad_examples = on_bad == "skip";
  return o;
}

PrepareOptions options_of(const ParsedArgs& a) {
  PrepareOptions o;
  if (!a.positionals.empty()) {
    fail_user("unexpected argument '" + a.positionals[0] + "'; inputs are given with --input (see loom prepare --help)");
  }
  if (!a.has("input")) fail_user("loom prepare needs --input PATH (a file or a directory; see loom prepare --help)");
  if (!a.has("out")) fail_user("loom prepare needs --out DIR, the dataset directory to write");
  const std::vector<std::string>& inputs = a.flags.at("input");
  const bool megatron = std::any_of(inputs.begin(), inputs.end(),
                                    [](const std::string& input) { return !MegatronDataset::prefix_of(input).empty(); });
  if (megatron) {
    for (const char* text_only : {"format", "documents", "jsonl-field", "max-sentences"}) {
      if (a.has(text_only)) {
        fail_user("--" + std::string(text_only), "applies to text and JSONL inputs, not to a Megatron dataset");
      }
    }
  } else if (is_instruction_format(a.get("format", "text"))) {
    if (!a.has("tokenizer")) fail_user("--format", a.get("format", ""), "needs the model's tokenizer: --tokenizer PATH");
  } else if (a.has("tokenizer") == a.has("vocab-size")) {
    fail_user("loom prepare needs either --tokenizer PATH or --vocab-size N (to train one),",
              a.has("tokenizer") ? "not both" : "and got neither");
  }
  o.inputs = a.flags.at("input");
  o.out_dir = a.get("out", "");
  o.tokenizer = a.get("tokenizer", "");
  if (a.has("vocab-size")) {
    o.vocab_size = a.get_int("vocab-size", 0);
    if (o.vocab_size <= 0) fail_user("--vocab-size is", o.vocab_size, "but must be positive (e.g. 8000)");
  }
  if (megatron && a.has("tokenizer") && a.has("vocab-size")) {
    fail_user("--tokenizer and --vocab-size both give a Megatron dataset's vocabulary; give one, or neither");
  }
  const std::string format = a.get("format", "text");
  if (format == "jsonl") {
    o.corpus.format = CorpusFormat::kJsonl;
    if (a.has("documents")) fail_user("--documents applies to --format text; a JSONL line is one document");
  } else if (is_instruction_format(format)) {
    o.instructions = instruction_options_of(a, format);
  } else if (format != "text") {
    fail_user("--format is '" + format + "' but must be text, jsonl, chat, prompt-completion or alpaca");
  }
  if (!o.instructions) {
    for (const char* instruction_only : {"template", "train-on", "on-bad-example"}) {
      if (a.has(instruction_only)) {
        fail_user("--" + std::string(instruction_only), "applies to instruction data (--format chat,",
                  "prompt-completion or alpaca)");
      }
    }
  }
  o.corpus.jsonl_field = a.get("jsonl-field", "text");
  const std::string documents = a.get("documents", "file");
  if (documents == "blank-line") {
    o.corpus.documents = DocumentBoundary::kBlankLine;
  } else if (documents != "file") {
    fail_user("--documents is '" + documents + "' but must be file or blank-line");
  }
  o.val_fraction = double_flag(a, "val-fraction", 0.01);
  if (!(o.val_fraction >= 0 && o.val_fraction < 1)) {
    fail_user("--val-fraction is", o.val_fraction, "but must be at least 0 and below 1 (e.g. 0.01)");
  }
  const double shard_mb = double_flag(a, "shard-mb", 256);
  if (!(shard_mb > 0 && shard_mb <= 1 << 20)) fail_user("--shard-mb is", shard_mb, "but must be in (0, 1048576]");
  o.max_shard_bytes = static_cast<uint64_t>(std::llround(shard_mb * (1 << 20)));
  o.threads = a.get_int("threads", 0);
  check_thread_count("--threads", o.threads);
  const int seed = a.get_int("seed", 0);
  if (seed < 0) fail_user("--seed is", seed, "but must be >= 0");
  o.seed = static_cast<uint64_t>(seed);
  o.max_sentences = a.get_int("max-sentences", 1000000);
  if (o.max_sentences < 0) fail_user("--max-sentences is", o.max_sentences, "but must be >= 0 (0: all)");
  o.force = a.has("force");
  return o;
}

// One line, redrawn in place at most ten times a second.
class ProgressBar {
 public:
  void draw(const PrepareProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ && now - last_ < std::chrono::milliseconds(100) && p.bytes_read < p.total_bytes) return;
    last_ = now;
    drawn_ = true;
    const double fraction = p.total_bytes > 0 ? static_cast<double>(p.bytes_read) / static_cast<double>(p.total_bytes) : 1;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(std::min(1.0, fraction) * kWidth);
    const std::string bar = std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kWidth - filled), '.');
    std::fprintf(stderr, "\r[%s] %3.0f%%  %.1f / %.1f MB  %.1f MB/s  %llu documents  %llu tokens ", bar.c_str(),
                 100 * fraction, static_cast<double>(p.bytes_read) / 1e6, static_cast<double>(p.total_bytes) / 1e6,
                 p.seconds > 0 ? static_cast<double>(p.bytes_read) / 1e6 / p.seconds : 0.0,
                 static_cast<unsigned long long>(p.documents), static_cast<unsigned long long>(p.tokens));
    std::fflush(stderr);
  }
  // Ends the line, if one was drawn.
  ~ProgressBar() {
    if (drawn_) std::fputc('\n', stderr);
  }

 private:
  std::chrono::steady_clock::time_point last_;
  bool drawn_ = false;
};

}  // namespace

int run_prepare(const std::vector<std::string>& args) {
  const ParsedArgs a = parse_args("prepare", args, prepare_flags());
  if (a.has("help")) {
    std::cout << usage_text(
        "loom prepare --input PATH [--input PATH ...] --out DIR (--tokenizer PATH | --vocab-size N) [options]",
        "Tokenizes text or JSONL documents into a dataset directory for `loom train`: the tokenizer, and\n"
        "token shards of a train and a val split, each document followed by the end-of-document token.\n"
        "Files may be gzip'd or zstd'd; *.jsonl files are always JSONL. A Megatron-LM dataset (PREFIX.bin\n"
        "and PREFIX.idx) is converted as it is, its ids kept: no tokenizer needed.\n"
        "Instruction data (--format chat|prompt-completion|alpaca) is rendered with the tokenizer's chat\n"
        "template and stored with a loss mask: by default only the assistant's answers are trained on.\n"
        "The output is the same for any --threads. Docs: docs/data.md.",
        prepare_flags());
    return 0;
  }
  const PrepareOptions options = options_of(a);
  PrepareSummary s;
  {
    ProgressBar bar;
    const bool terminal = ::isatty(STDERR_FILENO) == 1;
    s = prepare_dataset(options, [&](const PrepareProgress& p) {
      if (terminal) bar.draw(p);
    });
  }
  if (s.trained_tokenizer) {
    std::printf("trained the tokenizer on %lld lines (%.1f MB) in %.1f s\n", static_cast<long long>(s.training.trained_lines),
                static_cast<double>(s.training.bytes) / 1e6, s.training_seconds);
  }
  std::printf("tokenizer: %s\n", s.tokenizer.c_str());
  if (s.instructions) {
    std::printf("chat template: %s; %llu of %llu tokens count in the loss\n", s.chat_template.c_str(),
                static_cast<unsigned long long>(s.counted_tokens), static_cast<unsigned long long>(s.tokens));
    if (s.bad_examples > 0) {
      std::printf("skipped %llu bad example%s; the first: %s\n", static_cast<unsigned long long>(s.bad_examples),
                  s.bad_examples == 1 ? "" : "s", s.first_bad_example.c_str());
    }
  }
  const double mb = static_cast<double>(s.text_bytes) / 1e6;
  std::string skipped;
  if (s.skipped_documents > 0) {
    skipped = ", " + std::to_string(s.skipped_documents) + (s.megatron ? " empty" : " blank") + " ones skipped";
  }
  std::printf("%s %llu %s (%.1f MB in %zu %s%s) into %llu tokens in %.1f s, %.2f MB/s: "
              "train %llu documents %llu tokens, val %llu documents %llu tokens -> %s\n",
              s.megatron ? "converted" : "prepared",
              static_cast<unsigned long long>(s.documents), s.instructions ? "examples" : "documents", mb, s.files,
              s.megatron ? "Megatron datasets" : "files",
              skipped.c_str(),
              static_cast<unsigned long long>(s.tokens), s.seconds, s.seconds > 0 ? mb / s.seconds : 0.0,
              static_cast<unsigned long long>(s.train.documents), static_cast<unsigned long long>(s.train.tokens),
              static_cast<unsigned long long>(s.val.documents), static_cast<unsigned long long>(s.val.tokens),
              options.out_dir.c_str());
  return 0;
}

}  // namespace loom
