// The demo dataset: multi-digit addition that Loom generates itself (no download).
//
// A problem with d-digit operands is written "a+b=" (operands zero-padded to d digits) followed by
// the d+1 digits of the sum least-significant first ("123+456=9750" is 123+456=579): reversed
// digits let a left-to-right model carry the way people do. Tokens: '0'..'9' are 0..9, '+' is
// 10, '=' is 11. A training sequence is one problem; only the answer digits carry a target.
// A fixed held-out set of problems is never trained on; the trainer measures a model's exact-match
// accuracy on it (launch/evaluation.h): a dataset does not run the model.
//
// A task may mix lengths: operands of min_digits .. digits digits, each problem's length drawn
// uniformly. Sequences are then as long as the longest problem's (3 * digits + 2); a shorter
// problem is followed by '=' tokens that carry no target, which a causal model never looks back
// at. The held-out set holds test_problems problems of each length (at most a quarter of that
// length's problems: 25 of 1-digit addition's 100).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

namespace loom {

class AdditionTask {
 public:
  static constexpr int kVocabSize = 12;

  struct Problem {
    int64_t a = 0;
    int64_t b = 0;
    int digits = 0;  // of each operand; 0: the task's digits()
  };

  // Throws UserError if digits is outside 1..9 or test_problems is more than a quarter of all
  // problems (training would then see too few distinct ones).
  AdditionTask(int digits, int test_problems, uint64_t seed);
  // Lengths min_digits .. digits (1 <= min_digits <= digits <= 9, else UserError); with
  // min_digits == digits the task above, bit for bit.
  AdditionTask(int min_digits, int digits, int test_problems, uint64_t seed);

  int digits() const { return digits_; }
  int min_digits() const { return min_digits_; }
  int digits_of(const Problem& p) const { return p.digits == 0 ? digits_ : p.digits; }
  int prompt_length(int d) const { return 2 * d + 2; }           // "aaa+bbb="
  int answer_length(int d) const { return d + 1; }               // reversed sum
  int prompt_length() const { return prompt_length(digits_); }   // of the longest problems
  int answer_length() const { return answer_length(digits_); }
  int sequence_length() const { return 3 * digits_ + 2; }        // model inputs per sequence

  // Fills tokens and targets (B, T = sequence_length()) for the training batch with global index
  // `batch_index`: a pure function of (seed, batch_index), never a held-out problem.
  void train_batch(uint64_t batch_index, int B, int32_t* tokens, int32_t* targets) const;
  // Held-out problems, the shortest first (each length's in the order drawn).
  const std::vector<Problem>& test_problems() const { return test_; }
  // The sequence of problem p (T = sequence_length() tokens and targets), as train_batch writes.
  void write_problem(const Problem& p, int32_t* tokens, int32_t* targets) const;

  std::vector<int32_t> prompt_tokens(const Problem& p) const;
  // The sum read back from answer_length(d) generated tokens; -1 if a token is not a digit.
  int64_t answer_value(const int32_t* answer, int d) const;
  int64_t answer_value(const int32_t* answer) const { return answer_value(answer, digits_); }
  // Text <-> tokens over the alphabet "0123456789+=". An unknown character is a UserError.
  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(const int32_t* tokens, int n) const;

 private:
  Problem draw(uint64_t stream, uint64_t index) const;
  Problem draw(uint64_t stream, uint64_t index, int d) const;
  uint64_t key(const Problem& p) const;
  bool is_test(const Problem& p) const;

  int min_digits_;
  int digits_;
  uint64_t seed_;
  std::vector<Problem> test_;
  std::unordered_set<uint64_t> test_keys_;
};

}  // namespace loom
