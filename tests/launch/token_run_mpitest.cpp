// TokenRun's shard verification across ranks (each rank verifies its own copy here: no launcher
// recorded, so every rank is local rank 0 of its host). Verified before the first step or in the
// background, a flipped token byte in one rank's copy stops every rank, at the same step, with
// that rank's message; intact copies train on, and the agreement ends once all are verified.
#include <gtest/gtest.h>

#include <string>

#include "data/token_data_util.h"
#include "launch/token_run.h"
#include "mpi_test_util.h"

namespace loom {
namespace {

using testing::TempDir;

config::RunConfig config_for(const std::string& dir) {
  config::RunConfig cfg;
  cfg.mutable_model()->set_vocab_size(1000);
  config::TokenData* tokens = cfg.mutable_data()->mutable_tokens();
  tokens->add_source()->set_path(dir);
  tokens->set_seq_len(16);
  return cfg;
}

// Steps until TokenRun throws (at most `steps`); returns the message, or "" if none, and the
// step in `*at` (-1: the constructor).
std::string run_until_error(const config::RunConfig& cfg, parallel::Communicator& world, uint64_t background_above,
                            int steps, int* at) {
  *at = -1;
  try {
    TokenRun run(cfg, BatchLayout{16, 2, 1, world.size(), world.rank()}, LoaderState{1, 0}, world, background_above);
    for (*at = 0; *at < steps; ++*at) run.next_step();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(TokenRunMpiTest, AFlippedTokenByteOnAnyRankStopsEveryRankAtTheSameStep) {
  parallel::Communicator& world = testing::mpi_world();
  TempDir dir("token_run_verify");
  const auto paths = testing::write_split(dir.str(), "train", 1000, testing::random_documents(400, 10, 200, 1000, 5), 8192);
  const config::RunConfig cfg = config_for(dir.str());

  for (const uint64_t background_above : {uint64_t{1} << 30, uint64_t{0}}) {
    TokenRun run(cfg, BatchLayout{16, 2, 1, world.size(), world.rank()}, LoaderState{1, 0}, world, background_above);
    for (int step = 0; step < 1000 && !run.verified(); ++step) run.next_step();
    EXPECT_TRUE(run.verified()) << "intact shards pass, before the first step or in the background";
  }

  // The last rank's copy of the last shard has a flipped token byte.
  const int last = world.size() - 1;
  if (world.rank() == last) {
    std::string shard = testing::read_bytes(paths.back());
    shard[64 + 3] = static_cast<char>(shard[64 + 3] ^ 0x40);
    testing::write_bytes(paths.back(), shard);
  }
  const std::string expected = (last == 0 ? "" : "rank " + std::to_string(last) + ": ") + "token shard ";
  for (const uint64_t background_above : {uint64_t{1} << 30, uint64_t{0}}) {
    int at = 0;
    const std::string error = run_until_error(cfg, world, background_above, 1000, &at);
    EXPECT_EQ(error.find(expected), 0u) << error;
    EXPECT_TRUE(error.ends_with("do not match the checksum at byte offset 40; prepare the dataset again with loom prepare"))
        << error;
    if (background_above > 0) {
      EXPECT_EQ(at, -1) << "verified before the first step";
    }
    int32_t range[2] = {at, -at};
    world.all_reduce(range, range, 2, DType::kI32, parallel::ReduceOp::kMax);
    EXPECT_EQ(range[0], -range[1]) << "every rank stopped at the same step";
  }
}

}  // namespace
}  // namespace loom
