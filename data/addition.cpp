#include "data/addition.h"

#include <algorithm>
#include <array>
#include <string>

#include "core/base/check.h"
#include "core/rng.h"
#include "kernels/cpu/cross_entropy.h"  // kIgnoreTarget: the answer-only targets

namespace loom {

namespace {
constexpr int32_t kPlus = 10;
constexpr int32_t kEquals = 11;
const char kAlphabet[] = "0123456789+=";

int64_t limit_of(int digits) {
  int64_t limit = 1;
  for (int i = 0; i < digits; ++i) limit *= 10;
  return limit;
}
}  // namespace

AdditionTask::AdditionTask(int digits, int test_problems, uint64_t seed)
    : AdditionTask(digits, digits, test_problems, seed) {}

AdditionTask::AdditionTask(int min_digits, int digits, int test_problems, uint64_t seed)
    : min_digits_(min_digits), digits_(digits), seed_(seed) {
  if (digits < 1 || digits > 9) fail_user("addition digits is", digits, "but must be in 1..9");
  if (min_digits < 1 || min_digits > digits) {
    fail_user("addition min_digits is", min_digits, "but must be in 1 ..", digits, "(the digits)");
  }
  const int64_t all = limit_of(digits) * limit_of(digits);
  if (min_digits == digits && (test_problems <= 0 || test_problems > all / 4)) {
    fail_user("addition test_problems is", test_problems, "but must be in 1 ..", all / 4,
              "for", digits, "digits (at most a quarter of all", all, "problems)");
  }
  if (test_problems <= 0) fail_user("addition test_problems is", test_problems, "but must be positive");
  for (int d = min_digits; d <= digits; ++d) {
    // One length: the stream and draws of a single-length task. Several: a stream per length,
    // each capped at a quarter of its problems.
    const uint64_t stream = min_digits == digits ? stream_id_of("addition.test")
                                                 : stream_id_of("addition.test." + std::to_string(d));
    const int64_t want = std::min<int64_t>(test_problems, limit_of(d) * limit_of(d) / 4);
    for (uint64_t i = 0, found = 0; static_cast<int64_t>(found) < want; ++i) {
      Problem p = draw(stream, i, d);
      if (test_keys_.insert(key(p)).second) {
        test_.push_back(p);
        ++found;
      }
    }
  }
}

AdditionTask::Problem AdditionTask::draw(uint64_t stream, uint64_t index, int d) const {
  std::array<uint32_t, 4> bits = CounterRng(seed_, stream).bits(index);
  uint64_t x = (static_cast<uint64_t>(bits[0]) << 32) | bits[1];
  uint64_t y = (static_cast<uint64_t>(bits[2]) << 32) | bits[3];
  const uint64_t limit = static_cast<uint64_t>(limit_of(d));
  return {static_cast<int64_t>(x % limit), static_cast<int64_t>(y % limit), d};
}

AdditionTask::Problem AdditionTask::draw(uint64_t stream, uint64_t index) const {
  if (min_digits_ == digits_) return draw(stream, index, digits_);
  // The length from its own stream, so that the operands' draws keep their meaning.
  const uint32_t bits = CounterRng(seed_, stream_id_of("addition.length")).bits(index)[0];
  return draw(stream, index, min_digits_ + static_cast<int>(bits % static_cast<uint32_t>(digits_ - min_digits_ + 1)));
}

uint64_t AdditionTask::key(const Problem& p) const {
  // a * 10^d + b < 10^18 < 2^60: the length fits above it.
  const int d = digits_of(p);
  return (static_cast<uint64_t>(d) << 60) | static_cast<uint64_t>(p.a * limit_of(d) + p.b);
}

bool AdditionTask::is_test(const Problem& p) const {
  return test_keys_.count(key(p)) != 0;
}

void AdditionTask::write_problem(const Problem& p, int32_t* tokens, int32_t* targets) const {
  // Full sequence: a (d) + b (d) = sum reversed (d+1); the model sees all but the last token,
  // then '=' without a target up to the longest problem's length.
  const int d = digits_of(p);
  std::vector<int32_t> seq = prompt_tokens(p);
  int64_t sum = p.a + p.b;
  for (int i = 0; i <= d; ++i) {
    seq.push_back(static_cast<int32_t>(sum % 10));
    sum /= 10;
  }
  const int T = sequence_length(), own = static_cast<int>(seq.size()) - 1;
  for (int t = 0; t < T; ++t) {
    tokens[t] = t < own ? seq[static_cast<size_t>(t)] : kEquals;
    // Position t predicts token t+1; only answer tokens (after '=') are trained on.
    targets[t] = t + 1 >= prompt_length(d) && t < own ? seq[static_cast<size_t>(t) + 1] : kernels::cpu::kIgnoreTarget;
  }
}

void AdditionTask::train_batch(uint64_t batch_index, int B, int32_t* tokens, int32_t* targets) const {
  const uint64_t stream = stream_id_of("addition.train");
  const int T = sequence_length();
  for (int i = 0; i < B; ++i) {
    // Each sequence owns a block of 2^16 draws; held-out problems are skipped within it.
    uint64_t index = (batch_index * static_cast<uint64_t>(B) + static_cast<uint64_t>(i)) << 16;
    Problem p = draw(stream, index);
    while (is_test(p)) p = draw(stream, ++index, p.digits);
    write_problem(p, tokens + static_cast<int64_t>(i) * T, targets + static_cast<int64_t>(i) * T);
  }
}

std::vector<int32_t> AdditionTask::prompt_tokens(const Problem& p) const {
  std::vector<int32_t> out;
  const int d = digits_of(p);
  auto put_number = [&out, d](int64_t v) {
    std::vector<int32_t> digits_rev;
    for (int i = 0; i < d; ++i) {
      digits_rev.push_back(static_cast<int32_t>(v % 10));
      v /= 10;
    }
    out.insert(out.end(), digits_rev.rbegin(), digits_rev.rend());
  };
  put_number(p.a);
  out.push_back(kPlus);
  put_number(p.b);
  out.push_back(kEquals);
  return out;
}

int64_t AdditionTask::answer_value(const int32_t* answer, int d) const {
  int64_t value = 0;
  for (int i = answer_length(d) - 1; i >= 0; --i) {
    if (answer[i] < 0 || answer[i] > 9) return -1;
    value = value * 10 + answer[i];
  }
  return value;
}

std::vector<int32_t> AdditionTask::encode(const std::string& text) const {
  std::vector<int32_t> out;
  for (size_t i = 0; i < text.size(); ++i) {
    const char* at = std::char_traits<char>::find(kAlphabet, kVocabSize, text[i]);
    if (at == nullptr) {
      fail_user("character '" + std::string(1, text[i]) + "' at offset", i,
                "is not in the addition vocabulary \"0123456789+=\"");
    }
    out.push_back(static_cast<int32_t>(at - kAlphabet));
  }
  return out;
}

std::string AdditionTask::decode(const int32_t* tokens, int n) const {
  std::string out;
  for (int i = 0; i < n; ++i) {
    out += (tokens[i] >= 0 && tokens[i] < kVocabSize) ? kAlphabet[tokens[i]] : '?';
  }
  return out;
}

}  // namespace loom
