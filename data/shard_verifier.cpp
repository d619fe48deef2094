#include "data/shard_verifier.h"

#include <exception>
#include <utility>

namespace loom {

ShardVerifier::ShardVerifier(std::vector<const TokenShard*> shards, uint64_t background_above)
    : shards_(std::move(shards)) {
  for (const TokenShard* s : shards_) bytes_ += s->tokens() * static_cast<uint64_t>(s->header().dtype);
  background_ = bytes_ > background_above;
  if (background_) {
    thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
  } else {
    run({});
  }
}

void ShardVerifier::run(std::stop_token stop) {
  const auto start = std::chrono::steady_clock::now();
  State result = State::kPassed;
  std::string error;
  try {
    for (const TokenShard* s : shards_) {
      if (!s->verify_tokens(stop)) return;  // stopped: the owner is going away
    }
  } catch (const std::exception& e) {
    result = State::kFailed;
    error = e.what();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  state_ = result;
  error_ = std::move(error);
  seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

ShardVerifier::State ShardVerifier::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_;
}

std::string ShardVerifier::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

double ShardVerifier::seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return seconds_;
}

}  // namespace loom
