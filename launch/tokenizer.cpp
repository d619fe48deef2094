// `loom tokenizer`: train a SentencePiece BPE tokenizer on text files; encode text to ids and
// decode ids to text with any tokenizer Loom reads (tokenizer.json, a .model file, BPE's two files); describe one.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/tokenizer.h"
#include "core/config.h"
#include "launch/cli.h"
#include "launch/commands.h"

namespace loom {

namespace {

constexpr const char* kTokenizerUsage =
    "usage: loom tokenizer <train|encode|decode|info> [options]\n"
    "\n"
    "  train    train a SentencePiece BPE tokenizer (byte fallback, eos </s>) on text files\n"
    "  encode   print the token ids of --text, or of standard input\n"
    "  decode   print the text of the token ids on standard input (or --ids)\n"
    "  info     describe a tokenizer: kind, vocabulary size, eos id (bos and template prefix if any)\n"
    "\n"
    "A tokenizer (--model) is a Hugging Face tokenizer.json, a SentencePiece .model file, or a directory\n"
    "holding one of them, encoder.json + vocab.bpe or vocab.json + merges.txt. `loom tokenizer <subcommand> --help` lists its options. Docs: docs/tokenizers.md.\n";

}  // namespace

const std::vector<FlagSpec>& tokenizer_train_flags() {
  static const std::vector<FlagSpec> flags = {
      {"input", "FILE", "UTF-8 text file to train on, one sentence or paragraph per line", true},
      {"vocab-size", "N", "number of pieces, including 3 special and 256 byte pieces (e.g. 8000)"},
      {"out", "MODEL", "where to write the model (e.g. tokenizer.model); written atomically"},
      {"max-sentences", "N", "train on a random sample of N lines; 0 = all (default 0)"},
      {"seed", "S", "seed of that sample (default 0)"},
      {"threads", "N", "training threads; 0 = every core (default 0)"},
      {"help", "", "show this help"},
  };
  return flags;
}

const std::vector<FlagSpec>& tokenizer_encode_flags() {
  static const std::vector<FlagSpec> flags = {
      {"model", "PATH", "tokenizer: a tokenizer.json, a SentencePiece .model file, or a directory holding one (or BPE's two files)"},
      {"text", "STR", "text to encode (default: all of standard input)"},
      {"help", "", "show this help"},
  };
  return flags;
}

const std::vector<FlagSpec>& tokenizer_decode_flags() {
  static const std::vector<FlagSpec> flags = {
      {"model", "PATH", "tokenizer: a tokenizer.json, a SentencePiece .model file, or a directory holding one (or BPE's two files)"},
      {"ids", "\"I J ...\"", "token ids separated by spaces (default: read from standard input)"},
      {"help", "", "show this help"},
  };
  return flags;
}

const std::vector<FlagSpec>& tokenizer_info_flags() {
  static const std::vector<FlagSpec> flags = {
      {"model", "PATH", "tokenizer: a tokenizer.json, a SentencePiece .model file, or a directory holding one (or BPE's two files)"},
      {"help", "", "show this help"},
  };
  return flags;
}

namespace {

std::string read_standard_input() {
  std::cin >> std::noskipws;
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void reject_positionals(const ParsedArgs& a, const std::string& command) {
  if (!a.positionals.empty()) {
    fail_user("unexpected argument '" + a.positionals[0] + "' (see loom " + command + " --help)");
  }
}

std::unique_ptr<Tokenizer> tokenizer_of(const ParsedArgs& a, const std::string& command) {
  if (!a.has("model")) fail_user("loom " + command + " needs --model PATH (see loom " + command + " --help)");
  return load_tokenizer(a.get("model", ""));
}

// Whitespace-separated integers, each named by its position in `where` when it is not one.
std::vector<int32_t> parse_ids(const std::string& text, const std::string& where) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (true) {
    pos = text.find_first_not_of(" \t\r\n", pos);
    if (pos == std::string::npos) break;
    const size_t end = std::min(text.find_first_of(" \t\r\n", pos), text.size());
    const std::string word = text.substr(pos, end - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < INT32_MIN || v > INT32_MAX) {
      fail_user("expected token ids (integers) in", where + ", found '" + word.substr(0, 40) + "' at byte offset",
                pos);
    }
    ids.push_back(static_cast<int32_t>(v));
    pos = end;
  }
  return ids;
}

int train_command(const std::vector<std::string>& args) {
  ParsedArgs a = parse_args("tokenizer train", args, tokenizer_train_flags());
  if (a.has("help")) {
    std::cout << usage_text("loom tokenizer train --input FILE [--input FILE ...] --vocab-size N --out MODEL",
                            "Trains a SentencePiece BPE tokenizer with byte fallback (any text encodes) and an\n"
                            "end-of-document token </s>. Lines are the training sentences; blank lines are skipped.",
                            tokenizer_train_flags());
    return 0;
  }
  reject_positionals(a, "tokenizer train");
  if (!a.has("input")) fail_user("loom tokenizer train needs --input FILE (see loom tokenizer train --help)");
  if (!a.has("vocab-size")) fail_user("loom tokenizer train needs --vocab-size N (e.g. 8000)");
  if (!a.has("out")) fail_user("loom tokenizer train needs --out MODEL (e.g. tokenizer.model)");
  const std::vector<std::string>& inputs = a.flags.at("input");
  const std::string out = a.get("out", "");
  SentencePieceTrainOptions options;
  options.threads = a.get_int("threads", 0);
  check_thread_count("--threads", options.threads);
  options.max_sentences = a.get_int("max-sentences", 0);
  const int seed = a.get_int("seed", 0);
  if (seed < 0) fail_user("--seed is", seed, "but must be >= 0");
  options.seed = static_cast<uint32_t>(seed);
  const auto start = std::chrono::steady_clock::now();
  const SentencePieceTrainSummary summary =
      train_sentencepiece(inputs, a.get_int("vocab-size", 0), out, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (summary.trained_lines < summary.lines) {
    std::printf("trained on a sample of %lld of %lld lines (%.1f MB read) in %.1f s\n",
                static_cast<long long>(summary.trained_lines), static_cast<long long>(summary.lines),
                static_cast<double>(summary.bytes) / 1e6, seconds);
  } else {
    std::printf("trained on %lld lines (%.1f MB) in %.1f s\n", static_cast<long long>(summary.lines),
                static_cast<double>(summary.bytes) / 1e6, seconds);
  }
  std::printf("wrote %s: %s\n", out.c_str(), load_tokenizer(out)->description().c_str());
  return 0;
}

int encode_command(const std::vector<std::string>& args) {
  ParsedArgs a = parse_args("tokenizer encode", args, tokenizer_encode_flags());
  if (a.has("help")) {
    std::cout << usage_text("loom tokenizer encode --model PATH [--text STR]",
                            "Prints the token ids of the text (of standard input without --text), on one line.",
                            tokenizer_encode_flags());
    return 0;
  }
  reject_positionals(a, "tokenizer encode");
  const auto tok = tokenizer_of(a, "tokenizer encode");
  const std::string text = a.has("text") ? a.get("text", "") : read_standard_input();
  const std::vector<int32_t> ids = tok->encode(text);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  std::printf("%s\n", line.c_str());
  return 0;
}

int decode_command(const std::vector<std::string>& args) {
  ParsedArgs a = parse_args("tokenizer decode", args, tokenizer_decode_flags());
  if (a.has("help")) {
    std::cout << usage_text("loom tokenizer decode --model PATH [--ids \"I J ...\"]",
                            "Prints the text of the token ids (read from standard input without --ids), as the\n"
                            "exact bytes, with no newline added.",
                            tokenizer_decode_flags());
    return 0;
  }
  reject_positionals(a, "tokenizer decode");
  const auto tok = tokenizer_of(a, "tokenizer decode");
  const std::vector<int32_t> ids =
      a.has("ids") ? parse_ids(a.get("ids", ""), "--ids") : parse_ids(read_standard_input(), "standard input");
  const std::string text = tok->decode(ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

int info_command(const std::vector<std::string>& args) {
  ParsedArgs a = parse_args("tokenizer info", args, tokenizer_info_flags());
  if (a.has("help")) {
    std::cout << usage_text("loom tokenizer info --model PATH", "Describes a tokenizer.", tokenizer_info_flags());
    return 0;
  }
  reject_positionals(a, "tokenizer info");
  const auto tok = tokenizer_of(a, "tokenizer info");
  std::printf("%s\nvocab_size: %d\neos_id: %d\n", tok->description().c_str(), tok->vocab_size(), tok->eos_id());
  if (tok->bos_id() >= 0) std::printf("bos_id: %d\n", tok->bos_id());
  std::string prefix;
  for (int32_t id : tok->template_prefix()) prefix += " " + std::to_string(id);
  if (!prefix.empty()) std::printf("template_prefix:%s\n", prefix.c_str());
  return 0;
}

}  // namespace

int run_tokenizer(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fputs(kTokenizerUsage, stderr);
    return 2;
  }
  const std::string& sub = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::fputs(kTokenizerUsage, stdout);
    return 0;
  }
  if (sub == "train") return train_command(rest);
  if (sub == "encode") return encode_command(rest);
  if (sub == "decode") return decode_command(rest);
  if (sub == "info") return info_command(rest);
  fail_user("unknown subcommand '" + sub + "' of loom tokenizer (train, encode, decode or info; see loom tokenizer --help)");
}

}  // namespace loom
