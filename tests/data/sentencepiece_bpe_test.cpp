// SentencePieceBpe against the SentencePiece library itself (through its `spm_encode` tool): a
// hand-made model whose scores tie and run against the order of training, and models trained
// here, on random text of tricky characters (spaces, tabs, characters that are no piece, U+2581,
// combining marks). Also which models it declines.
#include "data/sentencepiece_bpe.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "data/sentencepiece_model.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/token_data_util.h"
#include "data/tokenizer.h"

namespace loom {
namespace {

using testing::TempDir;
using Ids = std::vector<int32_t>;
using Spec = SentencePieceModelSpec;

// Protobuf wire format, enough to write a ModelProto.
std::string varint(uint64_t v) {
  std::string out;
  do {
    out += static_cast<char>((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
    v >>= 7;
  } while (v != 0);
  return out;
}
std::string field_bytes(int field, const std::string& bytes) {
  return varint(static_cast<uint64_t>(field) << 3 | 2) + varint(bytes.size()) + bytes;
}
std::string field_varint(int field, uint64_t v) { return varint(static_cast<uint64_t>(field) << 3) + varint(v); }
std::string field_float(int field, float f) {
  std::string bytes(4, '\0');
  std::memcpy(bytes.data(), &f, 4);
  return varint(static_cast<uint64_t>(field) << 3 | 5) + bytes;
}

// A BPE model with byte fallback and the identity normaliser: <unk>, <s>, </s>, the 256 bytes,
// then `pieces` (text, score) in order.
std::string hand_made_model(const std::vector<std::pair<std::string, float>>& pieces) {
  std::string model;
  const auto piece = [&](const std::string& text, float score, int type) {
    model += field_bytes(1, field_bytes(1, text) + field_float(2, score) + field_varint(3, static_cast<uint64_t>(type)));
  };
  piece("<unk>", 0, 2);
  piece("<s>", 0, 3);
  piece("</s>", 0, 3);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    piece(name, 0, 6);
  }
  for (const auto& [text, score] : pieces) piece(text, score, 1);
  model += field_bytes(2, field_varint(3, 2) + field_varint(4, 259 + pieces.size()) + field_varint(35, 1) +
                              field_varint(40, 0) + field_varint(41, 1) + field_varint(42, 2) +
                              field_varint(43, static_cast<uint64_t>(-1)));
  model += field_bytes(3, field_bytes(1, "identity") + field_varint(3, 0) + field_varint(4, 0) + field_varint(5, 1));
  return model;
}

// Each line's ids from `spm_encode`, the library's own tool.
std::vector<Ids> spm_encode(const TempDir& dir, const std::string& model, const std::vector<std::string>& lines) {
  std::ofstream out(dir / "lines.txt", std::ios::binary);
  for (const std::string& line : lines) out << line << "\n";
  out.close();
  const std::string command =
      "spm_encode --model=" + model + " --output_format=id < " + dir / "lines.txt" + " > " + dir / "lines.ids";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  std::ifstream in(dir / "lines.ids");
  std::vector<Ids> ids;
  for (std::string line; std::getline(in, line);) {
    ids.emplace_back();
    std::istringstream fields(line);
    for (int32_t v; fields >> v;) ids.back().push_back(v);
  }
  return ids;
}

std::vector<std::string> random_lines(const std::vector<std::string>& alphabet, int count, int max_parts, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<size_t> part(0, alphabet.size() - 1);
  std::uniform_int_distribution<int> parts(0, max_parts);
  std::vector<std::string> lines(static_cast<size_t>(count));
  for (std::string& line : lines) {
    for (int k = parts(gen); k > 0; --k) line += alphabet[part(gen)];
  }
  return lines;
}

void expect_like_spm_encode(const TempDir& dir, const std::string& model, const std::vector<std::string>& lines) {
  const std::vector<Ids> expected = spm_encode(dir, model, lines);
  ASSERT_EQ(expected.size(), lines.size());
  const auto spec = parse_sentencepiece_model(testing::read_bytes(model));
  ASSERT_TRUE(spec.has_value());
  const auto bpe = SentencePieceBpe::create(*spec);
  ASSERT_NE(bpe, nullptr) << model;
  const auto tokenizer = load_tokenizer(model);  // the same, through Tokenizer
  for (size_t i = 0; i < lines.size(); ++i) {
    Ids got;
    bpe->encode(lines[i], got);
    ASSERT_EQ(got, expected[i]) << "line " << i << ": '" << lines[i] << "'";
    ASSERT_EQ(tokenizer->encode(lines[i]), expected[i]) << "line " << i;
  }
}

TEST(SentencePieceBpeTest, TiesAndScoresAgainstTrainingOrderAsTheLibraryHasThem) {
  TempDir dir("spm_bpe_hand");
  const std::string space = "\xE2\x96\x81";
  // "bc" outscores "ab"; "ca" ties "aba"; "abc" from "ab"+"c" or "a"+"bc"; "▁a" ties "ab".
  testing::write_bytes(dir / "hand.model",
                       hand_made_model({{"a", 0}, {"b", 0}, {"c", 0}, {space, 0}, {"ab", -1}, {"bc", -0.5f},
                                        {"abc", -3}, {"ca", -2}, {"aba", -2}, {"ba", -4}, {space + "a", -1},
                                        {"cc", -2}, {"ccc", 1}, {"\xC3\xA9", 0}, {"\xC3\xA9" "a", -1.5f}}));
  expect_like_spm_encode(dir, dir / "hand.model",
                         random_lines({"a", "b", "c", " ", "d", "\xC3\xA9", "\xE4\xB8\xAD", "\t"}, 3000, 24, 1));
}

TEST(SentencePieceBpeTest, TrainedModelsOnTrickyText) {
  TempDir dir("spm_bpe_trained");
  const std::vector<std::string> words = {"the", "model", " ", "  ", "\t", "caf\xC3\xA9", "ka", "lo", "mi", "2024",
                                          "(see", ").", "\xE4\xB8\xAD\xE6\x96\x87", "it's", "-"};
  std::ofstream corpus(dir / "corpus.txt", std::ios::binary);
  for (const std::string& line : random_lines(words, 3000, 20, 2)) corpus << line << "\n";
  corpus.close();
  // Unseen characters fall back to bytes; U+2581 and a space are one symbol; combining marks.
  std::vector<std::string> alphabet = words;
  for (const char* extra : {"\xF0\x9F\x98\x80", "\xE2\x96\x81", "e\xCC\x81", "\xC2\xA0", "Z", "\x01"}) {
    alphabet.push_back(extra);
  }
  for (const int vocab : {300, 1000}) {
    const std::string model = dir / ("v" + std::to_string(vocab) + ".model");
    train_sentencepiece({dir / "corpus.txt"}, vocab, model, {.threads = 1});
    expect_like_spm_encode(dir, model, random_lines(alphabet, 2000, 30, static_cast<uint32_t>(vocab)));
  }
}

TEST(SentencePieceBpeTest, ModelsItDoesNotReproduceAreLeftToTheLibrary) {
  TempDir dir("spm_bpe_declined");
  const std::string space = "\xE2\x96\x81";
  const std::string good = hand_made_model({{"a", 0}, {"b", 0}, {space, 0}, {"ab", -1}});
  auto spec = parse_sentencepiece_model(good);
  ASSERT_TRUE(spec.has_value());
  EXPECT_NE(SentencePieceBpe::create(*spec), nullptr);
  Spec s = *spec;
  s.model_type = Spec::ModelType::kUnigram;
  EXPECT_EQ(SentencePieceBpe::create(s), nullptr) << "unigram";
  s = *spec;
  s.byte_fallback = false;
  EXPECT_EQ(SentencePieceBpe::create(s), nullptr) << "no byte fallback";
  s = *spec;
  s.add_dummy_prefix = true;
  EXPECT_EQ(SentencePieceBpe::create(s), nullptr) << "dummy prefix";
  s = *spec;
  s.pieces.push_back({"<mask>", 0, Spec::PieceType::kUserDefined});
  EXPECT_EQ(SentencePieceBpe::create(s), nullptr) << "user-defined piece";
  s = *spec;
  s.pieces.push_back({"xy", -2, Spec::PieceType::kNormal});
  EXPECT_EQ(SentencePieceBpe::create(s), nullptr) << "characters x and y are no pieces";
  s = *spec;
  s.pieces.erase(s.pieces.begin() + 3 + 0x41);
  EXPECT_EQ(SentencePieceBpe::create(s), nullptr) << "a byte piece missing";
  EXPECT_FALSE(parse_sentencepiece_model(good.substr(0, good.size() - 3)).has_value()) << "truncated";
}

}  // namespace
}  // namespace loom
