// SentencePiece's BPE encoding done over ids: the ids the library gives, several times faster.
//
// The library (bpe_model.cc, Model::SampleEncode without dropout) splits the normalised text into
// characters, then, while some adjacent pair of symbols concatenates to a piece, merges the pair
// whose piece has the highest score, the leftmost of equal scores; a character that is no piece
// ends as its UTF-8 bytes (byte fallback). It looks each candidate pair up by its text in a hash
// map of strings; this does the same with the pairs' ids in a flat table of every (left, right)
// -> piece split that the vocabulary holds, built when the model is loaded.
//
// Only models for which that is exactly the library's result are taken (create() gives nullptr
// otherwise, and the library encodes): BPE with byte fallback, a normaliser that changes nothing
// but spaces (identity rule, no dummy prefix, no whitespace removal), no user-defined or unused
// pieces (matched or resegmented apart by the library), and every character of every piece a
// piece itself (so a character that is no piece never merges). `loom tokenizer train` makes such
// models. The tests hold the two against each other, and against `spm_encode`.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/sentencepiece_model.h"

namespace loom {

class SentencePieceBpe {
 public:
  static std::unique_ptr<SentencePieceBpe> create(const SentencePieceModelSpec& spec);

  // Appends the ids of `text`, valid UTF-8.
  void encode(std::string_view text, std::vector<int32_t>& out) const;

 private:
  SentencePieceBpe() = default;

  struct Merge {
    uint64_t key = kEmpty;  // (left id << 32) | right id
    int32_t merged = 0;
    float score = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t key(int32_t left, int32_t right) {
    return uint64_t{static_cast<uint32_t>(left)} << 32 | static_cast<uint32_t>(right);
  }
  const Merge* find(int32_t left, int32_t right) const;
  void add(int32_t left, int32_t right, int32_t merged, float score);
  // The id of the one-character piece `c` (after space escaping), or -1.
  int32_t char_id(char32_t c) const;

  std::vector<Merge> table_;  // open addressing, at most half full; size a power of two
  int shift_ = 64;
  size_t merges_ = 0;
  std::array<int32_t, 128> ascii_ids_{};              // -1: no piece
  std::unordered_map<char32_t, int32_t> other_ids_;   // other one-character pieces
  std::array<int32_t, 256> byte_ids_{};               // <0x00> .. <0xFF>
  bool escape_spaces_ = true;
};

}  // namespace loom
