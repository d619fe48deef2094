// Loom's SentencePiece tokenizer against the Python `sentencepiece` library (what transformers'
// LlamaTokenizer runs), on a model set up as Llama 2's and TinyLlama's are (dummy prefix, byte
// fallback), trained by tests/reference/sentencepiece_reference.py: the ids of the license texts
// and of strings full of special-looking tokens, emoji, CJK, numbers, CRLF and whitespace runs;
// decode; bos, eos and the template (<s> first, as LlamaTokenizer adds it).
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "data/reference_files.h"
#include "data/tokenizer.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::TempDir;

TEST(SentencePieceReferenceTest, LlamaStyleModelGivesTheLibrarysIdsDecodeBosAndTemplate) {
  TempDir dir("sp_reference");
  const std::string command = std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR +
                              "/tests/reference/sentencepiece_reference.py make " + dir.str();
  ASSERT_EQ(std::system(command.c_str()), 0)
      << "the Python reference failed (it needs `sentencepiece` and `tokenizers` from PyPI: run scripts/setup.sh)";
  const auto tok = load_tokenizer(dir / "llama2.model");
  std::map<std::string, std::vector<int32_t>> meta;
  for (const std::string& line : testing::lines_of(dir / "meta")) {
    meta[line.substr(0, line.find(' '))] = testing::ints_of(line.substr(line.find(' ') + 1));
  }
  EXPECT_EQ(tok->bos_id(), meta.at("bos").at(0));
  EXPECT_EQ(tok->eos_id(), meta.at("eos").at(0));
  EXPECT_EQ(tok->encode_with_template("Hello"), meta.at("template"));

  const std::vector<std::string> texts = testing::read_records(dir / "texts");
  const std::vector<std::string> ids = testing::lines_of(dir / "ids");
  const std::vector<std::string> decoded = testing::lines_of(dir / "decoded");
  ASSERT_EQ(ids.size(), texts.size());
  ASSERT_EQ(decoded.size(), texts.size());
  int failures = 0;
  for (size_t i = 0; i < texts.size() && failures < 5; ++i) {
    const std::vector<int32_t> expected = testing::ints_of(ids[i]);
    const std::vector<int32_t> got = tok->encode(texts[i]);
    if (got != expected) {
      ++failures;
      size_t at = 0;
      while (at < got.size() && at < expected.size() && got[at] == expected[at]) ++at;
      ADD_FAILURE() << "text " << i << " '" << texts[i].substr(0, 120) << "': " << got.size() << " ids, expected "
                    << expected.size() << "; first difference at index " << at;
      continue;
    }
    EXPECT_EQ(testing::hex_of(tok->decode(got)), decoded[i]) << "text " << i << ": decode differs";
  }
}

}  // namespace
}  // namespace loom
