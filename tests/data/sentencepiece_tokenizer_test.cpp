// SentencePiece: train on a generated corpus, then round trips, eos, ids equal to those of the
// `spm_encode` tool on the same model, threads, and each bad input answered with its message.
#include "data/sentencepiece_tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/gpt2_test_files.h"
#include "data/tokenizer.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using Ids = std::vector<int32_t>;

// Lines of made-up words (syllables joined at random, so that there is plenty to merge) with
// common English words, numbers, punctuation and a few non-ASCII words.
std::string generated_corpus(int lines, uint32_t seed) {
  const std::vector<std::string> fixed = {"the", "of", "and", "model", "it's", "don't", "caf\xC3\xA9",
                                          "\xC3\xBC" "ber", "\xE4\xB8\xAD\xE6\x96\x87", "2024", "(see", "above).", "-"};
  const std::vector<std::string> syllables = {"ka", "lo", "mi", "ne", "ru", "sta", "ter", "vo", "qu", "in", "ex",
                                              "pre", "dom", "ul", "ba", "sh", "ing", "ed"};
  std::mt19937 gen(seed);
  std::uniform_int_distribution<size_t> fixed_word(0, fixed.size() - 1), syllable(0, syllables.size() - 1);
  std::uniform_int_distribution<int> count(3, 16), kind(0, 2), parts(1, 3);
  std::string out;
  for (int l = 0; l < lines; ++l) {
    for (int w = count(gen); w > 0; --w) {
      if (kind(gen) == 0) {
        out += fixed[fixed_word(gen)];
      } else {
        for (int k = parts(gen); k > 0; --k) out += syllables[syllable(gen)];
      }
      if (w > 1) out += " ";
    }
    out += l % 10 == 0 ? "\n\n" : "\n";
  }
  return out;
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("spm");
    std::ofstream(*dir_ / "corpus_a.txt", std::ios::binary) << generated_corpus(1500, 1);
    std::ofstream(*dir_ / "corpus_b.txt", std::ios::binary) << generated_corpus(500, 2);
    fs::create_directories(dir_->path() / "out");
    summary_ = train_sentencepiece({*dir_ / "corpus_a.txt", *dir_ / "corpus_b.txt"}, 400, *dir_ / "out/tok.model",
                                   {.threads = 2});
  }
  static void TearDownTestSuite() { delete dir_; }
  static TempDir* dir_;
  static SentencePieceTrainSummary summary_;
};
TempDir* SentencePieceTest::dir_ = nullptr;
SentencePieceTrainSummary SentencePieceTest::summary_;

TEST_F(SentencePieceTest, TrainsAModelWithByteFallbackAndEos) {
  EXPECT_EQ(files_in(dir_->path() / "out"), std::vector<std::string>{"tok.model"}) << "no temporary file left";
  EXPECT_EQ(summary_.lines, 2000);
  EXPECT_EQ(summary_.trained_lines, 2000);
  EXPECT_EQ(summary_.vocab_size, 400);
  EXPECT_GT(summary_.bytes, 2000 * 10);
  const auto tok = load_tokenizer(*dir_ / "out/tok.model");
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->description(), "SentencePiece, 400 pieces, byte fallback, eos </s> = 2 from " + *dir_ / "out/tok.model");
  // Bytes come right after the three special pieces; a character never seen falls back to them.
  EXPECT_EQ(tok->decode(Ids{3 + 0x41}), "A");
  EXPECT_EQ(tok->encode("\xE2\x82\xAC"), (Ids{3 + 0xE2, 3 + 0x82, 3 + 0xAC}));  // € is not in the corpus
  const Ids eos_text = tok->encode("</s>");
  EXPECT_EQ(std::count(eos_text.begin(), eos_text.end(), 2), 0) << "text never becomes eos";
  EXPECT_EQ(tok->encode(" the model of the").size(), 4u) << "common words are single pieces";
}

TEST_F(SentencePieceTest, DecodeOfEncodeIsTheText) {
  const auto tok = load_tokenizer(*dir_ / "out/tok.model");
  const std::string texts[] = {
      "the model",
      "  leading spaces, trailing spaces  ",
      "tabs\tand\nnewlines\n\n\nand  double  spaces",
      "caf\xC3\xA9 \xC3\xBC" "ber \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 \xD0\x96",
      "digits 1234567890 and \x01 control",
      "",
      " ",
      "\n",
  };
  for (const std::string& text : texts) EXPECT_EQ(tok->decode(tok->encode(text)), text);
  const Ids digits = tok->encode("1234");
  EXPECT_EQ(digits.size(), 4u) << "digits are split one per piece";
  try {
    tok->encode("ok\xF0\x9F");
    FAIL() << "expected InvalidUtf8";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8 at byte offset 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok->decode(Ids{400}), UserError);
}

TEST_F(SentencePieceTest, IdsEqualThoseOfSpmEncode) {
  const auto tok = load_tokenizer(*dir_ / "out/tok.model");
  std::string lines = generated_corpus(200, 9);
  lines += "unseen words: zebra quokka \xE2\x82\xAC\xE2\x82\xAC 99 bottles\n  indented\tline\n";
  std::ofstream(*dir_ / "lines.txt", std::ios::binary) << lines;
  const std::string command = "spm_encode --model=" + *dir_ / "out/tok.model" + " --output_format=id < " +
                              *dir_ / "lines.txt" + " > " + *dir_ / "lines.ids";
  ASSERT_EQ(std::system(command.c_str()), 0) << command << " (spm_encode comes with the sentencepiece package)";
  std::ifstream ids_in(*dir_ / "lines.ids");
  std::istringstream text_in(lines);
  int compared = 0;
  for (std::string line, id_line; std::getline(text_in, line);) {
    ASSERT_TRUE(std::getline(ids_in, id_line)) << "spm_encode gave fewer lines";
    Ids expected;
    std::istringstream fields(id_line);
    for (int32_t v; fields >> v;) expected.push_back(v);
    EXPECT_EQ(tok->encode(line), expected) << "line " << compared << ": " << line;
    ++compared;
  }
  EXPECT_EQ(compared, 222);
}

// A text of many 64 KiB pieces is encoded piece by piece, cut after newlines: its ids must be
// those of its lines, each encoded alone by spm_encode, with the byte piece of '\n' (3 + 0x0A)
// between them, as if it had been encoded whole (no piece of this model holds a newline).
TEST_F(SentencePieceTest, LongTextsEncodeLikeTheirLines) {
  const auto tok = load_tokenizer(*dir_ / "out/tok.model");
  const std::string text = generated_corpus(8000, 12) + "  indented\nlast line";
  ASSERT_GT(text.size(), size_t{5} << 16);
  std::ofstream(*dir_ / "long.txt", std::ios::binary) << text;
  const std::string command = "spm_encode --model=" + *dir_ / "out/tok.model" + " --output_format=id < " +
                              *dir_ / "long.txt" + " > " + *dir_ / "long.ids";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  Ids expected;
  std::ifstream ids_in(*dir_ / "long.ids");
  for (std::string id_line; std::getline(ids_in, id_line);) {
    std::istringstream fields(id_line);
    for (int32_t v; fields >> v;) expected.push_back(v);
    expected.push_back(3 + 0x0A);
  }
  expected.pop_back();  // the last line has no newline
  const Ids got = tok->encode(text);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], expected[i]) << "id " << i;
  EXPECT_EQ(tok->decode(got), text);
}

TEST_F(SentencePieceTest, ManyThreadsEncodeLikeOne) {
  const auto tok = load_tokenizer(*dir_ / "out/tok.model");
  const std::string text = generated_corpus(300, 5);
  const Ids expected = tok->encode(text);
  std::vector<Ids> got(6);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t) threads.emplace_back([&, t] { got[t] = tok->encode(text); });
  for (std::thread& th : threads) th.join();
  for (size_t t = 0; t < got.size(); ++t) EXPECT_EQ(got[t], expected) << "thread " << t;
}

TEST_F(SentencePieceTest, TrainingIsReproducibleWithASampleOfLines) {
  const std::vector<std::string> inputs = {*dir_ / "corpus_a.txt", *dir_ / "corpus_b.txt"};
  const auto bytes_of = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const SentencePieceTrainOptions sampled = {.threads = 2, .max_sentences = 300};
  const SentencePieceTrainSummary summary = train_sentencepiece(inputs, 360, *dir_ / "s1.model", sampled);
  EXPECT_EQ(summary.lines, 2000);
  EXPECT_EQ(summary.trained_lines, 300);
  train_sentencepiece(inputs, 360, *dir_ / "s2.model", sampled);
  EXPECT_TRUE(bytes_of(*dir_ / "s1.model") == bytes_of(*dir_ / "s2.model")) << "same seed, same model";
  train_sentencepiece(inputs, 360, *dir_ / "s3.model", {.threads = 2, .max_sentences = 300, .seed = 1});
  EXPECT_FALSE(bytes_of(*dir_ / "s1.model") == bytes_of(*dir_ / "s3.model")) << "another seed, another sample";
}

TEST_F(SentencePieceTest, TrainingErrorsAreClearAndLeaveNoFile) {
  const std::string corpus = *dir_ / "corpus_a.txt";
  const std::string out = *dir_ / "bad/out.model";
  fs::create_directories(dir_->path() / "bad");
  EXPECT_NE(error_of([&] { train_sentencepiece({corpus, *dir_ / "nope.txt"}, 400, out); })
                .find("cannot read training input " + *dir_ / "nope.txt" + " (does it exist?)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { train_sentencepiece({}, 400, out); }).find("no training input"), std::string::npos);
  std::ofstream(*dir_ / "empty.txt") << "";
  std::ofstream(*dir_ / "blank.txt") << "\n\r\n\n";
  EXPECT_NE(error_of([&] { train_sentencepiece({*dir_ / "empty.txt", *dir_ / "blank.txt"}, 400, out); })
                .find("the training inputs hold no text: " + *dir_ / "empty.txt" + ", " + *dir_ / "blank.txt"),
            std::string::npos);
  EXPECT_NE(error_of([&] { train_sentencepiece({corpus}, 100, out); })
                .find("vocab size 100 is too small: <unk>, <s>, </s> and the 256 byte pieces take 259 ids"),
            std::string::npos);
  std::string message = error_of([&] { train_sentencepiece({corpus}, 270, out); });
  EXPECT_NE(message.find("vocab size 270 is too small for these inputs"), std::string::npos) << message;
  message = error_of([&] { train_sentencepiece({corpus}, 20000, out); });
  EXPECT_NE(message.find("vocab size 20000 is more than these inputs can fill: at most"), std::string::npos) << message;
  std::ofstream(*dir_ / "latin1.txt", std::ios::binary) << "fine\nalso fine\ncaf\xE9\n";
  message = error_of([&] { train_sentencepiece({corpus, *dir_ / "latin1.txt"}, 400, out); });
  EXPECT_NE(message.find(*dir_ / "latin1.txt" + ":3: not valid UTF-8 at byte offset 3 of the line"), std::string::npos)
      << message;
  EXPECT_TRUE(files_in(dir_->path() / "bad").empty()) << "a failed training writes nothing";
  // A model already there stays as it was when training fails.
  std::ofstream(out) << "old";
  EXPECT_THROW(train_sentencepiece({corpus}, 20000, out), UserError);
  EXPECT_EQ(files_in(dir_->path() / "bad"), std::vector<std::string>{"out.model"});
  std::ifstream old(out);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(old), {}), "old");
}

TEST_F(SentencePieceTest, LoadErrorsNameTheFile) {
  const std::string garbage = *dir_ / "garbage.model";
  std::ofstream(garbage) << "this is not a model";
  const std::string garbage_error = error_of([&] { load_tokenizer(garbage); });
  EXPECT_NE(garbage_error.find(garbage + " is not a SentencePiece model"), std::string::npos) << garbage_error;
  // In Loom's words: none of the library's source locations or failed-check texts.
  EXPECT_EQ(garbage_error.find(".cc("), std::string::npos) << garbage_error;
  EXPECT_EQ(garbage_error.find("["), std::string::npos) << garbage_error;
  // A model without an end-of-sentence piece, made by the spm_train tool.
  const std::string prefix = *dir_ / "no_eos";
  const std::string command = "spm_train --input=" + *dir_ / "corpus_b.txt" + " --model_prefix=" + prefix +
                              " --vocab_size=300 --model_type=bpe --eos_id=-1 --minloglevel=2 > /dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  EXPECT_NE(error_of([&] { load_tokenizer(prefix + ".model"); }).find("has no end-of-sentence piece"),
            std::string::npos);
}

}  // namespace
}  // namespace loom
