#include "data/sample_order.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/base/check.h"

namespace loom {

namespace {

constexpr int kFeistelRounds = 6;

uint64_t order_stream(size_t dataset) { return stream_id_of("data.order") + dataset; }

}  // namespace

RandomPermutation::RandomPermutation(uint64_t n, uint64_t seed, uint64_t stream, uint64_t epoch) : n_(n) {
  LOOM_CHECK(n >= 1, "a permutation of", n, "elements");
  const int bits = static_cast<int>(std::bit_width(n - 1));
  half_bits_ = std::max(1, (bits + 1) / 2);
  half_mask_ = (uint64_t{1} << half_bits_) - 1;
  const std::array<uint32_t, 4> words = CounterRng(seed, stream).bits(epoch);
  key_ = {words[0], words[1]};
  tweak_ = {words[2], words[3]};
}

uint64_t RandomPermutation::encrypt(uint64_t x) const {
  uint64_t left = x >> half_bits_, right = x & half_mask_;
  for (int round = 0; round < kFeistelRounds; ++round) {
    const uint32_t f = philox4x32({static_cast<uint32_t>(right), static_cast<uint32_t>(round), tweak_[0], tweak_[1]},
                                  key_)[0];
    const uint64_t next_right = left ^ (f & half_mask_);
    left = right;
    right = next_right;
  }
  return (left << half_bits_) | right;
}

uint64_t RandomPermutation::operator()(uint64_t i) const {
  LOOM_CHECK(i < n_, "index", i, "of a permutation of", n_);
  // Cycle walking: the network permutes [0, 4^h); following i's cycle until it re-enters
  // [0, n) restricts it to a permutation of [0, n).
  uint64_t x = i;
  do {
    x = encrypt(x);
  } while (x >= n_);
  return x;
}

SampleOrder::SampleOrder(uint64_t seed, std::vector<uint64_t> windows, const std::vector<double>& weights,
                         bool shuffle)
    : seed_(seed), windows_(std::move(windows)), shuffle_(shuffle) {
  const size_t K = windows_.size();
  LOOM_CHECK(K >= 1 && weights.size() == K, "datasets", K, "weights", weights.size());
  double total = 0;
  for (size_t k = 0; k < K; ++k) {
    LOOM_CHECK(windows_[k] >= 1, "dataset", k, "has no windows");
    if (!(weights[k] > 0) || !std::isfinite(weights[k])) {
      fail_user("blend weight", weights[k], "of dataset", k, "must be a positive number");
    }
    total += weights[k];
  }
  // Largest remainder: floors first, the rest to the largest fractional parts (earlier on ties).
  std::vector<double> remainder(K);
  quota_.assign(K, 0);
  uint32_t assigned = 0;
  for (size_t k = 0; k < K; ++k) {
    const double exact = weights[k] / total * kBlendBlock;
    quota_[k] = static_cast<uint32_t>(std::floor(exact));
    remainder[k] = exact - quota_[k];
    assigned += quota_[k];
  }
  std::vector<size_t> by_remainder(K);
  std::iota(by_remainder.begin(), by_remainder.end(), 0);
  std::stable_sort(by_remainder.begin(), by_remainder.end(),
                   [&](size_t a, size_t b) { return remainder[a] > remainder[b]; });
  for (size_t i = 0; assigned < kBlendBlock; ++i, ++assigned) ++quota_[by_remainder[i % K]];
  for (size_t k = 0; k < K; ++k) {
    if (quota_[k] == 0) {
      fail_user("blend weight", weights[k], "of dataset", k, "is", weights[k] / total,
                "of the total, below the blending resolution of 1 /", kBlendBlock);
    }
  }
  // Each slot goes to the dataset furthest behind its share quota[k] * (s + 1) / M (scaled by M,
  // in integers). That dataset's deficit is positive (the deficits sum to M), so no dataset ever
  // exceeds its quota and after M slots each has exactly its quota.
  slot_dataset_.resize(kBlendBlock);
  slot_rank_.resize(kBlendBlock);
  std::vector<uint32_t> count(K, 0);
  for (uint32_t s = 0; s < kBlendBlock; ++s) {
    size_t best = 0;
    int64_t best_deficit = std::numeric_limits<int64_t>::min();
    for (size_t k = 0; k < K; ++k) {
      const int64_t deficit = int64_t{quota_[k]} * (s + 1) - int64_t{kBlendBlock} * count[k];
      if (deficit > best_deficit) {
        best = k;
        best_deficit = deficit;
      }
    }
    slot_dataset_[s] = static_cast<uint32_t>(best);
    slot_rank_[s] = count[best]++;
  }
  for (size_t k = 0; k < K; ++k) LOOM_CHECK(count[k] == quota_[k], "dataset", k, "slots", count[k], "quota", quota_[k]);
}

SampleRef SampleOrder::at(uint64_t global_index) const {
  const uint64_t block = global_index / kBlendBlock;
  const uint32_t slot = static_cast<uint32_t>(global_index % kBlendBlock);
  const size_t k = slot_dataset_[slot];
  const uint64_t draw = block * quota_[k] + slot_rank_[slot];
  SampleRef ref;
  ref.dataset = k;
  ref.epoch = draw / windows_[k];
  const uint64_t position = draw % windows_[k];
  ref.window = shuffle_ ? RandomPermutation(windows_[k], seed_, order_stream(k), ref.epoch)(position) : position;
  return ref;
}

}  // namespace loom
