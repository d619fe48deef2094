#include "data/token_shard.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <stop_token>

#include "data/token_data_util.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::TempDir;

// One valid shard (vocabulary 1000, uint16) to damage in each test.
class TokenShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    docs_ = testing::random_documents(6, 10, 20, 1000, 11);
    const auto paths = testing::write_split(dir_.str(), "train", 1000, docs_);
    ASSERT_EQ(paths.size(), 1u);
    good_ = testing::read_bytes(paths[0]);
    tokens_ = testing::concatenated(docs_).size();
    index_at_ = shard_index_offset(TokenType::kU16, tokens_);
  }
  template <typename T>
  void put(std::string& bytes, size_t at, T value) {
    std::memcpy(bytes.data() + at, &value, sizeof(T));
  }
  // The error opening (and, when it opens, reading all of) `bytes` written as bad.tok.
  std::string error_of(const std::string& bytes) {
    testing::write_bytes(bad_, bytes);
    return testing::user_error_of([&] {
      TokenShard shard(bad_);
      std::vector<int32_t> all(shard.tokens());
      shard.read(0, all.size(), all.data());
    });
  }
  // Passes when the message names the damaged file and contains `part`.
  void expect_error(const std::string& bytes, const std::string& part) {
    const std::string message = error_of(bytes);
    EXPECT_NE(message.find(bad_), std::string::npos) << message;
    EXPECT_NE(message.find(part), std::string::npos) << "expected \"" << part << "\" in: " << message;
  }

  TempDir dir_{"token_shard"};
  std::string bad_ = dir_.file("bad.tok");
  testing::Documents docs_;
  std::string good_;
  uint64_t tokens_ = 0;
  uint64_t index_at_ = 0;
};

TEST_F(TokenShardTest, ValidShardOpensWithItsHeaderAndIndex) {
  testing::write_bytes(bad_, good_);
  TokenShard shard(bad_);
  EXPECT_EQ(shard.header().version, kShardVersion);
  EXPECT_EQ(shard.header().dtype, TokenType::kU16);
  EXPECT_EQ(shard.header().vocab_size, 1000u);
  EXPECT_EQ(shard.tokens(), tokens_);
  EXPECT_EQ(good_.size(), index_at_ + 8 * docs_.size());
  ASSERT_EQ(shard.documents(), docs_.size());
  uint64_t end = 0;
  for (size_t i = 0; i < docs_.size(); ++i) {
    end += docs_[i].size();
    EXPECT_EQ(shard.document_end(i), end) << "document " << i;
  }
  std::vector<int32_t> middle(5);
  shard.read(3, 5, middle.data());
  EXPECT_EQ(middle, std::vector<int32_t>(docs_[0].begin() + 3, docs_[0].begin() + 8));
  shard.verify_tokens();
}

TEST_F(TokenShardTest, ShortMissingOrForeignFilesAreNamed) {
  expect_error(good_.substr(0, 40), "is 40 bytes, shorter than its 64 byte header");
  expect_error("", "is 0 bytes");
  std::string foreign = good_;
  foreign[3] = 'X';
  expect_error(foreign, "is not a Loom token shard: its first 8 bytes (byte offset 0)");
  const std::string missing = dir_.file("missing.tok");
  const std::string message = testing::user_error_of([&] { TokenShard shard(missing); });
  EXPECT_NE(message.find("cannot open token shard " + missing), std::string::npos) << message;
}

TEST_F(TokenShardTest, BadHeaderFieldsNameTheirByteOffset) {
  std::string bytes = good_;
  put<uint32_t>(bytes, 8, 3);
  expect_error(bytes, "has format version 3 at byte offset 8 but this Loom reads versions 1 and 2");
  bytes = good_;
  put<uint32_t>(bytes, 12, 3);
  expect_error(bytes, "has dtype 3 at byte offset 12");
  bytes = good_;
  put<uint32_t>(bytes, 16, 70000);
  expect_error(bytes, "has vocabulary size 70000 at byte offset 16");
  put<uint32_t>(bytes, 16, 0);
  expect_error(bytes, "has vocabulary size 0 at byte offset 16");
  bytes = good_;
  put<uint32_t>(bytes, 20, 6);
  expect_error(bytes, "has unknown flags 6 at byte offset 20");
  put<uint32_t>(bytes, 20, kShardHasLossMask);
  expect_error(bytes, "has unknown flags 2 at byte offset 20 (version 1 defines only bit 0)");
}

TEST_F(TokenShardTest, SizesThatDisagreeWithTheHeaderAreTruncation) {
  const std::string claim = "tokens and " + std::to_string(docs_.size()) + " documents at byte offset 24";
  expect_error(good_.substr(0, good_.size() - 8), claim);
  expect_error(good_.substr(0, 100), "is 100 bytes but its header claims " + std::to_string(tokens_) + " " + claim);
  expect_error(good_ + "extra", claim);
  std::string bytes = good_;
  put<uint64_t>(bytes, 24, tokens_ + 1000);
  expect_error(bytes, "a truncated or damaged file");
  put<uint64_t>(bytes, 24, ~uint64_t{0});
  expect_error(bytes, "(a damaged header)");
}

TEST_F(TokenShardTest, IndexThatDisagreesWithTheShardNamesTheEntry) {
  std::string bytes = good_;
  const uint64_t first_end = docs_[0].size();
  put<uint64_t>(bytes, index_at_ + 8, first_end);  // entry 1 == entry 0
  expect_error(bytes, "document index entry 1 at byte offset " + std::to_string(index_at_ + 8) + " equal to " +
                          std::to_string(first_end) + " not above the previous entry, " +
                          std::to_string(first_end) + ": document ends must increase");
  bytes = good_;
  put<uint64_t>(bytes, index_at_, tokens_ + 5);
  expect_error(bytes, "document index entry 0 at byte offset " + std::to_string(index_at_) + " equal to " +
                          std::to_string(tokens_ + 5) + " beyond its " + std::to_string(tokens_) + " tokens");
  bytes = good_;
  const uint64_t last_at = index_at_ + 8 * (docs_.size() - 1);
  put<uint64_t>(bytes, last_at, tokens_ - 1);
  expect_error(bytes, "has a document index ending at token " + std::to_string(tokens_ - 1) + " at byte offset " +
                          std::to_string(last_at) + " but it holds " + std::to_string(tokens_) + " tokens");
}

TEST_F(TokenShardTest, ChangedHeaderOrIndexFailsTheChecksum) {
  std::string bytes = good_;
  put<uint32_t>(bytes, 16, 999);  // still a valid vocabulary
  expect_error(bytes, "is corrupt: the checksum at byte offset 56");
  bytes = good_;
  const uint64_t entry0 = docs_[0].size();
  put<uint64_t>(bytes, index_at_, entry0 - 1);  // still increasing
  expect_error(bytes, "is corrupt: the checksum at byte offset 56");
}

TEST_F(TokenShardTest, TokenOutsideTheVocabularyIsReportedWhereItIsRead) {
  std::string bytes = good_;
  const uint64_t position = 17;
  put<uint16_t>(bytes, 64 + 2 * position, 1000);
  testing::write_bytes(bad_, bytes);
  TokenShard shard(bad_);  // the open checks header and index only
  std::vector<int32_t> out(tokens_);
  shard.read(0, position, out.data());
  const std::string expected = "token shard " + bad_ + " holds token id 1000 at byte offset " +
                               std::to_string(64 + 2 * position) + " outside its vocabulary of 1000";
  EXPECT_NE(testing::user_error_of([&] { shard.read(10, 10, out.data()); }).find(expected), std::string::npos);
  EXPECT_NE(testing::user_error_of([&] { shard.verify_tokens(); }).find("do not match the checksum"), std::string::npos)
      << "a changed byte is first of all a checksum mismatch";

  // Under a checksum that matches (a shard another tool wrote), verify still finds the id.
  const std::vector<uint8_t> token_bytes(bytes.begin() + 64, bytes.begin() + 64 + 2 * static_cast<ptrdiff_t>(tokens_));
  ShardHeader header = shard.header();
  header.tokens_xxh64 = XXH64(token_bytes.data(), token_bytes.size(), 0);
  std::vector<uint64_t> ends(docs_.size());
  for (size_t i = 0; i < ends.size(); ++i) ends[i] = shard.document_end(i);
  header.meta_xxh64 = shard_meta_checksum(encode_shard_header(header), ends);
  const auto encoded = encode_shard_header(header);
  std::copy(encoded.begin(), encoded.end(), bytes.begin());
  testing::write_bytes(bad_, bytes);
  EXPECT_NE(testing::user_error_of([&] { TokenShard(bad_).verify_tokens(); }).find(expected), std::string::npos);
}

TEST_F(TokenShardTest, VerifyStopsWhenAskedTo) {
  testing::write_bytes(bad_, good_);
  const TokenShard shard(bad_);
  std::stop_source stop;
  EXPECT_TRUE(shard.verify_tokens(stop.get_token()));
  stop.request_stop();
  EXPECT_FALSE(shard.verify_tokens(stop.get_token())) << "stopped before its first chunk";
}

TEST_F(TokenShardTest, VerifyCatchesChangedTokensThatStayInTheVocabulary) {
  std::string bytes = good_;
  put<uint16_t>(bytes, 64 + 2 * 5, 999);
  put<uint16_t>(bytes, 64 + 2 * 6, 998);
  testing::write_bytes(bad_, bytes);
  TokenShard shard(bad_);
  const std::string message = testing::user_error_of([&] { shard.verify_tokens(); });
  EXPECT_NE(message.find("its tokens, byte offsets 64 to " + std::to_string(64 + 2 * tokens_) +
                         ", do not match the checksum at byte offset 40; prepare the dataset again with loom prepare"),
            std::string::npos)
      << message;
}

}  // namespace
}  // namespace loom
