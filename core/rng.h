// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
//
// A counter-based generator has no hidden state: the value at (key, counter) is a pure function.
// Loom keys every parameter by (seed, hash of its name) and counts by the element's index in the
// *global* (unsharded) tensor, so element i gets the same initial value whichever rank or shard
// later holds it, and a tp x pp x dp run starts from exactly the weights of a single-rank run.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace loom {

using PhiloxKey = std::array<uint32_t, 2>;
using PhiloxCounter = std::array<uint32_t, 4>;

// The ten-round Philox4x32 bijection.
std::array<uint32_t, 4> philox4x32(PhiloxCounter counter, PhiloxKey key);

// A 64-bit FNV-1a hash: turns a parameter name into a stream id.
uint64_t stream_id_of(std::string_view name);

// Stateless generator for one stream: value(i) depends only on (seed, stream, i).
class CounterRng {
 public:
  CounterRng(uint64_t seed, uint64_t stream);

  // Uniform in [0, 1) with 24 random bits.
  float uniform(uint64_t index) const;
  // Standard normal (Box-Muller on the first two words of block `index`).
  float normal(uint64_t index) const;
  // Four raw 32-bit words for block `index`.
  std::array<uint32_t, 4> bits(uint64_t index) const;

 private:
  PhiloxKey key_;
  uint32_t stream_lo_;
  uint32_t stream_hi_;
};

// Fills out[0..n) with normal(mean, std) values of global elements [first, first + n).
void fill_normal(float* out, int64_t n, uint64_t first, const CounterRng& rng, float mean,
                 float std);

}  // namespace loom
