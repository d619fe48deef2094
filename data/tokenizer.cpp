#include "data/tokenizer.h"

#include <filesystem>

#include "core/base/check.h"
#include "data/gpt2_bpe.h"
#include "data/hf_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/utf8.h"

namespace loom {

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  encode_into(text, ids);
  return ids;
}

namespace {

constexpr size_t kEncodePieceBytes = size_t{64} << 10;

bool is_visible_ascii(char c) { return c > ' ' && c < 0x7F; }

}  // namespace

size_t Tokenizer::next_cut(std::string_view text, size_t from) const {
  LOOM_CHECK(from >= 1, "a cut needs a character before it; from is", from);
  if (!cuts_after_newlines()) return text.size();
  for (size_t at = from - 1; at + 1 < text.size(); ++at) {
    at = text.find('\n', at);
    if (at == std::string_view::npos || at + 1 >= text.size()) break;
    if (at > 0 && is_visible_ascii(text[at - 1]) && is_visible_ascii(text[at + 1])) return at + 1;
  }
  return text.size();
}

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out) const {
  utf8_check(text, "the text to encode");
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = text.size() - begin <= kEncodePieceBytes ? text.size() : next_cut(text, begin + kEncodePieceBytes);
    encode_valid(text.substr(begin, end - begin), out);
    begin = end;
  }
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const int V = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= V) {
      fail_user("token id", ids[i], "at position", i, "is outside the vocabulary (ids 0 ..", std::to_string(V - 1) + ")");
    }
  }
  return decode_valid(ids);
}

std::vector<int32_t> Tokenizer::encode_with_template(std::string_view text) const {
  std::vector<int32_t> ids = template_prefix();
  encode_into(text, ids);
  const std::vector<int32_t> suffix = template_suffix();
  ids.insert(ids.end(), suffix.begin(), suffix.end());
  return ids;
}

namespace {

namespace fs = std::filesystem;

constexpr const char* kHfConfig = "tokenizer_config.json";

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// The two files of a BPE split in two: the vocabulary and its merges, by their two spellings.
struct BpePair {
  const char* vocab;
  const char* merges;
};
constexpr BpePair kBpePairs[] = {{"encoder.json", "vocab.bpe"}, {"vocab.json", "merges.txt"}};

TokenizerFiles hf_files(const fs::path& json) {
  TokenizerFiles files{TokenizerFiles::Kind::kHuggingFace, {json.string()}, {"tokenizer.json"}};
  const fs::path config = json.parent_path() / kHfConfig;
  if (is_file(config)) {
    files.paths.push_back(config.string());
    files.names.push_back(kHfConfig);
  }
  return files;
}

TokenizerFiles pair_files(const fs::path& dir, const BpePair& pair, const std::string& given) {
  const fs::path vocab = dir / pair.vocab, merges = dir / pair.merges;
  if (!is_file(vocab) || !is_file(merges)) {
    fail_user("tokenizer", given, "lacks", is_file(vocab) ? pair.merges : pair.vocab, "(a BPE tokenizer in two",
              "files needs", std::string(pair.vocab), "and", std::string(pair.merges), "side by side, in",
              dir.string() + ")");
  }
  // In a dataset directory both spellings become GPT-2's.
  return {TokenizerFiles::Kind::kGpt2Bpe, {vocab.string(), merges.string()}, {"encoder.json", "vocab.bpe"}};
}

}  // namespace

std::string tokenizer_in_directory(const std::string& dir) {
  const fs::path d(dir);
  for (const char* single : {"tokenizer.json", "tokenizer.model"}) {
    if (is_file(d / single)) return (d / single).string();
  }
  for (const BpePair& pair : kBpePairs) {
    if (is_file(d / pair.vocab) && is_file(d / pair.merges)) return dir;
  }
  return "";
}

TokenizerFiles tokenizer_files(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  const char* expected = "a tokenizer.json, a SentencePiece .model file, or a directory holding one of them, GPT-2's "
                         "encoder.json and vocab.bpe, or vocab.json and merges.txt";
  if (!fs::exists(p, ec)) fail_user("tokenizer", path, "does not exist (expected", std::string(expected) + ")");
  if (fs::is_directory(p, ec)) {
    for (const char* single : {"tokenizer.json", "tokenizer.model"}) {
      if (is_file(p / single)) return tokenizer_files((p / single).string());
    }
    for (const BpePair& pair : kBpePairs) {
      if (is_file(p / pair.vocab) || is_file(p / pair.merges)) return pair_files(p, pair, path);
    }
    fail_user("tokenizer directory", path, "holds no tokenizer (expected", std::string(expected) + ")");
  }
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const std::string name = p.filename().string();
  for (const BpePair& pair : kBpePairs) {
    if (name == pair.vocab || name == pair.merges) return pair_files(dir, pair, path);
  }
  if (p.extension() == ".bpe") return pair_files(dir, kBpePairs[0], path);
  if (p.extension() == ".json") return hf_files(p);
  return {TokenizerFiles::Kind::kSentencePiece, {path}, {"tokenizer.model"}};
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  const TokenizerFiles files = tokenizer_files(path);
  switch (files.kind) {
    case TokenizerFiles::Kind::kGpt2Bpe:
      return load_gpt2_bpe(files.paths[0], files.paths[1]);
    case TokenizerFiles::Kind::kHuggingFace:
      return load_hf_tokenizer(files.paths[0], files.paths.size() > 1 ? files.paths[1] : "");
    case TokenizerFiles::Kind::kSentencePiece:
      break;
  }
  return load_sentencepiece(files.paths[0]);
}

}  // namespace loom
