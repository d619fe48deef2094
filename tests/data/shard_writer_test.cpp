#include "data/shard_writer.h"

#include <filesystem>

#include "data/token_dataset.h"
#include "data/token_data_util.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::Documents;
using testing::TempDir;

// Document lengths read back from the shards' indexes, joining a document that continues into
// the next shard.
std::vector<uint64_t> document_lengths(const TokenDataset& dataset) {
  std::vector<uint64_t> lengths;
  uint64_t pending = 0;
  for (size_t s = 0; s < dataset.shard_count(); ++s) {
    const TokenShard& shard = dataset.shard(s);
    uint64_t previous = 0;
    for (uint64_t i = 0; i < shard.documents(); ++i) {
      pending += shard.document_end(i) - previous;
      previous = shard.document_end(i);
      const bool continues = i + 1 == shard.documents() && (shard.header().flags & kShardLastDocumentContinues);
      if (!continues) {
        lengths.push_back(pending);
        pending = 0;
      }
    }
  }
  EXPECT_EQ(pending, 0u) << "the last document continues past the last shard";
  return lengths;
}

void expect_round_trip(uint32_t vocab, TokenType expected_type, uint64_t max_bytes, size_t min_shards) {
  TempDir dir("shard_writer");
  const Documents docs = testing::random_documents(300, 1, 200, vocab, vocab);
  const std::vector<std::string> paths = testing::write_split(dir.str(), "train", vocab, docs, max_bytes);
  EXPECT_GE(paths.size(), min_shards);
  EXPECT_EQ(paths.front(), dir.file("train-00000.tok"));
  for (const auto& entry : std::filesystem::directory_iterator(dir.str())) {
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << "left behind: " << entry.path();
  }
  const TokenDataset dataset = TokenDataset::open_split(dir.str(), "train");
  const std::vector<int32_t> expected = testing::concatenated(docs);
  ASSERT_EQ(dataset.tokens(), expected.size());
  EXPECT_EQ(dataset.vocab_size(), vocab);
  EXPECT_EQ(dataset.shard_count(), paths.size());
  EXPECT_EQ(dataset.shard(0).header().dtype, expected_type);
  std::vector<int32_t> got(expected.size());
  dataset.read(0, got.size(), got.data());
  EXPECT_EQ(got, expected);
  std::vector<uint64_t> lengths;
  for (const auto& d : docs) lengths.push_back(d.size());
  EXPECT_EQ(document_lengths(dataset), lengths);
  dataset.verify();
}

TEST(ShardWriterTest, RoundTripsUint16Tokens) {
  expect_round_trip(1000, TokenType::kU16, ShardWriter::kDefaultMaxShardBytes, 1);
  expect_round_trip(65536, TokenType::kU16, 4096, 10);  // the largest vocabulary uint16 holds
}

TEST(ShardWriterTest, RoundTripsUint32Tokens) {
  expect_round_trip(65537, TokenType::kU32, ShardWriter::kDefaultMaxShardBytes, 1);
  expect_round_trip(200000, TokenType::kU32, 4096, 20);
}

TEST(ShardWriterTest, RollsOverAtTheSizeBoundAndSplitsLongDocuments) {
  TempDir dir("shard_writer");
  const uint64_t bound = 1000;
  Documents docs = testing::random_documents(50, 5, 60, 500, 7);
  docs.insert(docs.begin() + 20, testing::random_documents(1, 1500, 1500, 500, 8)[0]);  // 3000 bytes
  const std::vector<std::string> paths = testing::write_split(dir.str(), "val", 500, docs, bound);
  ASSERT_GE(paths.size(), 5u);
  for (size_t i = 0; i < paths.size(); ++i) {
    const uint64_t size = std::filesystem::file_size(paths[i]);
    EXPECT_LE(size, bound) << paths[i];
    // Full: one more token and index entry (2 + 8 bytes, plus padding) would pass the bound.
    if (i + 1 < paths.size()) {
      EXPECT_GT(size, bound - 24) << paths[i];
    }
  }
  const TokenDataset dataset = TokenDataset::open_split(dir.str(), "val");
  std::vector<int32_t> got(dataset.tokens());
  dataset.read(0, got.size(), got.data());
  EXPECT_EQ(got, testing::concatenated(docs));
  std::vector<uint64_t> lengths;
  for (const auto& d : docs) lengths.push_back(d.size());
  EXPECT_EQ(document_lengths(dataset), lengths);
}

TEST(ShardWriterTest, AbandonedWriterLeavesNoFileUnderAFinalName) {
  TempDir dir("shard_writer");
  {
    ShardWriter writer(dir.str(), "train", 100, 512);
    for (const auto& d : testing::random_documents(40, 10, 30, 100, 3)) writer.add_document(d);
    // destroyed without finish()
  }
  bool any_temporary = false;
  for (const auto& entry : std::filesystem::directory_iterator(dir.str())) {
    any_temporary |= entry.path().string().find(".tmp.") != std::string::npos;
  }
  EXPECT_FALSE(any_temporary);
  EXPECT_FALSE(std::filesystem::exists(split_descriptor_path(dir.str(), "train")));
  EXPECT_NE(testing::user_error_of([&] { TokenDataset::open_split(dir.str(), "train"); })
                .find("cannot read the split descriptor " + split_descriptor_path(dir.str(), "train")),
            std::string::npos);
}

TEST(ShardWriterTest, BadDocumentsAndSettingsAreUserErrors) {
  TempDir dir("shard_writer");
  ShardWriter writer(dir.str(), "train", 100);
  const std::vector<int32_t> outside = {1, 2, 100};
  EXPECT_NE(testing::user_error_of([&] { writer.add_document(outside); })
                .find("document 0 of split train has token id 100 at position 2 outside the vocabulary of 100"),
            std::string::npos);
  const std::vector<int32_t> negative = {-1};
  EXPECT_THROW(writer.add_document(negative), UserError);
  EXPECT_THROW(writer.add_document(std::vector<int32_t>{}), UserError);
  EXPECT_NE(testing::user_error_of([&] { writer.finish(); }).find("received no documents"), std::string::npos);
  EXPECT_THROW(ShardWriter(dir.str(), "a/b", 100), UserError);
  EXPECT_THROW(ShardWriter(dir.str(), "", 100), UserError);
  EXPECT_THROW(ShardWriter(dir.str(), "train", 0), UserError);
  EXPECT_THROW(ShardWriter(dir.str(), "train", 100, 64), UserError);
}

}  // namespace
}  // namespace loom
