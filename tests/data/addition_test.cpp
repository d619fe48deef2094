#include "data/addition.h"

#include <set>
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

TEST(AdditionTest, BadInputsAreClearErrors) {
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
