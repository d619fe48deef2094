#include "data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <fstream>
#include <optional>
#include <thread>
#include <unordered_map>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "core/rng.h"
#include "data/sentencepiece_bpe.h"
#include "data/sentencepiece_model.h"
#include "data/utf8.h"

namespace loom {

namespace {

namespace fs = std::filesystem;

// ids below this are <unk>, <s>, </s>; then come the 256 byte pieces.
constexpr int kSpecialPieces = 3;
constexpr int kBytePieces = 256;

// The message of a failed SentencePiece status in Loom's words: without the library's own source
// locations ("./src/trainer_interface.cc(232)"), its failed checks ("[!sentences_.empty()]") and
// its status code word ("Internal:"), which say nothing to a user.
std::string reason_of(const sentencepiece::util::Status& status) {
  static const std::regex library_detail(R"((\S*\.(cc|cpp|h)\(\d+\)\s*)|(\[[^\]]*\]\s*)|(LOG\(\w+\)\s*))");
  std::string message = std::regex_replace(status.error_message(), library_detail, "");
  while (!message.empty() && (message.front() == ' ' || message.front() == ':')) message.erase(message.begin());
  while (!message.empty() && (message.back() == ' ' || message.back() == '\n')) message.pop_back();
  return message.empty() ? "the library gave no reason" : message;
}

// The non-empty lines of the input files in order, each checked to be UTF-8; or, when
// `max_lines` > 0 and the inputs have more, a uniform random sample of that many: reservoir
// sampling with a counter-based generator, so that the sample is a function of (inputs, seed).
// (The library's own sampling refuses samples of 100 lines or fewer and gave the same sample
// whatever SetRandomGeneratorSeed was given: no choice of sample.) A problem stops the
// iteration and is kept for the caller: throwing through the library is not safe.
class InputLines : public sentencepiece::SentenceIterator {
 public:
  InputLines(const std::vector<std::string>& paths, int64_t max_lines, uint32_t seed) : paths_(paths) {
    if (max_lines > 0) {
      const CounterRng rng(seed, stream_id_of("tokenizer.train.sample"));
      for (std::string line; read_line(line);) {
        // Line i (from 0) replaces a random slot with probability max_lines / (i + 1).
        const auto i = static_cast<uint64_t>(lines_ - 1);
        if (i < static_cast<uint64_t>(max_lines)) {
          sample_.push_back(std::move(line));
          continue;
        }
        const std::array<uint32_t, 4> bits = rng.bits(i);
        const uint64_t k = (uint64_t{bits[0]} << 32 | bits[1]) % (i + 1);
        if (k < static_cast<uint64_t>(max_lines)) sample_[k] = std::move(line);
      }
      sampled_ = true;
    }
    Next();
  }

  bool done() const override { return finished_; }
  void Next() override {
    if (!sampled_) {
      finished_ = !read_line(line_);
    } else if (next_sample_ < sample_.size() && !error_) {
      line_ = std::move(sample_[next_sample_++]);
    } else {
      finished_ = true;
    }
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override {
    if (!error_) return {};
    return sentencepiece::util::Status(sentencepiece::util::StatusCode::kInvalidArgument, *error_);
  }

  const std::optional<std::string>& error() const { return error_; }
  int64_t lines() const { return lines_; }
  int64_t bytes() const { return bytes_; }

 private:
  // The next non-empty line of the inputs; false at the end or on an error.
  bool read_line(std::string& line) {
    while (!error_) {
      if (!in_.is_open()) {
        if (next_path_ == paths_.size()) return false;
        in_.open(paths_[next_path_], std::ios::binary);
        line_no_ = 0;
        if (!in_) {
          error_ = "cannot read training input " + paths_[next_path_];
          return false;
        }
        ++next_path_;
      }
      if (!std::getline(in_, line)) {
        if (in_.bad()) {
          error_ = "error while reading training input " + paths_[next_path_ - 1];
          return false;
        }
        in_.close();
        continue;
      }
      ++line_no_;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      if (const size_t bad = utf8_find_invalid(line); bad != std::string::npos) {
        error_ = str_cat(paths_[next_path_ - 1] + ":" + std::to_string(line_no_) + ":",
                         "not valid UTF-8 at byte offset", bad, "of the line");
        return false;
      }
      ++lines_;
      bytes_ += static_cast<int64_t>(line.size());
      return true;
    }
    return false;
  }

  const std::vector<std::string>& paths_;
  size_t next_path_ = 0;
  std::ifstream in_;
  int64_t line_no_ = 0;
  int64_t lines_ = 0, bytes_ = 0;
  std::optional<std::string> error_;
  bool sampled_ = false;
  std::vector<std::string> sample_;
  size_t next_sample_ = 0;
  std::string line_;
  bool finished_ = false;
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // `spec`: the model as data/sentencepiece_model.h reads it, if it could.
  SentencePieceTokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> processor, std::string path,
                         const std::optional<SentencePieceModelSpec>& spec)
      : sp_(std::move(processor)), path_(std::move(path)) {
    if (!spec) return;
    bpe_ = SentencePieceBpe::create(*spec);
    // A newline that no piece contains and no normaliser touches is a wall the encoder never
    // merges across (BPE pairs and unigram lattice paths alike), so text splits there exactly.
    cuts_after_newlines_ = spec->identity_normalizer();
    for (const SentencePieceModelSpec::Piece& piece : spec->pieces) {
      if (piece.text.find('\n') != std::string::npos) cuts_after_newlines_ = false;
    }
  }

  int vocab_size() const override { return sp_->GetPieceSize(); }
  int eos_id() const override { return sp_->eos_id(); }
  int bos_id() const override { return sp_->bos_id(); }
  // Llama 2's tokenizer (transformers' LlamaTokenizer, add_bos_token) puts <s> before a text.
  std::vector<int32_t> template_prefix() const override {
    return sp_->bos_id() >= 0 ? std::vector<int32_t>{sp_->bos_id()} : std::vector<int32_t>{};
  }
  std::string description() const override {
    const bool byte_fallback = sp_->IsByte(sp_->PieceToId("<0x00>"));
    return str_cat("SentencePiece,", vocab_size(), "pieces,", byte_fallback ? "byte fallback," : "no byte fallback,",
                   "eos", sp_->IdToPiece(eos_id()), "=", eos_id(), "from", path_);
  }

 protected:
  void encode_valid(std::string_view text, std::vector<int32_t>& out) const override {
    if (bpe_) {
      bpe_->encode(text, out);
      return;
    }
    std::vector<int> ids;
    const sentencepiece::util::Status status = sp_->Encode(text, &ids);
    if (!status.ok()) fail_user("the tokenizer could not encode", text.size(), "bytes of text:", reason_of(status));
    out.insert(out.end(), ids.begin(), ids.end());
  }

  std::string decode_valid(std::span<const int32_t> ids) const override {
    std::string text;
    const sentencepiece::util::Status status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    if (!status.ok()) fail_user("the tokenizer could not decode", ids.size(), "token ids:", reason_of(status));
    return text;
  }

  bool cuts_after_newlines() const override { return cuts_after_newlines_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
  std::unique_ptr<SentencePieceBpe> bpe_;  // the library's BPE encoding, faster; null: the library
  bool cuts_after_newlines_ = false;
};

std::string joined(const std::vector<std::string>& paths) {
  std::string out;
  for (const std::string& p : paths) out += (out.empty() ? "" : ", ") + p;
  return out;
}

}  // namespace

SentencePieceTrainSummary train_sentencepiece(const std::vector<std::string>& inputs, int vocab_size,
                                              const std::string& out_model,
                                              const SentencePieceTrainOptions& options) {
  if (inputs.empty()) fail_user("no training input given");
  for (const std::string& path : inputs) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      fail_user("cannot read training input", path, fs::exists(path, ec) ? "(not a regular file)" : "(does it exist?)");
    }
  }
  static_assert(kMinSentencePieceVocab == kSpecialPieces + kBytePieces + 1);
  if (vocab_size < kMinSentencePieceVocab) {
    fail_user("vocab size", vocab_size, "is too small: <unk>, <s>, </s> and the 256 byte pieces take",
              kMinSentencePieceVocab - 1, "ids; use at least", kMinSentencePieceVocab, "(thousands, in practice)");
  }
  if (options.threads < 0) fail_user("threads is", options.threads, "but must be >= 0");
  if (options.max_sentences < 0) fail_user("max sentences is", options.max_sentences, "but must be >= 0");
  const unsigned threads =
      options.threads > 0 ? static_cast<unsigned>(options.threads) : std::max(1u, std::thread::hardware_concurrency());

  const std::unordered_map<std::string, std::string> spec = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"max_sentence_length", std::to_string(1 << 20)},
      {"input_sentence_size", "0"},  // InputLines samples
      {"num_threads", std::to_string(threads)},
      {"minloglevel", "2"},  // errors only; they come back in the status
      {"model_prefix", ""},  // the model comes back serialised; we write it
  };
  InputLines lines(inputs, options.max_sentences, options.seed);
  std::string model;
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(spec, &lines, &model);
  if (lines.error()) fail_user(*lines.error());
  if (lines.lines() == 0) fail_user("the training inputs hold no text:", joined(inputs));
  if (!status.ok()) {
    const std::string reason = reason_of(status);
    int asked = 0, limit = 0;
    if (std::sscanf(reason.c_str(), "Vocabulary size too high (%d). Please set it to a value <= %d", &asked,
                    &limit) == 2) {
      fail_user("vocab size", vocab_size, "is more than these inputs can fill: at most", limit,
                "pieces can be learned from them; lower it or train on more text");
    }
    if (std::sscanf(reason.c_str(), "Vocabulary size is smaller than required_chars. %d vs %d", &asked,
                    &limit) == 2) {
      fail_user("vocab size", vocab_size, "is too small for these inputs: their characters, the byte pieces and",
                "the special pieces need", limit, "ids; raise it");
    }
    fail_user("training a SentencePiece model on", joined(inputs), "failed:", reason);
  }
  write_file_durably(out_model, model);
  const int64_t trained =
      options.max_sentences > 0 ? std::min(options.max_sentences, lines.lines()) : lines.lines();
  return {lines.lines(), lines.bytes(), trained, vocab_size};
}

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  // Read here so that a missing file gets our message, not the library's.
  const std::string bytes = read_file(path, "SentencePiece model");
  const sentencepiece::util::Status status = sp->LoadFromSerializedProto(bytes);
  if (!status.ok()) {
    fail_user(path, "is not a SentencePiece model (" + reason_of(status) + ");",
              "expected a .model file from `loom tokenizer train` or a directory with GPT-2's encoder.json and vocab.bpe");
  }
  if (sp->eos_id() < 0) {
    fail_user("SentencePiece model", path, "has no end-of-sentence piece (eos_id is -1); Loom needs one to separate",
              "documents: train with eos_id >= 0, as `loom tokenizer train` does");
  }
  return std::make_unique<SentencePieceTokenizer>(std::move(sp), path, parse_sentencepiece_model(bytes));
}

}  // namespace loom
