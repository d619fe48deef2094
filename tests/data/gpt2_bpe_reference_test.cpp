// GPT-2's tokenizer against an independent Python implementation that uses GPT-2's own regular
// expression (tests/reference/gpt2_bpe_reference.py, Python's `regex` module):
//   - the letter/number/whitespace class of every Unicode code point;
//   - the pre-tokenizer's pieces of thousands of random strings built from tricky characters;
//   - the ids of those strings and of a corpus under merges that the reference learned itself.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "data/gpt2_bpe.h"
#include "data/gpt2_pretokenizer.h"
#include "data/gpt2_test_files.h"
#include "data/tokenizer.h"

namespace loom {
namespace {

using testing::TempDir;

// Runs the reference with `args`; returns its standard output.
std::string run_reference(const TempDir& dir, const std::string& args) {
  const std::string out = dir / "reference.out";
  const std::string command = std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR +
                              "/tests/reference/gpt2_bpe_reference.py " + args + " > " + out;
  const int rc = std::system(command.c_str());
  EXPECT_EQ(rc, 0) << "the Python reference failed (it needs python3-regex: run scripts/setup.sh): " << command;
  std::ifstream in(out, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::vector<int64_t>> integer_lines(const std::string& text) {
  std::vector<std::vector<int64_t>> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    lines.emplace_back();
    for (int64_t v; fields >> v;) lines.back().push_back(v);
  }
  return lines;
}

void write_strings(const std::string& path, const std::vector<std::string>& strings) {
  std::ofstream out(path, std::ios::binary);
  for (const std::string& s : strings) out << s.size() << "\n" << s << "\n";
}

// Random strings from pieces chosen to meet every rule of the pattern and every kind of space.
std::vector<std::string> tricky_strings(int count, uint32_t seed) {
  const std::vector<std::string> parts = {
      "a", "b", "Z", "the", " the", "caf\xC3\xA9", "\xC3\x9F", "\xD0\x96", "\xE4\xB8\xAD", "\xC3\xB1",  // letters
      "0", "7", "42", "\xD9\xA3", "\xC2\xBD", "\xE2\x85\xA7",                                       // numbers
      " ", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", "\x0B", "\x0C",                               // ASCII space
      "\xC2\xA0", "\xE2\x80\x83", "\xE3\x80\x80", "\xC2\x85", "\xE2\x80\xA8",                       // Unicode space
      "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'x",                                  // contractions
      "!", ".", ",", "-", "(", "\xF0\x9F\x98\x80", "\xE2\x82\xAC", "\xCC\x81", "\xE2\x80\x8B",
      "\x1C", "\x1F", "\xEF\xBB\xBF", "\x01", "_", "#"};
  std::mt19937 gen(seed);
  std::uniform_int_distribution<size_t> part(0, parts.size() - 1), length(0, 24);
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    std::string s;
    for (size_t n = length(gen); n > 0; --n) s += parts[part(gen)];
    out.push_back(s);
  }
  return out;
}

TEST(Gpt2BpeReferenceTest, CharacterClassesOfEveryCodePointMatchRegex) {
  TempDir dir("gpt2_ref_classes");
  std::vector<Gpt2CharClass> expected(0x110000, Gpt2CharClass::kOther);
  std::istringstream in(run_reference(dir, "classes"));
  size_t ranges = 0;
  for (std::string name; in >> name;) {
    size_t first, last;
    in >> first >> last;
    ++ranges;
    const Gpt2CharClass cls = name == "L" ? Gpt2CharClass::kLetter : name == "N" ? Gpt2CharClass::kNumber
                                                                                 : Gpt2CharClass::kSpace;
    for (size_t cp = first; cp <= last; ++cp) expected[cp] = cls;
  }
  ASSERT_GT(ranges, 500u) << "the reference printed too few ranges";
  size_t mismatches = 0;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const Gpt2CharClass got = gpt2_char_class(cp);
    if (got != expected[cp] && ++mismatches <= 10) {
      ADD_FAILURE() << "U+" << std::hex << static_cast<uint32_t>(cp) << ": got class " << static_cast<int>(got)
                    << " expected " << static_cast<int>(expected[cp]) << " (0 other, 1 letter, 2 number, 3 space)";
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST(Gpt2BpeReferenceTest, PiecesOfRandomStringsMatchRegex) {
  TempDir dir("gpt2_ref_pieces");
  const std::vector<std::string> strings = tricky_strings(3000, 7);
  write_strings(dir / "strings", strings);
  const auto expected = integer_lines(run_reference(dir, "pieces " + dir / "strings"));
  ASSERT_EQ(expected.size(), strings.size());
  int failures = 0;
  for (size_t i = 0; i < strings.size() && failures < 5; ++i) {
    std::vector<int64_t> got;
    for (std::string_view p : gpt2_pretokenize(strings[i])) got.push_back(static_cast<int64_t>(p.size()));
    if (got != expected[i]) {
      ++failures;
      std::string lengths;
      for (int64_t n : expected[i]) lengths += std::to_string(n) + " ";
      ADD_FAILURE() << "string " << i << " '" << strings[i] << "': piece lengths differ; expected " << lengths;
    }
  }
}

TEST(Gpt2BpeReferenceTest, IdsMatchUnderMergesTheReferenceLearned) {
  TempDir dir("gpt2_ref_ids");
  // A corpus with a small vocabulary, so that 300 merges make whole words.
  const std::vector<std::string> words = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and",
                                          "it's", "they'll", "don't", "caf\xC3\xA9", "na\xC3\xAFve", "\xD0\x96\xD0\xB8\xD0\xB7\xD0\xBD\xD1\x8C",
                                          "2024", "3.14", "hello,", "world!", "(yes)", "\xE2\x80\x94", "\xF0\x9F\x98\x80"};
  // ... and made-up words of syllables, for more to merge.
  const std::vector<std::string> syllables = {"ka", "lo", "mi", "ne", "ru", "sta", "ter", "vo", "qu", "in"};
  std::mt19937 gen(3);
  std::uniform_int_distribution<size_t> word(0, words.size() - 1), gap(0, 12), syllable(0, syllables.size() - 1);
  std::string corpus;
  std::vector<std::string> lines;
  for (int l = 0; l < 400; ++l) {
    std::string line;
    for (int w = 0; w < 14; ++w) {
      const size_t g = gap(gen);
      line += g == 0 ? "  " : g == 1 ? "\t" : " ";
      if (w % 2 == 0) {
        line += words[word(gen)];
      } else {
        for (size_t k = 1 + g % 3; k > 0; --k) line += syllables[syllable(gen)];
      }
    }
    lines.push_back(line);
    corpus += line + (l % 9 == 0 ? "\n\n" : "\n");
  }
  std::ofstream(dir / "corpus.txt", std::ios::binary) << corpus;
  run_reference(dir, "train " + dir / "corpus.txt" + " 300 " + dir / "vocab");
  const auto tok = load_tokenizer(dir / "vocab");
  ASSERT_EQ(tok->vocab_size(), static_cast<int>(tok->eos_id()) + 1);
  ASSERT_EQ(tok->vocab_size(), 256 + 300 + 1) << "300 merges, each making a new token";

  std::vector<std::string> texts = tricky_strings(1000, 11);
  texts.insert(texts.end(), lines.begin(), lines.begin() + 50);
  texts.push_back(corpus);
  // Pieces long enough for the heap path of the merges.
  texts.push_back(std::string(200, 'e') + " " + std::string(61, 'o'));
  std::string long_word;
  for (int i = 0; i < 40; ++i) long_word += words[static_cast<size_t>(i) % 9].substr(0, 3);
  texts.push_back(long_word + " x" + long_word);
  write_strings(dir / "texts", texts);
  const auto expected = integer_lines(run_reference(dir, "encode " + dir / "vocab" + " " + dir / "texts"));
  ASSERT_EQ(expected.size(), texts.size());
  int failures = 0;
  for (size_t i = 0; i < texts.size() && failures < 5; ++i) {
    const std::vector<int32_t> ids = tok->encode(texts[i]);
    const std::vector<int64_t> got(ids.begin(), ids.end());
    if (got != expected[i]) {
      ++failures;
      ADD_FAILURE() << "text " << i << " '" << texts[i].substr(0, 200) << "': " << got.size() << " ids, expected "
                    << expected[i].size();
    }
    EXPECT_EQ(tok->decode(ids), texts[i]);
  }
}

}  // namespace
}  // namespace loom
