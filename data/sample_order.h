// The order of training samples: which window of which dataset global sample i is, as a pure
// function of (seed, i). Nothing O(number of samples) is stored, so the order survives a resume
// on any number of data-parallel ranks and costs nothing to "rebuild".
//
// Sample space. A dataset of N tokens read with sequence length T has S = floor((N - 1) / T)
// windows; window j is stream tokens [j*T, j*T + T + 1): inputs the first T, targets the last T.
// Windows start at multiples of T (their inputs do not overlap) and may cross document and shard
// boundaries, as in nanoGPT and llm.c; the last (N - 1) mod T tokens are never an input.
//
// Epochs. Dataset k's c-th draw is epoch e = c / S, position p = c mod S, window
// RandomPermutation(S, seed, k, e)(p): every window exactly once per epoch, a new order each epoch.
//
// Blending. Global samples come in blocks of kBlendBlock; within every block, slot s holds a
// fixed dataset (quotas from the weights by largest remainder, slots interleaved smoothly: the
// next slot goes to the dataset furthest behind its share), so each block holds exactly the quotas
// and no prefix of a block puts a dataset a whole sample ahead of its share. Sample i is dataset
// k = slot[i mod M]'s draw c = (i / M) * quota[k] + (rank of the slot among k's slots). Each
// dataset runs through its own epochs.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace loom {

// A keyed pseudo-random bijection of [0, n): a six-round Feistel network on the smallest
// even-bit-width domain 2^(2h) >= n, Philox as its round function, cycle-walking back into
// [0, n) (under 4 network passes per call on average).
class RandomPermutation {
 public:
  // Keyed by (seed, stream, epoch) through Philox. n >= 1.
  RandomPermutation(uint64_t n, uint64_t seed, uint64_t stream, uint64_t epoch);
  uint64_t size() const { return n_; }
  // The image of i < n.
  uint64_t operator()(uint64_t i) const;

 private:
  uint64_t encrypt(uint64_t x) const;

  uint64_t n_;
  int half_bits_;
  uint64_t half_mask_;
  PhiloxKey key_;
  std::array<uint32_t, 2> tweak_;
};

// Where global sample i comes from.
struct SampleRef {
  size_t dataset = 0;
  uint64_t epoch = 0;   // of that dataset
  uint64_t window = 0;  // tokens [window * T, window * T + T + 1) of that dataset
};

class SampleOrder {
 public:
  static constexpr uint32_t kBlendBlock = 10000;

  // windows[k] >= 1: S of dataset k. weights[k] > 0 and finite; they are normalised, and each
  // must be at least 1 / kBlendBlock of the total (UserError otherwise). shuffle false: windows in
  // stream order, epoch after epoch (for evaluation).
  SampleOrder(uint64_t seed, std::vector<uint64_t> windows, const std::vector<double>& weights,
              bool shuffle);

  SampleRef at(uint64_t global_index) const;

  size_t datasets() const { return windows_.size(); }
  // S of dataset k: its samples per epoch.
  uint64_t windows(size_t k) const { return windows_.at(k); }
  // Samples of dataset k in every block of kBlendBlock consecutive global samples.
  uint32_t quota(size_t k) const { return quota_.at(k); }

 private:
  uint64_t seed_;
  std::vector<uint64_t> windows_;
  bool shuffle_;
  std::vector<uint32_t> quota_;
  std::vector<uint32_t> slot_dataset_;  // (kBlendBlock)
  std::vector<uint32_t> slot_rank_;     // (kBlendBlock): earlier slots of the same dataset
};

}  // namespace loom
