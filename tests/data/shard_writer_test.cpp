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


// Masks of `docs`: a pseudo-random 0/1 byte per token, the last of each document 1.
std::vector<std::vector<uint8_t>> masks_of(const Documents& docs) {
  std::vector<std::vector<uint8_t>> masks;
  uint32_t x = 12345;
  for (const auto& d : docs) {
    std::vector<uint8_t> m(d.size());
    for (auto& b : m) {
      x = x * 1103515245u + 12345u;
      b = static_cast<uint8_t>((x >> 16) & 1);
    }
    m.back() = 1;
    masks.push_back(std::move(m));
  }
  return masks;
}

TEST(ShardWriterTest, LossMasksRoundTripAcrossShardsInFormatVersionTwo) {
  TempDir dir("shard_writer_mask");
  const Documents docs = testing::random_documents(200, 2, 150, 1000, 3);
  const auto masks = masks_of(docs);
  ShardWriter writer(dir.str(), "train", 1000, 4096, /*loss_mask=*/true);
  for (size_t i = 0; i < docs.size(); ++i) writer.add_document(docs[i], masks[i]);
  const std::vector<std::string> paths = writer.finish();
  ASSERT_GT(paths.size(), 3u);
  for (const std::string& path : paths) EXPECT_LE(std::filesystem::file_size(path), 4096u) << path;
  const TokenDataset dataset = TokenDataset::open_split(dir.str(), "train");
  EXPECT_EQ(dataset.shard(0).header().version, kShardMaskedVersion);
  ASSERT_TRUE(dataset.has_loss_mask());
  std::vector<uint8_t> expected;
  for (const auto& m : masks) expected.insert(expected.end(), m.begin(), m.end());
  std::vector<uint8_t> got(dataset.tokens());
  dataset.read_loss_mask(0, got.size(), got.data());
  EXPECT_EQ(got, expected);
  std::vector<int32_t> ids(dataset.tokens());
  dataset.read(0, ids.size(), ids.data());
  EXPECT_EQ(ids, testing::concatenated(docs));
  std::vector<uint64_t> ends;
  uint64_t end = 0;
  for (const auto& d : docs) ends.push_back(end += d.size());
  EXPECT_EQ(dataset.document_ends(), ends);
  dataset.verify();
  EXPECT_NE(testing::read_bytes(dir.file("train.split.pbtxt")).find("format_version: 2"), std::string::npos);
}

TEST(ShardWriterTest, AVersionOneSplitHasNoMaskAndCountsEveryToken) {
  TempDir dir("shard_writer_v1");
  const Documents docs = testing::random_documents(20, 2, 30, 1000, 4);
  testing::write_split(dir.str(), "train", 1000, docs);
  const TokenDataset dataset = TokenDataset::open_split(dir.str(), "train");
  EXPECT_EQ(dataset.shard(0).header().version, kShardVersion);
  EXPECT_FALSE(dataset.has_loss_mask());
  std::vector<uint8_t> mask(dataset.tokens(), 7);
  dataset.read_loss_mask(0, mask.size(), mask.data());
  EXPECT_EQ(mask, std::vector<uint8_t>(dataset.tokens(), 1));
}

TEST(ShardWriterTest, ADamagedMaskIsACorruptShard) {
  TempDir dir("shard_writer_mask_bad");
  const Documents docs = testing::random_documents(5, 10, 20, 1000, 5);
  const auto masks = masks_of(docs);
  ShardWriter writer(dir.str(), "train", 1000, ShardWriter::kDefaultMaxShardBytes, true);
  for (size_t i = 0; i < docs.size(); ++i) writer.add_document(docs[i], masks[i]);
  const std::string path = writer.finish().front();
  const std::string good = testing::read_bytes(path);
  const uint64_t tokens = testing::concatenated(docs).size();
  const uint64_t mask_at = shard_index_offset(TokenType::kU16, tokens) + 8 * docs.size();
  EXPECT_EQ(good.size(), mask_at + shard_mask_bytes(tokens));
  std::string bytes = good;
  bytes[mask_at + 3] = static_cast<char>(bytes[mask_at + 3] ^ 1);  // still 0 or 1: only the checksum sees it
  testing::write_bytes(path, bytes);
  std::string message = testing::user_error_of([&] { TokenShard(path).verify_tokens(); });
  EXPECT_NE(message.find("is corrupt: its loss mask, byte offsets " + std::to_string(mask_at)), std::string::npos)
      << message;
  bytes = good;
  bytes[mask_at + 2] = 5;
  testing::write_bytes(path, bytes);
  message = testing::user_error_of([&] {
    std::vector<uint8_t> mask(tokens);
    TokenShard(path).read_loss_mask(0, tokens, mask.data());
  });
  EXPECT_NE(message.find("holds loss mask byte 5 at byte offset " + std::to_string(mask_at + 2)), std::string::npos)
      << message;
  testing::write_bytes(path, good.substr(0, good.size() - 8));
  message = testing::user_error_of([&] { TokenShard shard(path); });
  EXPECT_NE(message.find("a truncated or damaged file"), std::string::npos) << message;
}

}  // namespace
}  // namespace loom
