// The added tokens of a Hugging Face tokenizer.json: strings (special tokens such as
// <|endoftext|>, and others) that are found in the text before it is pre-tokenized and become
// one id each, whatever the vocabulary would make of them.
//
// Matching follows Hugging Face `tokenizers`: at each place the longest token that starts there
// wins, and the search goes on after it (leftmost-longest, no overlaps). Per token:
//   - lstrip: the whitespace before the token (back to the end of the previous match) joins it;
//   - rstrip: the whitespace after it joins it;
//   - single_word: the token counts only where no word character (letter, mark, number,
//     connector punctuation) touches it on either side.
// Whitespace is Unicode's White_Space property. A tokenizer.json keeps two groups apart: tokens
// with `normalized: false` are found in the raw text, the others in the text after the normalizer;
// each group is one AddedTokenMatcher.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loom {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

// A part of a text: an added token (id >= 0) or text between tokens (id < 0), as bytes [begin, end).
struct TextSpan {
  size_t begin = 0, end = 0;
  int32_t id = -1;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  bool empty() const { return tokens_.empty(); }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

  // Splits `text` into added tokens and the text between them, in order, appended to `out`.
  // Spans of text are never empty.
  void split(std::string_view text, std::vector<TextSpan>& out) const;

 private:
  // The longest token that matches at `pos` and is allowed there, or -1.
  int match_at(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  std::array<std::vector<int>, 256> by_first_byte_;  // indices into tokens_, longest first
};

}  // namespace loom
