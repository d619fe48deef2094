// load_tokenizer: which kind of tokenizer each path gives, and a clear error for paths that hold
// neither kind.
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "data/gpt2_test_files.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::string load_error(const std::string& path) {
  try {
    load_tokenizer(path);
  } catch (const UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for " << path;
  return "";
}

TEST(TokenizerTest, GptTwoFromTheDirectoryOrEitherFile) {
  TempDir dir("tokenizer_paths");
  testing::write_tiny_gpt2(dir.path() / "gpt2");
  for (const std::string& path : {dir / "gpt2", dir / "gpt2/", dir / "gpt2/encoder.json", dir / "gpt2/vocab.bpe"}) {
    const auto tok = load_tokenizer(path);
    EXPECT_EQ(tok->vocab_size(), testing::kTinyGpt2Vocab) << path;
    EXPECT_EQ(tok->encode(" the"), std::vector<int32_t>{258}) << path;
  }
}

TEST(TokenizerTest, PathsThatHoldNoTokenizer) {
  TempDir dir("tokenizer_bad_paths");
  EXPECT_NE(load_error(dir / "missing").find("tokenizer " + dir / "missing" + " does not exist"), std::string::npos);
  fs::create_directories(dir.path() / "empty");
  EXPECT_NE(load_error(dir / "empty").find("tokenizer directory " + dir / "empty" + " lacks encoder.json"),
            std::string::npos);
  std::ofstream(dir.path() / "empty/encoder.json") << "{}";
  EXPECT_NE(load_error(dir / "empty").find("lacks vocab.bpe"), std::string::npos);
  testing::write_tiny_gpt2(dir.path() / "no_merges");
  fs::remove(dir.path() / "no_merges/vocab.bpe");
  EXPECT_NE(load_error(dir / "no_merges/encoder.json").find("cannot read GPT-2 merges file " + dir / "no_merges/vocab.bpe"),
            std::string::npos);
  std::ofstream(dir.path() / "notes.txt") << "hello";
  EXPECT_NE(load_error(dir / "notes.txt").find(dir / "notes.txt" + " is not a SentencePiece model"), std::string::npos);
}

}  // namespace
}  // namespace loom
