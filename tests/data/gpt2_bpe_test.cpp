// GPT-2 byte-level BPE with a hand-made vocabulary (tests/data/gpt2_test_files.h): exact ids
// worked out by hand, round trips, eos, threads, and one clear error per kind of bad file.
#include "data/gpt2_bpe.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "data/gpt2_test_files.h"
#include "data/utf8.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;
using testing::TempDir;

TEST(Gpt2BpeTest, ByteCharactersAreGpt2s) {
  EXPECT_EQ(uint32_t{gpt2_byte_to_char('A')}, uint32_t{U'A'});
  EXPECT_EQ(uint32_t{gpt2_byte_to_char('!')}, uint32_t{U'!'});
  EXPECT_EQ(uint32_t{gpt2_byte_to_char(0xA1)}, uint32_t{U'\u00A1'});
  EXPECT_EQ(uint32_t{gpt2_byte_to_char(0xFF)}, uint32_t{U'\u00FF'});
  EXPECT_EQ(uint32_t{gpt2_byte_to_char(0x00)}, uint32_t{U'\u0100'});
  EXPECT_EQ(uint32_t{gpt2_byte_to_char('\n')}, uint32_t{U'\u010A'});  // Ċ
  EXPECT_EQ(uint32_t{gpt2_byte_to_char(' ')}, uint32_t{U'\u0120'});   // Ġ
  EXPECT_EQ(uint32_t{gpt2_byte_to_char(0x7F)}, uint32_t{U'\u0121'});
  EXPECT_EQ(uint32_t{gpt2_byte_to_char(0xA0)}, uint32_t{U'\u0142'});
  EXPECT_EQ(uint32_t{gpt2_byte_to_char(0xAD)}, uint32_t{U'\u0143'});  // the last of the 68 remapped bytes
  for (int b = 0; b < 256; ++b) EXPECT_EQ(gpt2_char_to_byte(gpt2_byte_to_char(static_cast<uint8_t>(b))), b);
  EXPECT_EQ(gpt2_char_to_byte(U' '), -1);
  EXPECT_EQ(gpt2_char_to_byte(U'\u0144'), -1);
  EXPECT_EQ(gpt2_char_to_byte(U'\u00AD'), -1);
}

TEST(Gpt2BpeTest, HandMadeVocabularyGivesHandCheckedIds) {
  TempDir dir("gpt2_ids");
  testing::write_tiny_gpt2(dir.path());
  const auto tok = load_gpt2_bpe(dir / "encoder.json", dir / "vocab.bpe");
  EXPECT_EQ(tok->vocab_size(), testing::kTinyGpt2Vocab);
  EXPECT_EQ(tok->eos_id(), testing::kTinyGpt2Eos);
  EXPECT_NE(tok->description().find("GPT-2 byte-level BPE, 267 tokens (10 merges), eos <|endoftext|> = 266"),
            std::string::npos)
      << tok->description();
  const std::pair<std::string, Ids> cases[] = {
      // "the" -> t he; " cat" has no merges; 's; " 12" -> Ġ 12
      {"the cat's 12", {116, 257, 32, 99, 97, 116, 259, 32, 260}},
      // " the" -> Ġt he -> Ġthe; " this" -> Ġt h is; " is" -> Ġ is -> Ġis
      {" the this is", {258, 256, 104, 264, 265}},
      // "a" "  " " b" "\n" "\n" "c" "\n\n": whitespace runs give their last character back
      {"a   b\n\nc\n\n", {97, 261, 32, 98, 10, 10, 99, 262}},
      {"caf\xC3\xA9", {99, 97, 102, 263}},
      {"hi \xF0\x9F\x98\x80!", {104, 105, 32, 240, 159, 152, 128, 33}},
      {"I'll", {73, 39, 108, 108}},
      {"<|endoftext|>", {60, 124, 101, 110, 100, 111, 102, 116, 101, 120, 116, 124, 62}},  // text, not eos
      {"", {}},
  };
  for (const auto& [text, ids] : cases) {
    EXPECT_EQ(tok->encode(text), ids) << text;
    EXPECT_EQ(tok->decode(ids), text);
    EXPECT_EQ(tok->encode(text), ids) << text << " (again, from the cache)";
  }
  Ids appended = {7};
  tok->encode_into("the", appended);
  tok->encode_into(" the", appended);
  EXPECT_EQ(appended, (Ids{7, 116, 257, 258}));
  EXPECT_EQ(tok->decode(std::vector<int32_t>{testing::kTinyGpt2Eos}), "<|endoftext|>");
  // Every byte decodes to itself, so every valid text round-trips.
  std::string all;
  for (char32_t cp = 1; cp < 0x3000; cp += 7) utf8_append(all, cp);
  EXPECT_EQ(tok->decode(tok->encode(all)), all);
}

TEST(Gpt2BpeTest, BadTextAndIdsAreUserErrors) {
  TempDir dir("gpt2_bad_text");
  const auto tok = load_gpt2_bpe(testing::write_tiny_gpt2(dir.path()) / "encoder.json", dir / "vocab.bpe");
  try {
    tok->encode("good \xC3(");
    FAIL() << "expected InvalidUtf8";
  } catch (const InvalidUtf8& e) {
    EXPECT_EQ(e.offset(), 5u);
    EXPECT_NE(std::string(e.what()).find("the text to encode is not valid UTF-8 at byte offset 5"), std::string::npos)
        << e.what();
  }
  try {
    tok->decode(std::vector<int32_t>{1, 267});
    FAIL() << "expected UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("token id 267 at position 1 is outside the vocabulary (ids 0 .. 266)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(tok->decode(std::vector<int32_t>{-1}), UserError);
}

TEST(Gpt2BpeTest, ManyThreadsEncodeLikeOne) {
  TempDir dir("gpt2_threads");
  const auto tok = load_gpt2_bpe(testing::write_tiny_gpt2(dir.path()) / "encoder.json", dir / "vocab.bpe");
  std::string text;
  for (int i = 0; i < 3000; ++i) {
    text += "the cat's " + std::to_string(i % 97) + " is\n\n  " + std::string(static_cast<size_t>(i % 70), 'x') + " ";
  }
  const Ids expected = tok->encode(text);
  std::vector<Ids> got(8);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep) got[t] = tok->encode(text);
    });
  }
  for (std::thread& th : threads) th.join();
  for (size_t t = 0; t < got.size(); ++t) EXPECT_EQ(got[t], expected) << "thread " << t;
  EXPECT_EQ(tok->decode(expected), text);
}

// Each kind of bad file: the error names the file and where in it.
class Gpt2BadFilesTest : public ::testing::Test {
 protected:
  void SetUp() override { testing::write_tiny_gpt2(dir_.path()); }
  std::string error_of_load() {
    try {
      load_gpt2_bpe(dir_ / "encoder.json", dir_ / "vocab.bpe");
    } catch (const UserError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no error";
    return "";
  }
  void write(const std::string& name, const std::string& content) {
    std::ofstream(dir_.path() / name, std::ios::binary) << content;
  }
  std::string read(const std::string& name) {
    std::ifstream in(dir_.path() / name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void expect_error(const std::string& needle) {
    const std::string message = error_of_load();
    EXPECT_NE(message.find(needle), std::string::npos) << "expected: " << needle << "\ngot: " << message;
  }
  TempDir dir_{"gpt2_bad_files"};
};

TEST_F(Gpt2BadFilesTest, MissingFiles) {
  fs::remove(dir_.path() / "vocab.bpe");
  expect_error("cannot read GPT-2 merges file " + dir_ / "vocab.bpe");
  fs::remove(dir_.path() / "encoder.json");
  expect_error("cannot read GPT-2 encoder " + dir_ / "encoder.json");
}

TEST_F(Gpt2BadFilesTest, EncoderJsonProblems) {
  const std::string good = read("encoder.json");
  const std::string enc = dir_ / "encoder.json";
  write("encoder.json", good.substr(0, good.size() - 3));  // the closing brace cut off
  expect_error(enc + ": invalid JSON at byte offset " + std::to_string(good.size() - 3));
  write("encoder.json", "[1, 2]");
  expect_error(enc + ": expected a JSON object mapping tokens to ids, found an array");
  write("encoder.json", R"({"a": 0, "b": 1.5})");
  expect_error(enc + ": token 'b' at byte offset 14 has id 1.5 but ids must be integers 0 .. 1");
  write("encoder.json", R"({"a": 0, "b": "1"})");
  expect_error("has id a string");
  write("encoder.json", R"({"a": 0, "b": 2})");
  expect_error("has id 2 but ids must be integers 0 .. 1");
  write("encoder.json", R"({"a": 1, "b": 1})");
  expect_error(enc + ": id 1 is given to two tokens (at byte offsets 6 and 14)");
  write("encoder.json", R"({"a": 0, " b": 1})");
  expect_error(enc + ": token ' b' at byte offset 15 holds U+0020 which stands for no byte");
  write("encoder.json", R"({"a": 0, "a": 1})");
  expect_error("token 'a' appears twice");
  write("encoder.json", R"({"a": 0, "<|endoftext|>": 1})");
  expect_error(enc + ": no token for byte 0x00 (spelled '\xC4\x80');");
  // All bytes but no <|endoftext|>.
  std::string no_eos = good.substr(0, good.find(",\n\"<|endoftext|>\"")) + "}";
  no_eos = no_eos.substr(0, no_eos.find(",\n\"\xC4\xA0t\"")) + "}";  // and no merges
  write("encoder.json", no_eos);
  expect_error(enc + ": no <|endoftext|> token; Loom uses it as the end-of-document token");
}

TEST_F(Gpt2BadFilesTest, MergeFileProblems) {
  const std::string bpe = dir_ / "vocab.bpe";
  const std::string good = read("vocab.bpe");
  write("vocab.bpe", good + "h\n");
  expect_error(bpe + ":12: expected two tokens separated by one space, found 'h'");
  write("vocab.bpe", good + "h  e\n");
  expect_error(bpe + ":12: expected two tokens separated by one space");
  write("vocab.bpe", good + "he x\n");
  expect_error(bpe + ":12: merge 'he x' makes 'hex', which is not a token of " + dir_ / "encoder.json");
  write("vocab.bpe", good + "hex t\n");
  expect_error(bpe + ":12: merge 'hex t' names 'hex', which is not a token of");
  write("vocab.bpe", good + "a b\xFF\n");
  expect_error(bpe + ":12: not valid UTF-8 at byte offset 3 of the line");
  write("vocab.bpe", good + "a \xE4\xB8\xAD\n");
  expect_error(bpe + ":12: token '\xE4\xB8\xAD' holds U+4E2D which stands for no byte");
  write("vocab.bpe", good + "h e\n");
  expect_error(bpe + ":12: merge 'h e' repeats line 3");
  write("vocab.bpe", "#version: 0.2\n\xC4\xA0 t\n\nh e\n");
  expect_error(bpe + ":3: blank line among the merges");
  // Trailing blank lines, CRLF line ends and no "#version" line are all fine.
  write("vocab.bpe", "\xC4\xA0 t\r\nh e\r\n\r\n\n");
  const auto tok = load_gpt2_bpe(dir_ / "encoder.json", bpe);
  EXPECT_EQ(tok->encode(" the"), (Ids{256, 257}));
}

}  // namespace
}  // namespace loom
