#include "data/addition.h"

#include <algorithm>
#include <set>
#include <tuple>
#include <vector>

#include "test_util.h"

namespace loom {
namespace {

TEST(AdditionTest, SequencesSpellTheProblemAndTrainOnlyOnTheReversedSum) {
  AdditionTask task(3, 100, 42);
  EXPECT_EQ(task.sequence_length(), 11);
  std::vector<int32_t> prompt = task.prompt_tokens({123, 45});
  EXPECT_EQ(task.decode(prompt.data(), static_cast<int>(prompt.size())), "123+045=");
  const int B = 16, T = task.sequence_length();
  std::vector<int32_t> tokens(B * T), targets(B * T);
  task.train_batch(7, B, tokens.data(), targets.data());
  for (int b = 0; b < B; ++b) {
    const int32_t* tok = tokens.data() + b * T;
    const int32_t* tgt = targets.data() + b * T;
    int64_t a = tok[0] * 100 + tok[1] * 10 + tok[2], c = tok[4] * 100 + tok[5] * 10 + tok[6];
    EXPECT_EQ(tok[3], 10);  // '+'
    EXPECT_EQ(tok[7], 11);  // '='
    for (int t = 0; t < 7; ++t) EXPECT_EQ(tgt[t], -1) << "position " << t << " is part of the question";
    // positions 7..10 predict the 4 answer digits, least significant first
    std::vector<int32_t> answer(tgt + 7, tgt + 11);
    EXPECT_EQ(task.answer_value(answer.data()), a + c);
    for (int t = 8; t < 11; ++t) EXPECT_EQ(tok[t], tgt[t - 1]);  // inputs are targets shifted
  }
}

TEST(AdditionTest, BatchesArePureFunctionsOfSeedAndIndexAndNeverHeldOut) {
  AdditionTask a(2, 500, 1), b(2, 500, 1), c(2, 500, 2);
  const int B = 64, T = a.sequence_length();
  std::vector<int32_t> t1(B * T), y1(B * T), t2(B * T), y2(B * T), t3(B * T), y3(B * T);
  a.train_batch(3, B, t1.data(), y1.data());
  b.train_batch(3, B, t2.data(), y2.data());
  c.train_batch(3, B, t3.data(), y3.data());
  EXPECT_EQ(t1, t2);
  EXPECT_NE(t1, t3);
  std::set<std::pair<int64_t, int64_t>> held;
  for (const auto& p : a.test_problems()) held.insert({p.a, p.b});
  EXPECT_EQ(held.size(), 500u);  // distinct
  for (uint64_t batch = 0; batch < 50; ++batch) {
    a.train_batch(batch, B, t1.data(), y1.data());
    for (int i = 0; i < B; ++i) {
      const int32_t* tok = t1.data() + i * T;
      EXPECT_EQ(held.count({tok[0] * 10 + tok[1], tok[3] * 10 + tok[4]}), 0u) << "batch " << batch;
    }
  }
}

TEST(AdditionTest, OneLengthGivenTwiceIsTheSingleLengthTask) {
  AdditionTask one(3, 200, 5), same(3, 3, 200, 5);
  ASSERT_EQ(one.test_problems().size(), same.test_problems().size());
  for (size_t i = 0; i < one.test_problems().size(); ++i) {
    EXPECT_EQ(one.test_problems()[i].a, same.test_problems()[i].a);
    EXPECT_EQ(one.test_problems()[i].b, same.test_problems()[i].b);
  }
  const int B = 32, T = one.sequence_length();
  std::vector<int32_t> t1(B * T), y1(B * T), t2(B * T), y2(B * T);
  one.train_batch(9, B, t1.data(), y1.data());
  same.train_batch(9, B, t2.data(), y2.data());
  EXPECT_EQ(t1, t2);
  EXPECT_EQ(y1, y2);
}

// Mixed lengths: every length is drawn, each problem is spelled at its own length and padded with
// untargeted '=' to the longest's, and each length has its own held-out set.
TEST(AdditionTest, MixedLengthsSpellEachProblemAtItsLengthAndHoldOutEachLength) {
  AdditionTask task(1, 3, 40, 7);
  EXPECT_EQ(task.sequence_length(), 11);
  std::vector<int> held_per_length(4, 0);
  std::set<std::tuple<int, int64_t, int64_t>> held;
  for (const AdditionTask::Problem& p : task.test_problems()) {
    ++held_per_length[static_cast<size_t>(p.digits)];
    held.insert({p.digits, p.a, p.b});
  }
  EXPECT_EQ(held_per_length, (std::vector<int>{0, 25, 40, 40}));  // 1 digit: a quarter of 100
  EXPECT_EQ(held.size(), 105u);
  const int B = 64, T = task.sequence_length();
  std::vector<int32_t> tokens(B * T), targets(B * T);
  std::vector<int> seen(4, 0);
  for (uint64_t batch = 0; batch < 20; ++batch) {
    task.train_batch(batch, B, tokens.data(), targets.data());
    for (int i = 0; i < B; ++i) {
      const int32_t* tok = tokens.data() + i * T;
      const int32_t* tgt = targets.data() + i * T;
      const int d = static_cast<int>(std::find(tok, tok + T, 10) - tok);  // '+' follows the first operand
      ASSERT_GE(d, 1);
      ASSERT_LE(d, 3);
      ++seen[static_cast<size_t>(d)];
      int64_t a = 0, b = 0;
      for (int k = 0; k < d; ++k) a = a * 10 + tok[k];
      for (int k = 0; k < d; ++k) b = b * 10 + tok[d + 1 + k];
      EXPECT_EQ(tok[2 * d + 1], 11);
      EXPECT_EQ(held.count({d, a, b}), 0u) << "a held-out problem was trained on";
      for (int t = 0; t < 2 * d + 1; ++t) EXPECT_EQ(tgt[t], -1);
      EXPECT_EQ(task.answer_value(tgt + 2 * d + 1, d), a + b);
      for (int t = 3 * d + 2; t < T; ++t) {
        EXPECT_EQ(tok[t], 11) << "padding";
        EXPECT_EQ(tgt[t], -1) << "padding carries no target";
      }
    }
  }
  for (int d = 1; d <= 3; ++d) EXPECT_GT(seen[static_cast<size_t>(d)], 300) << d << "-digit problems";
  std::vector<int32_t> prompt = task.prompt_tokens({4, 5, 1});
  EXPECT_EQ(task.decode(prompt.data(), static_cast<int>(prompt.size())), "4+5=");
}

TEST(AdditionTest, BadInputsAreClearErrors) {
  EXPECT_THROW(AdditionTask(0, 2, 10, 1), UserError);
  EXPECT_THROW(AdditionTask(3, 2, 10, 1), UserError);  // min_digits above digits
  EXPECT_THROW(AdditionTask(1, 2, 0, 1), UserError);
  EXPECT_THROW(AdditionTask(0, 10, 1), UserError);
  EXPECT_THROW(AdditionTask(1, 26, 1), UserError);  // more than a quarter of 100 problems
  AdditionTask task(2, 10, 1);
  try {
    task.encode("12*3=");
    FAIL() << "expected an error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("'*' at offset 2"), std::string::npos) << e.what();
  }
  std::vector<int32_t> not_digits = {1, 10, 3};
  EXPECT_EQ(task.answer_value(not_digits.data()), -1);
}

}  // namespace
}  // namespace loom
