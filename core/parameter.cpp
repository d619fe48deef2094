#include "core/parameter.h"

#include "core/base/check.h"

namespace loom {

int64_t global_columns(const Shape& shape) {
  LOOM_CHECK(shape.rank() >= 1, "a parameter must have at least one dimension");
  return shape.rank() == 1 ? 1 : shape[shape.rank() - 1];
}

int64_t local_elements(const std::vector<ShardBlock>& blocks) {
  int64_t n = 0;
  for (const ShardBlock& b : blocks) n += b.rows * b.cols;
  return n;
}

void fill_parameter_normal(const Parameter& p, const CounterRng& rng, float mean, float std) {
  const int64_t cols = global_columns(p.global_shape);
  float* out = p.value.f32();
  for (const ShardBlock& b : p.blocks) {
    for (int64_t r = 0; r < b.rows; ++r) {
      const uint64_t first = static_cast<uint64_t>((b.row0 + r) * cols + b.col0);
      fill_normal(out, b.cols, first, rng, mean, std);
      out += b.cols;
    }
  }
}

void place_into_global(const Parameter& p, const float* local, float* global) {
  const int64_t cols = global_columns(p.global_shape);
  for (const ShardBlock& b : p.blocks) {
    for (int64_t r = 0; r < b.rows; ++r) {
      float* row = global + (b.row0 + r) * cols + b.col0;
      for (int64_t c = 0; c < b.cols; ++c) row[c] = local[c];
      local += b.cols;
    }
  }
}

}  // namespace loom
