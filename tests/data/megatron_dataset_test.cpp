// MegatronDataset: datasets written by an independent Python writer (the format as Megatron-LM
// writes it) read back token for token and document for document in every integer dtype, the
// path forms that name one, ids checked where they are read, and every damaged file — truncated,
// foreign, inconsistent — one sentence naming the file.
#include "data/megatron_dataset.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/megatron_writer.h"
#include "data/token_data_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::MegatronDocuments;
using testing::TempDir;
using testing::user_error_of;
using testing::write_megatron_dataset;

// Documents of 1 to 3 sequences of 0 to 40 ids in [lo, hi]; document 3 has no sequence at all and
// document 5 an empty one, as Megatron's builder can write them.
MegatronDocuments random_megatron_documents(int count, int64_t lo, int64_t hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> sequences(1, 3), length(0, 40);
  std::uniform_int_distribution<int64_t> id(lo, hi);
  MegatronDocuments docs(static_cast<size_t>(count));
  for (size_t d = 0; d < docs.size(); ++d) {
    if (d == 3) continue;
    docs[d].resize(static_cast<size_t>(sequences(gen)));
    for (auto& sequence : docs[d]) {
      sequence.resize(d == 5 ? 0 : static_cast<size_t>(length(gen)));
      for (int64_t& t : sequence) t = id(gen);
    }
  }
  return docs;
}

std::vector<int32_t> stream_of(const MegatronDocuments& docs) {
  std::vector<int32_t> out;
  for (const auto& doc : docs) {
    for (const auto& sequence : doc) {
      for (int64_t t : sequence) out.push_back(static_cast<int32_t>(t));
    }
  }
  return out;
}

std::vector<int32_t> read_all(const TokenStream& stream) {
  std::vector<int32_t> out(stream.tokens());
  stream.read(0, out.size(), out.data());
  return out;
}

TEST(MegatronDatasetTest, EveryIntegerDtypeReadsBackTokensAndDocuments) {
  TempDir dir("megatron_dtypes");
  for (const std::string dtype : {"uint8", "int8", "int16", "int32", "int64", "uint16"}) {
    SCOPED_TRACE(dtype);
    const int64_t hi = dtype == "int8" ? 127 : dtype == "uint8" ? 255 : dtype == "int16" ? 32000 : 60000;
    const MegatronDocuments docs = random_megatron_documents(40, 0, hi, 7);
    const std::string prefix = dir / ("corpus_" + dtype + "_text_document");
    write_megatron_dataset(prefix, dtype, docs);
    const MegatronDataset dataset(prefix, 0);
    const std::vector<int32_t> expected = stream_of(docs);
    EXPECT_EQ(dataset.dtype_name(), dtype);
    EXPECT_EQ(dataset.name(), prefix + ".bin");
    EXPECT_EQ(dataset.tokens(), expected.size());
    EXPECT_EQ(read_all(dataset), expected);
    int32_t largest = 0;
    for (int32_t t : expected) largest = std::max(largest, t);
    EXPECT_EQ(dataset.vocab_size(), static_cast<uint32_t>(largest) + 1) << "scanned: the largest id + 1";
    ASSERT_EQ(dataset.documents(), docs.size());
    uint64_t sequences = 0, at = 0;
    for (size_t d = 0; d < docs.size(); ++d) {
      uint64_t length = 0;
      for (const auto& sequence : docs[d]) length += sequence.size();
      sequences += docs[d].size();
      EXPECT_EQ(dataset.document_begin(d), at) << "document " << d;
      EXPECT_EQ(dataset.document_end(d), at + length) << "document " << d;
      at += length;
    }
    EXPECT_EQ(dataset.sequences(), sequences);
    // Any range, the last token included.
    std::vector<int32_t> part(17);
    for (const uint64_t begin : {uint64_t{0}, uint64_t{5}, expected.size() - 17}) {
      dataset.read(begin, part.size(), part.data());
      EXPECT_TRUE(std::equal(part.begin(), part.end(), expected.begin() + static_cast<ptrdiff_t>(begin))) << begin;
    }
    EXPECT_EQ(MegatronDataset(prefix, 70000).vocab_size(), 70000u) << "given: taken as is";
  }
}

TEST(MegatronDatasetTest, APrefixOrEitherFileNamesTheDataset) {
  TempDir dir("megatron_prefix");
  const std::string prefix = dir / "web_text_document";
  write_megatron_dataset(prefix, "uint16", {{{1, 2, 3}}});
  EXPECT_EQ(MegatronDataset::prefix_of(prefix), prefix);
  EXPECT_EQ(MegatronDataset::prefix_of(prefix + ".bin"), prefix);
  EXPECT_EQ(MegatronDataset::prefix_of(prefix + ".idx"), prefix);
  EXPECT_EQ(MegatronDataset::prefix_of(dir.str()), "") << "a directory: a Loom dataset";
  EXPECT_EQ(MegatronDataset::prefix_of(dir / "other"), "");
  fs::remove(prefix + ".idx");
  EXPECT_EQ(MegatronDataset::prefix_of(prefix), prefix) << "one file is enough to say what was meant";
  EXPECT_EQ(user_error_of([&] { MegatronDataset(prefix, 0); }),
            "cannot open Megatron index " + prefix + ".idx (No such file or directory)");
}

TEST(MegatronDatasetTest, IdsOutsideTheVocabularyAreNamedWhereTheyAreRead) {
  TempDir dir("megatron_vocab");
  const std::string prefix = dir / "d";
  write_megatron_dataset(prefix, "int16", {{{5, 6, 7}}, {{8, -3, 9}}});
  const MegatronDataset dataset(prefix, 8);
  std::vector<int32_t> out(6);
  dataset.read(0, 2, out.data());
  EXPECT_EQ(user_error_of([&] { dataset.read(0, 4, out.data()); }),
            "Megatron data file " + prefix + ".bin holds token id 8 at byte offset 6 outside the vocabulary of 8 "
            "(set model.vocab_size to the tokenizer's vocabulary, or a corrupt file)");
  EXPECT_EQ(user_error_of([&] { MegatronDataset(prefix, 100).read(3, 3, out.data()); }),
            "Megatron data file " + prefix + ".bin holds token id -3 at byte offset 8 but ids cannot be negative (a "
            "corrupt file)");
  EXPECT_EQ(user_error_of([&] { MegatronDataset(prefix, 0); }),
            "Megatron data file " + prefix + ".bin holds token id -3 at byte offset 8 but ids cannot be negative (a "
            "corrupt file)")
      << "the scan for the vocabulary finds it too";
}

class MegatronCorruptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_megatron_dataset(prefix_, "uint16", {{{1, 2, 3}, {4, 5}}, {{6, 7, 8, 9}}, {{10}}});
    idx_ = testing::read_bytes(prefix_ + ".idx");
    bin_ = testing::read_bytes(prefix_ + ".bin");
    ASSERT_EQ(idx_.size(), 34u + 12 * 4 + 8 * 4);
    ASSERT_EQ(bin_.size(), 20u);
  }

  template <typename T>
  void put(std::string& bytes, size_t at, T value) {
    std::memcpy(bytes.data() + at, &value, sizeof(T));
  }

  // The error of opening the dataset with this .idx and .bin.
  std::string error_with(const std::string& idx, const std::string& bin) {
    testing::write_bytes(prefix_ + ".idx", idx);
    testing::write_bytes(prefix_ + ".bin", bin);
    return user_error_of([&] { MegatronDataset(prefix_, 0); });
  }

  TempDir dir_{"megatron_corrupt"};
  std::string prefix_ = dir_ / "d";
  std::string idx_, bin_;
  // Byte offsets in the .idx of 4 sequences and 4 document index entries.
  static constexpr size_t kLengthsAt = 34, kPointersAt = 34 + 16, kDocumentsAt = 34 + 48;
};

TEST_F(MegatronCorruptTest, ShortOrForeignIndexes) {
  const std::string idx = prefix_ + ".idx";
  EXPECT_EQ(error_with(idx_.substr(0, 20), bin_),
            "Megatron index " + idx + " is 20 bytes, shorter than its 34 byte header (a truncated file, or not an index)");
  std::string bad = idx_;
  bad[0] = 'X';
  EXPECT_EQ(error_with(bad, bin_),
            idx + " is not a Megatron-LM index: its first 9 bytes (byte offset 0) are not the magic MMIDIDX\\0\\0");
  bad = idx_;
  put<uint64_t>(bad, 9, 2);
  EXPECT_EQ(error_with(bad, bin_), "Megatron index " + idx + " has version 2 at byte offset 9 but Loom reads version 1");
  bad = idx_;
  put<uint8_t>(bad, 17, 7);
  EXPECT_EQ(error_with(bad, bin_), "Megatron index " + idx +
                                       " has dtype float32 (code 7) at byte offset 17 but Loom trains on integer token "
                                       "ids; write the dataset with an integer dtype");
  put<uint8_t>(bad, 17, 9);
  EXPECT_EQ(error_with(bad, bin_),
            "Megatron index " + idx + " has dtype code 9 at byte offset 17 but Megatron defines only 1 to 8");
  EXPECT_EQ(error_with(idx_.substr(0, idx_.size() - 8), bin_),
            "Megatron index " + idx + " is " + std::to_string(idx_.size() - 8) +
                " bytes but its header counts 4 sequences and 4 document index entries at byte offsets 18 and 26 which "
                "take " + std::to_string(idx_.size()) + " bytes (a truncated or damaged file)");
  write_megatron_dataset(prefix_, "uint16", {{{1, 2}}, {{3}}}, /*multimodal=*/true);
  EXPECT_EQ(user_error_of([&] { MegatronDataset(prefix_, 0); }),
            "Megatron index " + idx + " has a mode byte per sequence after its document index: a multimodal dataset; "
            "Loom reads text datasets only");
}

TEST_F(MegatronCorruptTest, SequencesMustLieBackToBackInsideTheBin) {
  const std::string idx = prefix_ + ".idx", bin = prefix_ + ".bin";
  EXPECT_EQ(error_with(idx_, bin_.substr(0, 15)),
            "Megatron index " + idx + " puts sequence 2 (4 tokens) at byte pointer 10 (byte offset " +
                std::to_string(kPointersAt + 16) + "), past the end of " + bin +
                " which is 15 bytes: a truncated .bin, or the index of another dataset");
  std::string bad = idx_;
  put<int64_t>(bad, kPointersAt + 8, 1000);
  EXPECT_NE(error_with(bad, bin_).find("puts sequence 1 (2 tokens) at byte pointer 1000 (byte offset 58), past the end of"),
            std::string::npos);
  bad = idx_;
  put<int64_t>(bad, kPointersAt + 16, 2);  // sequence 2 over sequence 0
  EXPECT_EQ(error_with(bad, bin_),
            "Megatron index " + idx + " puts sequence 2 at byte pointer 2 (byte offset 66) but the sequences before it "
            "end at 10; Loom reads datasets whose sequences lie back to back, as Megatron's builder writes them");
  bad = idx_;
  put<int32_t>(bad, kLengthsAt + 4, -1);
  EXPECT_EQ(error_with(bad, bin_),
            "Megatron index " + idx + " gives sequence 1 the length -1 at byte offset 38 (a damaged file)");
  EXPECT_EQ(error_with(idx_, bin_ + "xx"), "Megatron data file " + bin + " is 22 bytes but its index " + idx +
                                                " accounts for 20 (the two files do not belong together)");
}

TEST_F(MegatronCorruptTest, TheDocumentIndexRisesFromZeroToTheSequenceCount) {
  const std::string idx = prefix_ + ".idx";
  std::string bad = idx_;
  put<int64_t>(bad, kDocumentsAt, 1);
  EXPECT_EQ(error_with(bad, bin_), "Megatron index " + idx + " has document index entry 0 equal to 1 at byte offset " +
                                       std::to_string(kDocumentsAt) + " but it must be 0");
  bad = idx_;
  put<int64_t>(bad, kDocumentsAt + 16, 1);  // 0, 2, 1, 4
  EXPECT_EQ(error_with(bad, bin_), "Megatron index " + idx + " has document index entry 2 equal to 1 at byte offset " +
                                       std::to_string(kDocumentsAt + 16) +
                                       " but entries must rise from 0 to the sequence count 4 (the previous is 2)");
  bad = idx_;
  put<int64_t>(bad, kDocumentsAt + 24, 3);
  EXPECT_EQ(error_with(bad, bin_), "Megatron index " + idx + " has a document index ending at sequence 3 at byte offset " +
                                       std::to_string(kDocumentsAt + 24) + " but it holds 4 sequences");
  EXPECT_EQ(error_with(idx_, bin_), "(no error)");
}

TEST(MegatronDatasetTest, TheLoaderDrawsWindowsOfItsStream) {
  TempDir dir("megatron_loader");
  const std::string prefix = dir / "d";
  const MegatronDocuments docs = random_megatron_documents(50, 0, 499, 11);
  write_megatron_dataset(prefix, "uint16", docs);
  const MegatronDataset dataset(prefix, 500);
  const std::vector<int32_t> stream = stream_of(docs);
  TokenLoader loader({{&dataset, 1.0}}, LoaderOptions{BatchLayout{8, 2, 1, 1, 0}, true, 0, {}, -1, LongExamples::kTruncate}, LoaderState{3, 0});
  std::vector<int32_t> tokens(8), targets(8);
  for (uint64_t i = 0; i < 20; ++i) {
    loader.read_sample(i, tokens.data(), targets.data());
    const uint64_t begin = loader.order().at(i).window * 8;
    EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), stream.begin() + static_cast<ptrdiff_t>(begin))) << i;
    EXPECT_TRUE(std::equal(targets.begin(), targets.end(), stream.begin() + static_cast<ptrdiff_t>(begin) + 1)) << i;
  }
}

}  // namespace
}  // namespace loom
