// Verifying the data checksums of the token shards a run opens (TokenShard::verify_tokens reads
// every token), at once or in a background thread.
//
// Opening a shard checks its header and document index only; a flipped token byte would reach
// training unseen. So `loom train` verifies every shard it opens (launch/token_run.h): shards of
// at most `background_above` bytes in all are verified in the constructor, so a run stops before
// its first step; more are verified in a thread, so training starts at once, and the owner polls
// state() at step boundaries. Destruction stops the thread within one 1 M-token chunk.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/token_shard.h"

namespace loom {

class ShardVerifier {
 public:
  enum class State { kRunning, kPassed, kFailed };

  // `shards` must outlive the verifier. No shards: passed at once.
  ShardVerifier(std::vector<const TokenShard*> shards, uint64_t background_above);
  ~ShardVerifier() = default;  // the thread (declared last) is stopped and joined first
  ShardVerifier(const ShardVerifier&) = delete;
  ShardVerifier& operator=(const ShardVerifier&) = delete;

  State state() const;
  // The first failure's message (one sentence naming the shard file) when kFailed.
  std::string error() const;
  bool in_background() const { return background_; }
  // Bytes of token data to verify, over every shard.
  uint64_t bytes() const { return bytes_; }
  // Seconds the verification took, once it is no longer running.
  double seconds() const;

 private:
  void run(std::stop_token stop);

  std::vector<const TokenShard*> shards_;
  uint64_t bytes_ = 0;
  bool background_ = false;
  mutable std::mutex mutex_;
  State state_ = State::kRunning;  // guarded by mutex_
  std::string error_;              // guarded by mutex_
  double seconds_ = 0;             // guarded by mutex_
  std::jthread thread_;
};

}  // namespace loom
