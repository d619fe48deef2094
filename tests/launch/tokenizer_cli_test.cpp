// End-to-end runs of `loom tokenizer`: train a model, encode and decode through pipes (exact
// bytes back), GPT-2 files, and every kind of bad input answered with one line and exit code 2.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "data/gpt2_test_files.h"
#include "launch/loom_process.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::run_loom;
using testing::RunResult;
using testing::TempDir;

std::string corpus_lines(int lines) {
  const char* syllables[] = {"ka", "lo", "mi", "ne", "ru", "sta", "ter", "vo", "qu", "in", "ex", "pre"};
  std::mt19937 gen(5);
  std::uniform_int_distribution<int> syllable(0, 11), parts(1, 3), words(4, 12);
  std::string out;
  for (int l = 0; l < lines; ++l) {
    for (int w = words(gen); w > 0; --w) {
      for (int k = parts(gen); k > 0; --k) out += syllables[syllable(gen)];
      out += w > 1 ? " " : "\n";
    }
  }
  return out;
}

TEST(TokenizerCliTest, TrainEncodeDecodeInfo) {
  TempDir dir("tokenizer_cli");
  std::ofstream(dir / "a.txt") << corpus_lines(800);
  std::ofstream(dir / "b.txt") << corpus_lines(200) << "the end\n";
  const std::string model = dir / "models/tok.model";
  RunResult r = run_loom("tokenizer train --input " + dir / "a.txt" + " --input " + dir / "b.txt" +
                         " --vocab-size 300 --threads 1 --out " + model);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("trained on 1001 lines"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("wrote " + model + ": SentencePiece, 300 pieces, byte fallback, eos </s> = 2"),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(r.err.empty()) << "training is quiet: " << r.err;

  r = run_loom("tokenizer train --input " + dir / "a.txt" + " --vocab-size 300 --max-sentences 150 --seed 3 --out " +
               dir / "sampled.model");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("trained on a sample of 150 of 800 lines"), std::string::npos) << r.out;

  r = run_loom("tokenizer info --model " + model);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("vocab_size: 300\neos_id: 2\n"), std::string::npos) << r.out;

  // Bytes 'A' and '\n' have ids 3 + 0x41 and 3 + 0x0A (no 'A' or newline in the corpus).
  r = run_loom("tokenizer encode --model " + model + " --text A");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "68\n");
  const std::string text = "kalo mine\n  \xE2\x82\xAC\tend";
  std::ofstream(dir / "text.txt", std::ios::binary) << text;
  r = run_loom("tokenizer encode --model " + model + " < " + dir / "text.txt" + " > " + dir / "ids.txt");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_loom("tokenizer decode --model " + model + " < " + dir / "ids.txt");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, text) << "the exact bytes come back";
  r = run_loom("tokenizer decode --model " + model + " --ids '68 13'");
  EXPECT_EQ(r.out, "A\n");
}

TEST(TokenizerCliTest, Gpt2FilesEncodeLikeTheLibrary) {
  TempDir dir("tokenizer_cli_gpt2");
  testing::write_tiny_gpt2(dir.path());
  RunResult r = run_loom("tokenizer encode --model " + dir.path().string() + " --text \"the cat's 12\"");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "116 257 32 99 97 116 259 32 260\n");
  r = run_loom("tokenizer decode --model " + dir / "encoder.json" + " --ids '258 266'");
  EXPECT_EQ(r.out, " the<|endoftext|>");
  r = run_loom("tokenizer info --model " + dir / "vocab.bpe");
  EXPECT_NE(r.out.find("GPT-2 byte-level BPE, 267 tokens (10 merges), eos <|endoftext|> = 266"), std::string::npos)
      << r.out;
}

TEST(TokenizerCliTest, BadInputIsOneClearSentence) {
  TempDir dir("tokenizer_cli_bad");
  std::ofstream(dir / "c.txt") << corpus_lines(300);
  std::ofstream(dir / "bad.txt", std::ios::binary) << "fine\nbad \xFF byte\n";
  const std::string out = dir / "t.model";
  expect_user_error("tokenizer train --vocab-size 300 --out " + out, "needs --input FILE");
  expect_user_error("tokenizer train --input " + dir / "c.txt" + " --out " + out, "needs --vocab-size N");
  expect_user_error("tokenizer train --input " + dir / "c.txt" + " --vocab-size 300", "needs --out MODEL");
  expect_user_error("tokenizer train --input " + dir / "nope.txt" + " --vocab-size 300 --out " + out,
                    "cannot read training input " + dir / "nope.txt");
  expect_user_error("tokenizer train --input " + dir / "c.txt" + " --vocab-size lots --out " + out,
                    "--vocab-size expects an integer, got 'lots'");
  expect_user_error("tokenizer train --input " + dir / "c.txt" + " --vocab-size 100 --out " + out,
                    "vocab size 100 is too small");
  expect_user_error("tokenizer train --input " + dir / "c.txt" + " --vocab-size 90000 --out " + out,
                    "vocab size 90000 is more than these inputs can fill");
  expect_user_error("tokenizer train --input " + dir / "bad.txt" + " --vocab-size 300 --out " + out,
                    dir / "bad.txt" + ":2: not valid UTF-8 at byte offset 4 of the line");
  EXPECT_FALSE(fs::exists(out)) << "no model after a failed training";
  expect_user_error("tokenizer train --input " + dir / "c.txt" + " --vocab-size 300 --out " + out + " --colour red",
                    "unknown option --colour");
  expect_user_error("tokenizer encode --text hi", "needs --model PATH");
  expect_user_error("tokenizer encode --model " + dir / "missing.model" + " --text hi",
                    "tokenizer " + dir / "missing.model" + " does not exist");
  expect_user_error("tokenizer encode --model " + dir / "c.txt" + " --text hi", "is not a SentencePiece model");
  expect_user_error("tokenizer frobnicate", "unknown subcommand 'frobnicate'");

  testing::write_tiny_gpt2(dir.path() / "gpt2");
  std::ofstream(dir / "latin1.txt", std::ios::binary) << "caf\xE9";
  expect_user_error("tokenizer encode --model " + dir / "gpt2" + " < " + dir / "latin1.txt",
                    "the text to encode is not valid UTF-8 at byte offset 3");
  expect_user_error("tokenizer decode --model " + dir / "gpt2" + " --ids '1 2 267'",
                    "token id 267 at position 2 is outside the vocabulary (ids 0 .. 266)");
  expect_user_error("tokenizer decode --model " + dir / "gpt2" + " --ids '1 two'",
                    "expected token ids (integers) in --ids, found 'two' at byte offset 2");
  std::ofstream(dir / "gpt2/vocab.bpe", std::ios::app) << "h e\n";
  expect_user_error("tokenizer info --model " + dir / "gpt2", dir / "gpt2/vocab.bpe" + ":12: merge 'h e' repeats line 3");

  const RunResult r = run_loom("tokenizer --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("train    train a SentencePiece BPE tokenizer"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace loom
