// Size arithmetic that cannot wrap: products and sums of element and byte counts that come from
// a user's config (n_layer x n_embd^2, B x T x vocabulary, ...) are computed in 64 bits and
// checked, so an absurd config is refused with a sentence instead of allocating a wrapped size.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "core/base/check.h"

namespace loom {

// a * b, or UserError naming `what` when it does not fit in int64 (or a factor is negative).
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &out)) {
    fail_user("the model is too large:", what, "overflows 64-bit sizes (" + std::to_string(a) + " x " +
              std::to_string(b) + "); lower model.n_layer, model.n_embd, model.vocab_size, the sequence length or the micro-batch");
  }
  return out;
}

// a + b, likewise.
inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &out)) {
    fail_user("the model is too large:", what, "overflows 64-bit sizes (" + std::to_string(a) + " + " +
              std::to_string(b) + "); lower model.n_layer, model.n_embd, model.vocab_size, the sequence length or the micro-batch");
  }
  return out;
}

// The kernels index a dimension (tokens of a micro-batch, channels, vocabulary) with int.
inline int checked_dimension(int64_t n, const char* what) {
  if (n < 0 || n > std::numeric_limits<int>::max()) {
    fail_user(what, "is", n, "but must be at most", std::numeric_limits<int>::max(),
              "(the kernels index it with 32-bit integers); lower it");
  }
  return static_cast<int>(n);
}

}  // namespace loom
