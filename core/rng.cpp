#include "core/rng.h"

#include <cmath>

namespace loom {

namespace {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t product = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

}  // namespace

std::array<uint32_t, 4> philox4x32(PhiloxCounter c, PhiloxKey k) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, c[0], hi0, lo0);
    mulhilo(kMul1, c[2], hi1, lo1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += kWeyl0;
    k[1] += kWeyl1;
  }
  return c;
}

uint64_t stream_id_of(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

CounterRng::CounterRng(uint64_t seed, uint64_t stream)
    : key_{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)},
      stream_lo_(static_cast<uint32_t>(stream)),
      stream_hi_(static_cast<uint32_t>(stream >> 32)) {}

std::array<uint32_t, 4> CounterRng::bits(uint64_t index) const {
  return philox4x32({static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), stream_lo_,
                     stream_hi_},
                    key_);
}

float CounterRng::uniform(uint64_t index) const {
  return static_cast<float>(bits(index)[0] >> 8) * (1.0f / 16777216.0f);
}

float CounterRng::normal(uint64_t index) const {
  std::array<uint32_t, 4> b = bits(index);
  // u1 in (0, 1] so that log never sees zero.
  double u1 = (static_cast<double>(b[0]) + 1.0) / 4294967296.0;
  double u2 = static_cast<double>(b[1]) / 4294967296.0;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

void fill_normal(float* out, int64_t n, uint64_t first, const CounterRng& rng, float mean,
                 float std) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = mean + std * rng.normal(first + static_cast<uint64_t>(i));
  }
}

}  // namespace loom
