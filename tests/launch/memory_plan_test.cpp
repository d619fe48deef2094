// The memory estimate of `loom train` and the size checks behind it: the estimate's parameter
// and activation counts are the ones a built model uses, and configs whose sizes overflow are
// refused with a sentence before anything is allocated.
#include "launch/memory_plan.h"

#include <gtest/gtest.h>

#include <string>

#include "core/base/check.h"
#include "core/config.h"
#include "core/gpt.h"
#include "launch/run_setup.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::user_error_of;

TEST(MemoryPlan, CountsAreThoseOfABuiltModel) {
  GPTConfig c;
  c.n_layer = 3;
  c.n_head = 4;
  c.n_embd = 32;
  c.vocab_size = 50;
  c.max_seq_len = 16;
  for (const Recompute mode : {Recompute::kNone, Recompute::kSelective, Recompute::kFull}) {
    GPT model(c);
    model.set_recompute(mode);
    EXPECT_EQ(GPT::arena_elements(c, StageShape{}), model.parameter_arena().numel());
    EXPECT_EQ(GPT::activation_elements(c, StageShape{}, mode, 4, 16) * 4,
              static_cast<int64_t>(model.activation_bytes(mode, 4, 16)));
  }
  // A middle pipeline stage of a tensor-parallel rank, padded for dp = 3.
  StageShape s;
  s.tp = 2;
  s.tp_rank = 1;
  s.first_layer = 1;
  s.end_layer = 2;
  s.first_stage = false;
  s.last_stage = false;
  s.arena_multiple = 3;
  const int64_t per_block = 2 * 32 + (3 * 32 * 32 + 3 * 32) / 2 + 32 * 32 / 2 + 32 + 2 * 32 + (4 * 32 * 32 + 4 * 32) / 2 +
                            4 * 32 * 32 / 2 + 32;
  EXPECT_EQ(GPT::arena_elements(c, s), (per_block + 2) / 3 * 3);
}

TEST(MemoryPlan, ConfigsThatOverflowAreRefusedBeforeAllocating) {
  auto run = [](const std::vector<std::string>& sets) {
    config::RunConfig cfg = resolve_run_config("", {});
    for (const std::string& s : sets) apply_config_override(cfg, s);
    validate_config(cfg);
    return estimate_memory(cfg);
  };
  // Found by fuzzing: int arithmetic wrapped to 22.5 MiB and the weights' fill overran it.
  std::string e = user_error_of([&] { run({"model.n_layer=783", "model.n_embd=62661870", "model.n_head=1"}); });
  EXPECT_NE(e.find("the model is too large: the parameter count overflows 64-bit sizes"), std::string::npos) << e;
  e = user_error_of([&] { run({"model.n_embd=1000000000", "model.n_head=1"}); });
  EXPECT_NE(e.find("overflows 64-bit sizes"), std::string::npos) << e;
  e = user_error_of([&] { run({"train.micro_batch_size=2147483647"}); });
  EXPECT_NE(e.find("the tokens of a micro-batch (train.micro_batch_size x the sequence length) is 23622320117"),
            std::string::npos)
      << e;
  // Sizes that fit in 64 bits but not in a host: the estimate says so, with what to lower.
  const MemoryEstimate huge = run({"model.n_layer=1000000000"});
  EXPECT_GT(huge.per_rank(), int64_t{1} << 50);
  e = user_error_of([&] { check_memory_fits(huge, 2, true, int64_t{24} << 30); });
  EXPECT_NE(e.find("on this host (2 ranks here; estimated"), std::string::npos) << e;
  EXPECT_NE(e.find("but the host has 24.0 GiB available: lower train.micro_batch_size"), std::string::npos) << e;
  const MemoryEstimate small = run({});
  EXPECT_NO_THROW(check_memory_fits(small, 4, true, int64_t{24} << 30));
  EXPECT_GT(small.weights, 0);
  EXPECT_EQ(small.weights, small.gradients);
  EXPECT_EQ(small.optimizer, 2 * small.weights);  // dp = 1: m and v
}

TEST(MemoryPlan, SequenceParallelismThatCannotSplitIsRefusedOnEveryRank) {
  config::RunConfig cfg = resolve_run_config("", {"parallel.tp=2", "parallel.sequence_parallel=true",
                                                  "train.micro_batch_size=3"});
  const std::string e = user_error_of([&] { estimate_memory(cfg); });
  EXPECT_NE(e.find("needs B * T divisible by tp"), std::string::npos) << e;
}

}  // namespace
}  // namespace loom
