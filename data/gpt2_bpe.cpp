#include "data/gpt2_bpe.h"

#include <array>
#include <cstdio>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "data/bpe_merges.h"
#include "data/gpt2_pretokenizer.h"
#include "data/json.h"
#include "data/utf8.h"

namespace loom {

namespace {

constexpr std::string_view kEndOfText = "<|endoftext|>";

bool stands_for_itself(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
}

constexpr int kRemappedBase = 256;

struct ByteCharTables {
  std::array<char32_t, 256> to_char{};
  std::array<int, 68> remapped_to_byte{};  // U+0100 + k -> byte
};

const ByteCharTables& byte_char_tables() {
  static const ByteCharTables tables = [] {
    ByteCharTables t;
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      if (stands_for_itself(b)) {
        t.to_char[static_cast<size_t>(b)] = static_cast<char32_t>(b);
      } else {
        t.remapped_to_byte[static_cast<size_t>(next)] = b;
        t.to_char[static_cast<size_t>(b)] = static_cast<char32_t>(kRemappedBase + next++);
      }
    }
    return t;
  }();
  return tables;
}

// The bytes a token spelled in GPT-2's characters stands for, or the first character that
// stands for no byte.
struct TokenBytes {
  std::string bytes;
  std::optional<char32_t> bad_char;
};

TokenBytes token_bytes(std::string_view spelled) {
  TokenBytes out;
  for (size_t pos = 0; pos < spelled.size();) {
    const char32_t c = utf8_decode_valid(spelled, pos);
    const int byte = gpt2_char_to_byte(c);
    if (byte < 0) {
      out.bad_char = c;
      return out;
    }
    out.bytes.push_back(static_cast<char>(byte));
  }
  return out;
}

std::string code_point_name(char32_t c) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(c));
  return buf;
}

// For messages: a token or line as written, cut short when long.
std::string shown(std::string_view s) {
  constexpr size_t kMax = 60;
  if (s.size() <= kMax) return "'" + std::string(s) + "'";
  size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return "'" + std::string(s.substr(0, cut)) + "...'";
}

class Gpt2Bpe final : public Tokenizer {
 public:
  Gpt2Bpe(std::vector<std::string> token_bytes, const std::array<int32_t, 256>& byte_ids, BpeMerges merges,
          int eos, std::string source)
      : token_bytes_(std::move(token_bytes)),
        byte_ids_(byte_ids),
        merges_(std::move(merges)),
        eos_(eos),
        source_(std::move(source)) {}

  int vocab_size() const override { return static_cast<int>(token_bytes_.size()); }
  int eos_id() const override { return eos_; }
  std::string description() const override {
    return str_cat("GPT-2 byte-level BPE,", vocab_size(), "tokens (" + std::to_string(merges_.size()),
                   "merges), eos", kEndOfText, "=", eos_, "from", source_);
  }

 protected:
  void encode_valid(std::string_view text, std::vector<int32_t>& out) const override {
    std::vector<int32_t> symbols;
    Gpt2Pretokenizer pieces(text);
    for (std::string_view piece; pieces.next(piece);) {
      symbols.clear();
      for (char byte : piece) symbols.push_back(byte_ids_[static_cast<unsigned char>(byte)]);
      merges_.apply(symbols);
      out.insert(out.end(), symbols.begin(), symbols.end());
    }
  }

  std::string decode_valid(std::span<const int32_t> ids) const override {
    std::string text;
    for (int32_t id : ids) text += token_bytes_[static_cast<size_t>(id)];
    return text;
  }

  // Merges happen inside pre-tokens, and a '\n' between two printable characters other than
  // space is a pre-token of its own in the text and at the end of the part before it alike
  // (`\s+(?!\S)` fails on it there, `\s+` takes it), while the pre-tokens after it start afresh.
  bool cuts_after_newlines() const override { return true; }

 private:
  std::vector<std::string> token_bytes_;  // (V) id -> the bytes it stands for
  std::array<int32_t, 256> byte_ids_;     // byte -> the id of the one-byte token
  BpeMerges merges_;
  int eos_;
  std::string source_;
};

}  // namespace

char32_t gpt2_byte_to_char(uint8_t byte) { return byte_char_tables().to_char[byte]; }

int gpt2_char_to_byte(char32_t c) {
  if (c < 256) return stands_for_itself(static_cast<int>(c)) ? static_cast<int>(c) : -1;
  const auto k = static_cast<size_t>(c - kRemappedBase);
  return k < byte_char_tables().remapped_to_byte.size() ? byte_char_tables().remapped_to_byte[k] : -1;
}

namespace {

// encoder.json: the bytes of each id, and the id of each token's bytes.
struct Vocabulary {
  std::vector<std::string> bytes_of;
  std::unordered_map<std::string, int32_t> id_of;
};

Vocabulary read_encoder(const std::string& enc) {
  JsonValue root;
  try {
    root = json_parse(read_file(enc, "GPT-2 encoder"));
  } catch (const JsonError& e) {
    fail_user(enc + ":", e.what());
  }
  if (root.kind != JsonValue::Kind::kObject) {
    fail_user(enc + ": expected a JSON object mapping tokens to ids, found", json_kind_name(root.kind));
  }
  const size_t V = root.members.size();
  Vocabulary vocabulary;
  vocabulary.bytes_of.resize(V);
  vocabulary.id_of.reserve(V);
  std::vector<size_t> offset_of(V, std::string_view::npos);
  for (const auto& [spelled, value] : root.members) {
    const std::optional<int64_t> id = value.as_int64();
    if (!id || *id < 0 || *id >= static_cast<int64_t>(V)) {
      fail_user(enc + ": token", shown(spelled), "at byte offset", value.offset, "has id",
                value.kind == JsonValue::Kind::kNumber ? value.text : json_kind_name(value.kind),
                "but ids must be integers 0 ..", V - 1, "(one per token)");
    }
    const auto i = static_cast<size_t>(*id);
    if (offset_of[i] != std::string_view::npos) {
      fail_user(enc + ": id", i, "is given to two tokens (at byte offsets", offset_of[i], "and",
                std::to_string(value.offset) + "); each token needs its own id");
    }
    offset_of[i] = value.offset;
    TokenBytes tb = token_bytes(spelled);
    if (tb.bad_char) {
      fail_user(enc + ": token", shown(spelled), "at byte offset", value.offset, "holds",
                code_point_name(*tb.bad_char), "which stands for no byte in GPT-2's byte-level encoding;",
                "is this a GPT-2 encoder.json?");
    }
    if (!vocabulary.id_of.emplace(tb.bytes, static_cast<int32_t>(i)).second) {
      fail_user(enc + ": token", shown(spelled), "appears twice (again at byte offset",
                std::to_string(value.offset) + ")");
    }
    vocabulary.bytes_of[i] = std::move(tb.bytes);
  }
  return vocabulary;
}

// vocab.bpe: the merges, best first, each of two tokens of `vocabulary` into a third.
BpeMerges read_merges(const std::string& bpe, const Vocabulary& vocabulary, const std::string& enc) {
  const std::string text = read_file(bpe, "GPT-2 merges file");
  BpeMerges merges;
  std::unordered_map<uint64_t, size_t> line_of_pair;
  size_t blank_line = 0;  // the first blank line seen, 0 if none
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::string where = bpe + ":" + std::to_string(line_no) + ":";
    if (const size_t bad = utf8_find_invalid(line); bad != std::string_view::npos) {
      fail_user(where, "not valid UTF-8 at byte offset", bad, "of the line");
    }
    if (line_no == 1 && line.substr(0, 8) == "#version") continue;
    if (line.empty()) {
      if (blank_line == 0) blank_line = line_no;
      continue;
    }
    if (blank_line != 0) fail_user(bpe + ":" + std::to_string(blank_line) + ": blank line among the merges");
    const size_t space = line.find(' ');
    if (space == 0 || space == std::string_view::npos || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos) {
      fail_user(where, "expected two tokens separated by one space, found", shown(line));
    }
    const std::string_view parts[2] = {line.substr(0, space), line.substr(space + 1)};
    int32_t ids[2];
    std::string joined;
    for (int k = 0; k < 2; ++k) {
      TokenBytes tb = token_bytes(parts[k]);
      if (tb.bad_char) {
        fail_user(where, "token", shown(parts[k]), "holds", code_point_name(*tb.bad_char),
                  "which stands for no byte in GPT-2's byte-level encoding");
      }
      auto it = vocabulary.id_of.find(tb.bytes);
      if (it == vocabulary.id_of.end()) {
        fail_user(where, "merge", shown(line), "names", shown(parts[k]) + ", which is not a token of", enc);
      }
      ids[k] = it->second;
      joined += tb.bytes;
    }
    auto merged = vocabulary.id_of.find(joined);
    if (merged == vocabulary.id_of.end()) {
      fail_user(where, "merge", shown(line), "makes", shown(std::string(parts[0]) + std::string(parts[1])) + ",",
                "which is not a token of", enc);
    }
    const uint64_t pair = static_cast<uint64_t>(static_cast<uint32_t>(ids[0])) << 32 | static_cast<uint32_t>(ids[1]);
    if (!merges.add(ids[0], ids[1], merged->second)) {
      fail_user(where, "merge", shown(line), "repeats line", line_of_pair[pair]);
    }
    line_of_pair[pair] = line_no;
  }
  return merges;
}

}  // namespace

std::unique_ptr<Tokenizer> load_gpt2_bpe(const std::string& encoder_json_path,
                                         const std::string& vocab_bpe_path) {
  const std::string& enc = encoder_json_path;
  Vocabulary vocabulary = read_encoder(enc);
  std::array<int32_t, 256> byte_ids{};
  for (int b = 0; b < 256; ++b) {
    auto it = vocabulary.id_of.find(std::string(1, static_cast<char>(b)));
    if (it == vocabulary.id_of.end()) {
      std::string spelled;
      utf8_append(spelled, gpt2_byte_to_char(static_cast<uint8_t>(b)));
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      fail_user(enc + ": no token for byte", hex, "(spelled", shown(spelled) + ");",
                "a byte-level BPE vocabulary holds all 256 single bytes");
    }
    byte_ids[static_cast<size_t>(b)] = it->second;
  }
  auto eos = vocabulary.id_of.find(std::string(kEndOfText));
  if (eos == vocabulary.id_of.end()) {
    fail_user(enc + ": no", kEndOfText, "token; Loom uses it as the end-of-document token (eos)");
  }
  const int eos_id = eos->second;
  BpeMerges merges = read_merges(vocab_bpe_path, vocabulary, enc);
  return std::make_unique<Gpt2Bpe>(std::move(vocabulary.bytes_of), byte_ids, std::move(merges), eos_id, enc);
}

}  // namespace loom
