// load_tokenizer and tokenizer_files: which kind of tokenizer each path gives, the files behind
// it, and a clear error for paths that hold neither kind.
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

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

TEST(TokenizerTest, FilesBehindEachKindOfPath) {
  TempDir dir("tokenizer_files");
  testing::write_tiny_gpt2(dir.path() / "gpt2");
  const std::vector<std::string> gpt2 = {(dir.path() / "gpt2" / "encoder.json").string(),
                                         (dir.path() / "gpt2" / "vocab.bpe").string()};
  for (const std::string& path : {dir / "gpt2", dir / "gpt2/encoder.json", dir / "gpt2/vocab.bpe"}) {
    const TokenizerFiles files = tokenizer_files(path);
    EXPECT_EQ(files.kind, TokenizerFiles::Kind::kGpt2Bpe) << path;
    EXPECT_EQ(files.paths, gpt2) << path;
  }
  std::ofstream(dir.path() / "tok.model") << "not read";
  const TokenizerFiles model = tokenizer_files(dir / "tok.model");
  EXPECT_EQ(model.kind, TokenizerFiles::Kind::kSentencePiece);
  EXPECT_EQ(model.paths, std::vector<std::string>{dir / "tok.model"});
  EXPECT_THROW(tokenizer_files(dir / "missing.model"), UserError);
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
