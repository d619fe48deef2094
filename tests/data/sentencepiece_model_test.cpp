// parse_sentencepiece_model: the pieces and settings of a model trained here, read from its file.
#include "data/sentencepiece_model.h"

#include <gtest/gtest.h>

#include <fstream>

#include "data/sentencepiece_tokenizer.h"
#include "data/token_data_util.h"

namespace loom {
namespace {

using testing::TempDir;
using Spec = SentencePieceModelSpec;

TEST(SentencePieceModelTest, ReadsPiecesAndSettingsOfATrainedModel) {
  TempDir dir("spm_model_spec");
  std::ofstream(dir / "corpus.txt") << "the model of the text\nthe end of the model\n";
  train_sentencepiece({dir / "corpus.txt"}, 280, dir / "m.model", {.threads = 1});
  const auto spec = parse_sentencepiece_model(testing::read_bytes(dir / "m.model"));
  ASSERT_TRUE(spec.has_value());
  ASSERT_EQ(spec->pieces.size(), 280u);
  EXPECT_EQ(spec->pieces[0].text, "<unk>");
  EXPECT_EQ(spec->pieces[0].type, Spec::PieceType::kUnknown);
  EXPECT_EQ(spec->pieces[2].text, "</s>");
  EXPECT_EQ(spec->pieces[2].type, Spec::PieceType::kControl);
  EXPECT_EQ(spec->pieces[3 + 0x41].text, "<0x41>");
  EXPECT_EQ(spec->pieces[3 + 0x41].type, Spec::PieceType::kByte);
  EXPECT_EQ(spec->pieces[259].type, Spec::PieceType::kNormal);
  EXPECT_GT(spec->pieces[259].score, spec->pieces[260].score) << "BPE scores fall in training order";
  EXPECT_EQ(spec->model_type, Spec::ModelType::kBpe);
  EXPECT_TRUE(spec->byte_fallback);
  EXPECT_TRUE(spec->identity_normalizer());
  EXPECT_TRUE(spec->escape_whitespaces);
}

TEST(SentencePieceModelTest, MalformedBytesAreNoModel) {
  EXPECT_FALSE(parse_sentencepiece_model("\x0A\x05" "ab").has_value()) << "a length past the end";
  EXPECT_FALSE(parse_sentencepiece_model("\x0F").has_value()) << "wire type 7";
  const auto empty = parse_sentencepiece_model("");
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->pieces.empty());
  EXPECT_FALSE(empty->identity_normalizer()) << "no normaliser spec: the defaults add a dummy prefix";
}

}  // namespace
}  // namespace loom
