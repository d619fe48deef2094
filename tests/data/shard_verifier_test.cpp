// ShardVerifier: shards verified in the constructor below the threshold and in a thread above
// it, with the same verdict; a flipped token byte is a failure naming the shard and what to do.
#include "data/shard_verifier.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "data/token_data_util.h"
#include "data/token_dataset.h"

namespace loom {
namespace {

using testing::TempDir;

// Polls until the verification is no longer running (at most ten seconds).
ShardVerifier::State finished_state(const ShardVerifier& verifier) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (verifier.state() == ShardVerifier::State::kRunning && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return verifier.state();
}

std::vector<const TokenShard*> shards_of(const TokenDataset& d) {
  std::vector<const TokenShard*> out;
  for (size_t i = 0; i < d.shard_count(); ++i) out.push_back(&d.shard(i));
  return out;
}

TEST(ShardVerifierTest, AtOnceOrInTheBackgroundTheSameVerdict) {
  TempDir dir("shard_verifier");
  const auto paths = testing::write_split(dir.str(), "train", 1000, testing::random_documents(300, 10, 200, 1000, 3), 4096);
  ASSERT_GT(paths.size(), 3u);
  const TokenDataset dataset = TokenDataset::open_split(dir.str(), "train");
  const uint64_t bytes = 2 * dataset.tokens();

  const ShardVerifier now(shards_of(dataset), bytes);
  EXPECT_FALSE(now.in_background()) << "at the threshold: before the first step";
  EXPECT_EQ(now.state(), ShardVerifier::State::kPassed);
  EXPECT_EQ(now.bytes(), bytes);
  const ShardVerifier later(shards_of(dataset), bytes - 1);
  EXPECT_TRUE(later.in_background());
  EXPECT_EQ(finished_state(later), ShardVerifier::State::kPassed);
  EXPECT_EQ(ShardVerifier({}, 0).state(), ShardVerifier::State::kPassed) << "nothing to verify";

  // One token byte of the third shard flipped: header and index still open fine.
  std::string shard = testing::read_bytes(paths[2]);
  shard[64 + 11] = static_cast<char>(shard[64 + 11] ^ 0x01);
  testing::write_bytes(paths[2], shard);
  const TokenDataset flipped = TokenDataset::open_split(dir.str(), "train");
  const std::string expected = "token shard " + paths[2] + " is corrupt: its tokens, byte offsets 64 to ";
  for (const uint64_t threshold : {bytes, uint64_t{0}}) {
    const ShardVerifier verifier(shards_of(flipped), threshold);
    EXPECT_EQ(finished_state(verifier), ShardVerifier::State::kFailed) << threshold;
    EXPECT_EQ(verifier.error().find(expected), 0u) << verifier.error();
    EXPECT_TRUE(verifier.error().ends_with("do not match the checksum at byte offset 40; prepare the dataset again "
                                           "with loom prepare"))
        << verifier.error();
  }
}

}  // namespace
}  // namespace loom
