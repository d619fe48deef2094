// GPT-2's pre-tokenizer: splits text into the pieces that BPE then encodes one at a time.
//
// GPT-2 splits with the regular expression
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (alternatives tried in order at each position, as Python's `regex` module does). This is that
// expression written out by hand, with the same result on every valid UTF-8 text:
//   - an ASCII apostrophe followed by s, t, m, d, re, ve or ll (lowercase) is a piece;
//   - otherwise a run of letters, a run of numbers, or a run of other characters (not letter, not
//     number, not whitespace), each taking one preceding ASCII space (U+0020) with it;
//   - otherwise a run of whitespace, except that a run followed by more text leaves its last
//     character to the next piece (the `\s+(?!\S)` lookahead), so " \n\nHi" gives " \n", "\n",
//     "Hi" and "a   b" gives "a", "  ", " b".
// Letters are Unicode's general category L, numbers N, whitespace the White_Space property (the
// meanings of \p{L}, \p{N} and \s in `regex`); ICU supplies them beyond ASCII.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace loom {

enum class Gpt2CharClass : unsigned char { kOther, kLetter, kNumber, kSpace };

Gpt2CharClass gpt2_char_class(char32_t code_point);

// Yields the pieces of valid UTF-8 text in order; together they are exactly the text.
//   Gpt2Pretokenizer pieces(text);
//   for (std::string_view piece; pieces.next(piece);) ...
class Gpt2Pretokenizer {
 public:
  explicit Gpt2Pretokenizer(std::string_view text) : text_(text) {}
  bool next(std::string_view& piece);

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

// All pieces at once (tests, tools).
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

}  // namespace loom
