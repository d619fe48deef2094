#include "data/token_stream.h"

#include <utility>

#include "core/base/check.h"

namespace loom {

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
