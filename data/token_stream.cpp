#include "data/token_stream.h"

#include <cstring>
#include <utility>

#include "core/base/check.h"

namespace loom {

void TokenStream::read_loss_mask(uint64_t begin, uint64_t n, uint8_t* out) const {
  LOOM_CHECK(begin <= tokens() && n <= tokens() - begin, "mask of tokens [", begin, ",", begin + n, ") of", name(),
             "with", tokens());
  std::memset(out, 1, n);
}

TokenRange::TokenRange(const TokenStream& base, uint64_t begin, uint64_t end, std::string name)
    : base_(base), begin_(begin), end_(end), name_(std::move(name)) {
  LOOM_CHECK(begin <= end && end <= base.tokens(), "range [", begin, ",", end, ") of", base.name(), "with",
             base.tokens(), "tokens");
}

void TokenRange::read(uint64_t begin, uint64_t n, int32_t* out) const {
  LOOM_CHECK(begin <= tokens() && n <= tokens() - begin, "tokens [", begin, ",", begin + n, ") of", name_, "with",
             tokens());
  base_.read(begin_ + begin, n, out);
}

}  // namespace loom
