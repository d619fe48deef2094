#include "data/tokenizer.h"

#include <filesystem>

#include "core/base/check.h"
#include "data/gpt2_bpe.h"
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

TokenizerFiles tokenizer_files(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) {
    fail_user("tokenizer", path, "does not exist (expected a SentencePiece .model file or a directory with",
              "GPT-2's encoder.json and vocab.bpe)");
  }
  using Kind = TokenizerFiles::Kind;
  if (fs::is_directory(p, ec)) {
    const fs::path encoder = p / "encoder.json", merges = p / "vocab.bpe";
    if (!fs::exists(encoder, ec) || !fs::exists(merges, ec)) {
      fail_user("tokenizer directory", path, "lacks", fs::exists(encoder, ec) ? "vocab.bpe" : "encoder.json",
                "(a GPT-2 tokenizer directory holds encoder.json and vocab.bpe)");
    }
    return {Kind::kGpt2Bpe, {encoder.string(), merges.string()}};
  }
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  if (p.extension() == ".json") return {Kind::kGpt2Bpe, {path, (dir / "vocab.bpe").string()}};
  if (p.extension() == ".bpe") return {Kind::kGpt2Bpe, {(dir / "encoder.json").string(), path}};
  return {Kind::kSentencePiece, {path}};
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  const TokenizerFiles files = tokenizer_files(path);
  if (files.kind == TokenizerFiles::Kind::kGpt2Bpe) return load_gpt2_bpe(files.paths[0], files.paths[1]);
  return load_sentencepiece(path);
}

}  // namespace loom
