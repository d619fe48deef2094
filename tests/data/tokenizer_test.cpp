// load_tokenizer and tokenizer_files: which kind of tokenizer each path gives, the files behind
// it, and a clear error for paths that hold neither kind. Cuts: where next_cut allows one, the ids
// of the parts are those of the whole, for both kinds.
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "data/gpt2_test_files.h"
#include "data/sentencepiece_tokenizer.h"

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
  EXPECT_NE(load_error(dir / "empty").find("tokenizer directory " + dir / "empty" + " holds no tokenizer"),
            std::string::npos);
  std::ofstream(dir.path() / "empty/encoder.json") << "{}";
  EXPECT_NE(load_error(dir / "empty").find("lacks vocab.bpe"), std::string::npos);
  testing::write_tiny_gpt2(dir.path() / "no_merges");
  fs::remove(dir.path() / "no_merges/vocab.bpe");
  EXPECT_NE(load_error(dir / "no_merges/encoder.json").find("lacks vocab.bpe"), std::string::npos);
  std::ofstream(dir.path() / "merges.txt") << "#version: 0.2\n";
  EXPECT_NE(load_error(dir / "merges.txt").find("lacks vocab.json"), std::string::npos);
  std::ofstream(dir.path() / "notes.txt") << "hello";
  EXPECT_NE(load_error(dir / "notes.txt").find(dir / "notes.txt" + " is not a SentencePiece model"), std::string::npos);
}

// Random text of words, spaces, tabs, newlines (single, double, CRLF), digits, punctuation and
// non-ASCII letters.
std::string random_text(std::mt19937& gen, int parts) {
  const std::vector<std::string> pieces = {"the", " cat", "'s", "12", " ", "  ", "\n", "\n\n", "\t", ".", "(",
                                           "caf\xC3\xA9", "\xE4\xB8\xAD", "x", "\r\n", "'", "A", "is", " the"};
  std::uniform_int_distribution<size_t> piece(0, pieces.size() - 1);
  std::string text;
  for (int p = 0; p < parts; ++p) text += pieces[piece(gen)];
  return text;
}

TEST(TokenizerTest, NextCutIsAfterANewlineBetweenPrintableCharacters) {
  TempDir dir("tokenizer_next_cut");
  const auto tok = load_tokenizer(testing::write_tiny_gpt2(dir.path()).string());
  const std::string text = "a \nb\n c\n\nd.\n(e\nf\n";  // newlines at 2, 4, 7, 8, 11, 14 and 16
  EXPECT_EQ(tok->next_cut(text, 1), 12u) << "after the newline between '.' and '('";
  EXPECT_EQ(tok->next_cut(text, 12), 12u);
  EXPECT_EQ(tok->next_cut(text, 13), 15u);
  EXPECT_EQ(tok->next_cut(text, 16), text.size()) << "a final newline is no cut";
  EXPECT_EQ(tok->next_cut("x\ny", 5), 3u) << "past the end: the end";
}

TEST(TokenizerTest, CutsKeepTheIdsOfTheWhole) {
  TempDir dir("tokenizer_cuts");
  std::mt19937 gen(8);
  std::string corpus;  // for SentencePiece: lines, as training sees them
  for (int line = 0; line < 400; ++line) {
    std::string text = random_text(gen, 30);
    std::erase(text, '\n');
    std::erase(text, '\r');
    corpus += text + "\n";
  }
  std::ofstream(dir / "corpus.txt", std::ios::binary) << corpus;
  train_sentencepiece({dir / "corpus.txt"}, 320, dir / "tok.model", {.threads = 1});
  std::vector<std::unique_ptr<Tokenizer>> tokenizers;
  tokenizers.push_back(load_tokenizer(testing::write_tiny_gpt2(dir.path() / "gpt2").string()));
  tokenizers.push_back(load_tokenizer(dir / "tok.model"));
  for (const auto& tok : tokenizers) {
    int cuts = 0;
    for (int t = 0; t < 200; ++t) {
      const std::string text = random_text(gen, 40);
      const std::vector<int32_t> whole = tok->encode(text);
      for (size_t from = 1; from < text.size(); ++from) {
        const size_t cut = tok->next_cut(text, from);
        if (cut == text.size()) break;
        ASSERT_EQ(text[cut - 1], '\n');
        std::vector<int32_t> parts = tok->encode(text.substr(0, cut));
        tok->encode_into(text.substr(cut), parts);
        ASSERT_EQ(parts, whole) << tok->description() << "\ncut at " << cut << " of:\n" << text;
        from = cut;
        ++cuts;
      }
    }
    EXPECT_GT(cuts, 100) << tok->description();
  }
}

}  // namespace
}  // namespace loom
