// Loom's tokenizer.json reader against Hugging Face `tokenizers` itself
// (tests/reference/hf_tokenizers_reference.py): byte-level BPE tokenizers trained there in the
// styles of GPT-2, Llama 3, SmolLM, Qwen2 (NFC) and one with a prefix space, the ids of a corpus
// (the machine's license texts, special tokens inside texts, emoji, CJK, numbers, CRLF, long
// whitespace), decode, eos, bos and the template; and vocab.json + merges.txt.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "data/gpt2_test_files.h"
#include "data/reference_files.h"
#include "data/tokenizer.h"

namespace loom {
namespace {

using testing::TempDir;

using testing::hex_of;
using testing::ints_of;
using testing::lines_of;
using testing::read_records;

// The reference's files, made once for all the tests here.
class HfTokenizerReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("hf_reference");
    const std::string command = std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR +
                                "/tests/reference/hf_tokenizers_reference.py make " + dir_->path().string();
    made_ = std::system(command.c_str()) == 0;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(made_) << "the Python reference failed (it needs `tokenizers` from PyPI: run scripts/setup.sh)";
  }

  // Encodes every text with `tok` and compares ids and decode with the reference's `style`;
  // `round_trip`: decode(encode(x)) must also be x (not so under NFC or a prefix space). Texts
  // that hold `skip` are left out.
  static void expect_same_as_reference(const Tokenizer& tok, const std::string& style, bool round_trip,
                                       const std::string& skip = "") {
    const std::vector<std::string> texts = read_records(dir_->file("texts"));
    const std::vector<std::string> ids = lines_of(dir_->file(style + "/ids"));
    const std::vector<std::string> decoded = lines_of(dir_->file(style + "/decoded"));
    ASSERT_EQ(ids.size(), texts.size());
    ASSERT_EQ(decoded.size(), texts.size());
    int failures = 0;
    size_t total = 0;
    for (size_t i = 0; i < texts.size() && failures < 5; ++i) {
      if (!skip.empty() && texts[i].find(skip) != std::string::npos) continue;
      const std::vector<int32_t> expected = ints_of(ids[i]);
      const std::vector<int32_t> got = tok.encode(texts[i]);
      total += got.size();
      if (got != expected) {
        ++failures;
        size_t at = 0;
        while (at < got.size() && at < expected.size() && got[at] == expected[at]) ++at;
        ADD_FAILURE() << style << " text " << i << " '" << texts[i].substr(0, 120) << "': " << got.size()
                      << " ids, expected " << expected.size() << "; first difference at index " << at << ": got "
                      << (at < got.size() ? got[at] : -1) << " expected " << (at < expected.size() ? expected[at] : -1)
                      << " ('" << tok.decode(std::vector<int32_t>(got.begin() + static_cast<ptrdiff_t>(std::min(at, got.size())),
                                                                       got.begin() + static_cast<ptrdiff_t>(std::min(at + 3, got.size()))))
                      << "...')";
        continue;
      }
      EXPECT_EQ(hex_of(tok.decode(got)), decoded[i]) << style << " text " << i << ": decode differs";
      if (round_trip) {
        EXPECT_EQ(tok.decode(got), texts[i]) << style << " text " << i << ": decode(encode(x)) != x";
      }
    }
    EXPECT_GT(total, 50000u) << "the corpus is too small to test much";
  }

  // Where next_cut allows a cut, the ids of the parts are those of the whole (the license texts).
  static void expect_cuts_keep_the_ids(const Tokenizer& tok, const std::string& style) {
    const std::vector<std::string> texts = read_records(dir_->file("texts"));
    size_t cuts = 0;
    for (size_t i = 0; i < texts.size() && i < 20; ++i) {
      const std::string& text = texts[i];
      std::vector<int32_t> parts;
      for (size_t begin = 0; begin < text.size();) {
        const size_t end = tok.next_cut(text, begin + 1 + (begin * 7919 + i) % 3000);
        tok.encode_into(std::string_view(text).substr(begin, end - begin), parts);
        cuts += end < text.size();
        begin = end;
      }
      EXPECT_EQ(parts, tok.encode(text)) << style << " text " << i << ": the parts' ids differ from the whole's";
    }
    EXPECT_GT(cuts, 100u) << style << ": too few cuts to test";
  }

  static std::map<std::string, std::vector<int32_t>> meta(const std::string& style) {
    std::map<std::string, std::vector<int32_t>> m;
    for (const std::string& line : lines_of(dir_->file(style + "/meta"))) {
      const size_t space = line.find(' ');
      m[line.substr(0, space)] = ints_of(line.substr(space + 1));
    }
    return m;
  }

  static TempDir* dir_;
  static bool made_;
};

TempDir* HfTokenizerReferenceTest::dir_ = nullptr;
bool HfTokenizerReferenceTest::made_ = false;

TEST_F(HfTokenizerReferenceTest, EachStyleGivesTheReferenceIdsDecodeEosBosAndTemplate) {
  for (const std::string style : {"gpt2", "llama3", "smollm", "qwen2", "prefix"}) {
    SCOPED_TRACE(style);
    // The directory, as `loom prepare --tokenizer` and `loom generate` take it.
    const auto tok = load_tokenizer(dir_->file(style));
    const auto m = meta(style);
    EXPECT_EQ(tok->eos_id(), m.at("eos").at(0));
    EXPECT_EQ(tok->bos_id(), m.at("bos").at(0));
    EXPECT_EQ(tok->vocab_size(), m.at("vocab").at(0));
    EXPECT_EQ(tok->encode_with_template("Hello"), m.at("template"));
    expect_same_as_reference(*tok, style, style != "qwen2" && style != "prefix");
    // GPT-2's pattern (with Digits or not) allows cuts; a Split pattern or a prefix space does not.
    if (style == "gpt2" || style == "smollm") {
      expect_cuts_keep_the_ids(*tok, style);
    } else {
      const std::string text = "end.\nNext";
      EXPECT_EQ(tok->next_cut(text, 1), text.size()) << style;
    }
  }
}

TEST_F(HfTokenizerReferenceTest, VocabJsonAndMergesTxtGiveTheSameIdsAsTokenizerJson) {
  // The gpt2 style saved as the two files many GPT-2-family repositories ship. They have no added
  // tokens: as in GPT-2's encoder.py, "<|endoftext|>" in a text is text, so such texts are left out.
  const TokenizerFiles files = tokenizer_files(dir_->file("gpt2_pair"));
  EXPECT_EQ(files.kind, TokenizerFiles::Kind::kGpt2Bpe);
  const auto tok = load_tokenizer(dir_->file("gpt2_pair/merges.txt"));
  EXPECT_EQ(tok->eos_id(), meta("gpt2").at("eos").at(0));
  expect_same_as_reference(*tok, "gpt2", true, "<|endoftext|>");
}

}  // namespace
}  // namespace loom
