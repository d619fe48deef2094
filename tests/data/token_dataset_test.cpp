#include "data/token_dataset.h"

#include <filesystem>

#include "data/token_data_util.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::TempDir;

TEST(TokenDatasetTest, ReadsAnyRangeAcrossShardBoundaries) {
  TempDir dir("token_dataset");
  const testing::Documents docs = testing::random_documents(40, 1, 50, 300, 5);
  const auto paths = testing::write_split(dir.str(), "train", 300, docs, 256);
  ASSERT_GE(paths.size(), 5u);
  const std::vector<int32_t> all = testing::concatenated(docs);
  const TokenDataset by_descriptor = TokenDataset::open_split(dir.str(), "train");
  const TokenDataset by_paths(paths);
  EXPECT_EQ(by_descriptor.name(), split_descriptor_path(dir.str(), "train"));
  EXPECT_EQ(by_paths.name(), paths[0]);
  for (const TokenDataset* dataset : {&by_descriptor, &by_paths}) {
    ASSERT_EQ(dataset->tokens(), all.size());
    for (uint64_t begin : {uint64_t{0}, uint64_t{90}, uint64_t{95}, uint64_t{all.size() - 300}}) {
      for (uint64_t n : {uint64_t{1}, uint64_t{7}, uint64_t{300}}) {
        if (begin + n > all.size()) continue;
        std::vector<int32_t> got(n);
        dataset->read(begin, n, got.data());
        EXPECT_EQ(got, std::vector<int32_t>(all.begin() + static_cast<int64_t>(begin),
                                            all.begin() + static_cast<int64_t>(begin + n)))
            << "tokens [" << begin << ", " << begin + n << ")";
      }
    }
  }
}

TEST(TokenDatasetTest, ShardsThatDisagreeWithTheDescriptorAreNamed) {
  TempDir dir("token_dataset");
  const auto paths = testing::write_split(dir.str(), "train", 300, testing::random_documents(40, 1, 50, 300, 5), 256);
  // A later, interrupted run rewrote shard 1 with other documents.
  TempDir other("token_dataset");
  const auto others = testing::write_split(other.str(), "train", 300, testing::random_documents(40, 1, 50, 300, 6), 256);
  const std::string original = testing::read_bytes(paths[1]);
  std::filesystem::copy_file(others[1], paths[1], std::filesystem::copy_options::overwrite_existing);
  std::string message = testing::user_error_of([&] { TokenDataset::open_split(dir.str(), "train"); });
  EXPECT_NE(message.find("token shard " + paths[1] + " does not match its entry in " +
                         split_descriptor_path(dir.str(), "train")),
            std::string::npos)
      << message;
  testing::write_bytes(paths[1], original);
  std::filesystem::remove(paths[2]);
  message = testing::user_error_of([&] { TokenDataset::open_split(dir.str(), "train"); });
  EXPECT_NE(message.find("cannot open token shard " + paths[2]), std::string::npos) << message;
}

TEST(TokenDatasetTest, DescriptorErrorsNameTheFileAndLine) {
  TempDir dir("token_dataset");
  testing::write_split(dir.str(), "train", 300, testing::random_documents(3, 5, 9, 300, 5));
  const std::string path = split_descriptor_path(dir.str(), "train");
  std::string text = testing::read_bytes(path);
  testing::write_bytes(path, text + "\nshards { bogus: 1 }\n");
  std::string message = testing::user_error_of([&] { TokenDataset::open_split(dir.str(), "train"); });
  EXPECT_NE(message.find(path + ":"), std::string::npos) << message;
  EXPECT_NE(message.find("bogus"), std::string::npos) << message;
  testing::write_bytes(path, "format_version: 9\n");
  message = testing::user_error_of([&] { TokenDataset::open_split(dir.str(), "train"); });
  EXPECT_NE(message.find("has format_version 9"), std::string::npos) << message;
}

TEST(TokenDatasetTest, SplitMissingItsLastShardIsAnError) {
  TempDir dir("token_dataset");
  // One document across several shards: every shard but the last continues into the next.
  const auto paths = testing::write_split(dir.str(), "train", 300, testing::random_documents(1, 500, 500, 300, 5), 256);
  ASSERT_GE(paths.size(), 3u);
  const std::string path = split_descriptor_path(dir.str(), "train");
  std::string text = testing::read_bytes(path);
  const size_t last = text.rfind("shards {");
  std::string without_last = text.substr(0, last);
  // Keep the descriptor's totals consistent so that the continuation is what fails.
  const TokenShard last_shard(paths.back());
  const std::string total = "tokens: 500";
  without_last.replace(without_last.find(total), total.size(), "tokens: " + std::to_string(500 - last_shard.tokens()));
  testing::write_bytes(path, without_last);
  const std::string message = testing::user_error_of([&] { TokenDataset::open_split(dir.str(), "train"); });
  EXPECT_NE(message.find("ends with shard " + paths[paths.size() - 2] + " whose last document continues"),
            std::string::npos)
      << message;
}

TEST(TokenDatasetTest, ShardsOfDifferentVocabulariesDoNotMix) {
  TempDir dir("token_dataset");
  const auto a = testing::write_split(dir.str(), "a", 300, testing::random_documents(3, 5, 9, 300, 5));
  const auto b = testing::write_split(dir.str(), "b", 400, testing::random_documents(3, 5, 9, 400, 5));
  const std::string message = testing::user_error_of([&] { TokenDataset dataset({a[0], b[0]}); });
  EXPECT_NE(message.find("token shard " + b[0] + " has vocabulary size 400 but " + a[0]), std::string::npos)
      << message;
}

}  // namespace
}  // namespace loom
