// A hand-made GPT-2 tokenizer for tests: the 256 byte tokens (id = byte value), ten merges and
// <|endoftext|>, written as encoder.json + vocab.bpe into a directory. Small enough to work
// out every expected id by hand (see tests/data/gpt2_bpe_test.cpp). Also TempDir, the
// temporary directory the tokenizer tests write such files into.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "data/gpt2_bpe.h"
#include "data/utf8.h"

#include "test_util.h"

namespace loom::testing {

// The merges in rank order, spelled in GPT-2's byte characters (Ġ = space, Ċ = newline,
// "Ã ©" = the two bytes of é); merge k makes token 256 + k.
inline const std::vector<std::pair<std::string, std::string>>& tiny_gpt2_merges() {
  static const std::vector<std::pair<std::string, std::string>> merges = {
      {"\xC4\xA0", "t"},           // 256 Ġt
      {"h", "e"},                  // 257 he
      {"\xC4\xA0t", "he"},         // 258 Ġthe
      {"'", "s"},                  // 259 's
      {"1", "2"},                  // 260 12
      {"\xC4\xA0", "\xC4\xA0"},    // 261 ĠĠ
      {"\xC4\x8A", "\xC4\x8A"},    // 262 ĊĊ
      {"\xC3\x83", "\xC2\xA9"},    // 263 é
      {"i", "s"},                  // 264 is
      {"\xC4\xA0", "is"},          // 265 Ġis
  };
  return merges;
}
constexpr int kTinyGpt2Eos = 266;
constexpr int kTinyGpt2Vocab = 267;

// JSON string literal of a token (only '"' and '\\' need escaping among GPT-2's characters).
inline std::string tiny_json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Writes dir/encoder.json and dir/vocab.bpe; returns dir.
inline std::filesystem::path write_tiny_gpt2(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::string json = "{";
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    utf8_append(spelled, gpt2_byte_to_char(static_cast<uint8_t>(b)));
    json += tiny_json_string(spelled) + ": " + std::to_string(b) + ",\n";
  }
  int id = 256;
  for (const auto& [left, right] : tiny_gpt2_merges()) json += tiny_json_string(left + right) + ": " + std::to_string(id++) + ",\n";
  json += "\"<|endoftext|>\": " + std::to_string(id) + "}\n";
  std::ofstream(dir / "encoder.json", std::ios::binary) << json;
  std::ofstream merges(dir / "vocab.bpe", std::ios::binary);
  merges << "#version: 0.2\n";
  for (const auto& [left, right] : tiny_gpt2_merges()) merges << left << " " << right << "\n";
  return dir;
}


}  // namespace loom::testing
