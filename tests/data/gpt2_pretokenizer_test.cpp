// GPT-2's pre-tokenizer on hand-checked examples of each rule: contractions, the optional space,
// runs of letters/numbers/other, and whitespace runs that give their last character to the next
// piece. (tests/data/gpt2_bpe_reference_test.cpp checks it against Python's `regex` at large.)
#include "data/gpt2_pretokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace loom {
namespace {

std::vector<std::string> split(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view p : gpt2_pretokenize(text)) out.emplace_back(p);
  return out;
}

using Pieces = std::vector<std::string>;

TEST(Gpt2PretokenizerTest, WordsNumbersAndPunctuationTakeOneSpaceBefore) {
  EXPECT_EQ(split("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split("abc123def 45"), (Pieces{"abc", "123", "def", " 45"}));
  EXPECT_EQ(split("Hi!!! ...ok?"), (Pieces{"Hi", "!!!", " ...", "ok", "?"}));
  EXPECT_EQ(split("a+b=c"), (Pieces{"a", "+", "b", "=", "c"}));
  EXPECT_EQ(split(""), Pieces{});
  EXPECT_EQ(split(" "), (Pieces{" "}));
}

TEST(Gpt2PretokenizerTest, ContractionsAreLowercaseAndOnlyAtAPieceStart) {
  EXPECT_EQ(split("I'll don't we've they're she'd I'm it's"),
            (Pieces{"I", "'ll", " don", "'t", " we", "'ve", " they", "'re", " she", "'d", " I", "'m", " it", "'s"}));
  EXPECT_EQ(split("IT'S"), (Pieces{"IT", "'", "S"}));
  EXPECT_EQ(split("'sam"), (Pieces{"'s", "am"}));      // a contraction even before more letters
  EXPECT_EQ(split(" 's"), (Pieces{" '", "s"}));        // the space takes the apostrophe
  EXPECT_EQ(split("!'s"), (Pieces{"!'", "s"}));        // inside a run of punctuation
  EXPECT_EQ(split("''s"), (Pieces{"''", "s"}));
  EXPECT_EQ(split("x'"), (Pieces{"x", "'"}));
}

TEST(Gpt2PretokenizerTest, WhitespaceRunsLeaveTheirLastCharacterToTheNextPiece) {
  EXPECT_EQ(split("a  b"), (Pieces{"a", " ", " b"}));
  EXPECT_EQ(split("a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(split("a\n\nb"), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(split("a \n\nb"), (Pieces{"a", " \n", "\n", "b"}));
  EXPECT_EQ(split("a\n  b"), (Pieces{"a", "\n ", " b"}));
  EXPECT_EQ(split("a\tb"), (Pieces{"a", "\t", "b"}));
  EXPECT_EQ(split("a \t!"), (Pieces{"a", " ", "\t", "!"}));
  EXPECT_EQ(split("end  \n"), (Pieces{"end", "  \n"}));  // at the end of the text: the whole run
  EXPECT_EQ(split("  x"), (Pieces{" ", " x"}));
}

TEST(Gpt2PretokenizerTest, UnicodeCategoriesDecideRunsBeyondAscii) {
  EXPECT_EQ(split("caf\xC3\xA9 na\xC3\xAFve"), (Pieces{"caf\xC3\xA9", " na\xC3\xAFve"}));          // é ï: letters
  EXPECT_EQ(split("\xD0\x96\xD0\xB8\xD0\xB7\xD0\xBD\xD1\x8C 42"), (Pieces{"\xD0\x96\xD0\xB8\xD0\xB7\xD0\xBD\xD1\x8C", " 42"}));
  EXPECT_EQ(split("x\xC2\xBD"), (Pieces{"x", "\xC2\xBD"}));                  // ½ is a number (No)
  EXPECT_EQ(split("e\xCC\x81t"), (Pieces{"e", "\xCC\x81", "t"}));           // a combining mark is not a letter
  EXPECT_EQ(split("hi \xF0\x9F\x98\x80!"), (Pieces{"hi", " \xF0\x9F\x98\x80!"}));  // emoji: other
  EXPECT_EQ(split("a\xC2\xA0" "b"), (Pieces{"a", "\xC2\xA0", "b"}));        // no-break space is \s, not ' '
  EXPECT_EQ(split("a\xE3\x80\x80\xE3\x80\x80" "b"), (Pieces{"a", "\xE3\x80\x80", "\xE3\x80\x80", "b"}));
  EXPECT_EQ(split("a\x1C" "b"), (Pieces{"a", "\x1C", "b"}));                  // not White_Space
  EXPECT_EQ(gpt2_char_class(U'\u4E2D'), Gpt2CharClass::kLetter);             // 中
  EXPECT_EQ(gpt2_char_class(U'\u0663'), Gpt2CharClass::kNumber);             // Arabic-Indic 3
  EXPECT_EQ(gpt2_char_class(U'\u2167'), Gpt2CharClass::kNumber);             // Ⅷ (Nl)
  EXPECT_EQ(gpt2_char_class(U'\u2028'), Gpt2CharClass::kSpace);
  EXPECT_EQ(gpt2_char_class(U'\u200B'), Gpt2CharClass::kOther);              // zero-width space
}

}  // namespace
}  // namespace loom
