#include "core/config.h"

#include "core/base/check.h"

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "test_util.h"

namespace loom {
namespace {

using testing::user_error_of;

config::RunConfig valid() {
  return parse_config_text("data { addition { digits: 2 } }", "test");
}

TEST(ConfigTest, DefaultsComeFromTheSchema) {
  config::RunConfig c = valid();
  EXPECT_EQ(c.model().n_layer(), 2);
  EXPECT_EQ(c.model().n_embd(), 128);
  EXPECT_FALSE(c.model().has_vocab_size());
  EXPECT_FLOAT_EQ(c.optimizer().lr(), 0.001f);
  EXPECT_NO_THROW(validate_config(c));
}

TEST(ConfigTest, MetricsFilesGoBesideEachOther) {
  config::RunConfig c = valid();
  apply_config_override(c, "train.out_dir=runs/demo");
  EXPECT_EQ(metrics_path(c), "runs/demo/metrics.jsonl");
  EXPECT_EQ(tensorboard_dir(c), "runs/demo");
  apply_config_override(c, "metrics.jsonl=logs/demo.jsonl");
  EXPECT_EQ(tensorboard_dir(c), "logs") << "the JSON lines' directory";
  apply_config_override(c, "metrics.jsonl=demo.jsonl");
  EXPECT_EQ(tensorboard_dir(c), ".");
  apply_config_override(c, "metrics.jsonl=");
  EXPECT_EQ(metrics_path(c), "");
  EXPECT_EQ(tensorboard_dir(c), "runs/demo") << "no JSON lines: the run's directory";
  apply_config_override(c, "metrics.tensorboard=false");
  EXPECT_EQ(tensorboard_dir(c), "");
}

TEST(ConfigTest, ParseErrorsNameFileLineAndColumn) {
  std::string e = user_error_of([] { parse_config_text("model {\n  n_layr: 3\n}\n", "my.pbtxt"); });
  EXPECT_NE(e.find("my.pbtxt:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("n_layr"), std::string::npos) << e;
  e = user_error_of([] { parse_config_text("model { n_layer: \"x\" }", "c.pbtxt"); });
  EXPECT_NE(e.find("c.pbtxt:1:"), std::string::npos) << e;
}

TEST(ConfigTest, OverridesSetNestedFieldsAndRejectUnknownOnes) {
  config::RunConfig c = valid();
  apply_config_override(c, "model.n_layer=6");
  apply_config_override(c, "optimizer.lr=3e-4");
  apply_config_override(c, "train.out_dir=/tmp/x");
  apply_config_override(c, "data.addition.digits=4");
  EXPECT_EQ(c.model().n_layer(), 6);
  EXPECT_FLOAT_EQ(c.optimizer().lr(), 3e-4f);
  EXPECT_EQ(c.train().out_dir(), "/tmp/x");
  EXPECT_EQ(c.data().addition().digits(), 4);
  std::string e = user_error_of([&] { apply_config_override(c, "model.width=3"); });
  EXPECT_NE(e.find("no field 'width' in ModelConfig"), std::string::npos) << e;
  e = user_error_of([&] { apply_config_override(c, "model.n_layer=two"); });
  EXPECT_NE(e.find("'two' is not a valid"), std::string::npos) << e;
  e = user_error_of([&] { apply_config_override(c, "train.recompute=FULLY"); });
  EXPECT_NE(e.find("one of: RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL"), std::string::npos) << e;
  apply_config_override(c, "train.recompute=RECOMPUTE_FULL");
  EXPECT_EQ(c.train().recompute(), config::RECOMPUTE_FULL);
  apply_config_override(c, "parallel.pp_layers=3,1");
  ASSERT_EQ(c.parallel().pp_layers_size(), 2);
  EXPECT_EQ(c.parallel().pp_layers(0), 3);
  e = user_error_of([&] { apply_config_override(c, "parallel.pp_layers=3,x"); });
  EXPECT_NE(e.find("comma-separated list"), std::string::npos) << e;
  e = user_error_of([&] { apply_config_override(c, "model=3"); });
  EXPECT_NE(e.find("section"), std::string::npos) << e;
  e = user_error_of([&] { apply_config_override(c, "n_layer"); });
  EXPECT_NE(e.find("field.path=value"), std::string::npos) << e;
}

TEST(ConfigTest, ValidationNamesTheFieldTheValueAndTheExpectation) {
  struct Case {
    const char* set;
    const char* expect;
  };
  const Case cases[] = {
      {"model.n_layer=0", "model.n_layer is 0 but must be a positive integer"},
      {"model.n_embd=-8", "model.n_embd is -8"},
      {"model.n_head=3", "model.n_head = 3 must divide model.n_embd = 128"},
      {"model.vocab_size=0", "model.vocab_size is 0"},
      {"optimizer.lr=0", "optimizer.lr is 0 but must be a number in (0, 1]"},
      {"optimizer.lr=inf", "optimizer.lr is inf but must be a number in (0, 1]"},
      {"optimizer.lr=1e30", "optimizer.lr is 1e+30 but must be a number in (0, 1]"},
      {"optimizer.eps=inf", "optimizer.eps is inf but must be a finite number > 0"},
      {"optimizer.grad_clip=inf", "optimizer.grad_clip is inf but must be a finite number >= 0"},
      {"optimizer.warmup_steps=100000", "optimizer.warmup_steps is 100000 but train.steps is only 2000"},
      {"train.threads=100000", "train.threads is 100000 but must be in 0 .. 1024"},
      {"train.threads=-1", "train.threads is -1 but must be in 0 .. 1024"},
      {"checkpoint.commit_timeout_s=inf", "checkpoint.commit_timeout_s is inf but must be a number of seconds"},
      {"guard.collective_timeout_s=inf", "guard.collective_timeout_s is inf but must be a number of seconds"},
      {"optimizer.beta2=1", "optimizer.beta2 is 1"},
      {"train.steps=0", "train.steps is 0"},
      {"train.micro_batch_size=-1", "train.micro_batch_size is -1"},
      {"data.addition.digits=12", "data.addition.digits is 12 but must be in 1..9"},
      {"data.addition.test_problems=2147483647", "data.addition.test_problems is 2147483647 but must be at most 1000000"},
      {"parallel.pp_layers=1,1", "parallel.pp_layers has 2 entries but parallel.pp x parallel.virtual_stages is 1"},
      {"parallel.virtual_stages=0", "parallel.virtual_stages is 0"},
      {"parallel.virtual_stages=2", "parallel.virtual_stages is 2 but the interleaved schedule needs parallel.pp > 1"},
      {"parallel.tp=0", "parallel.tp is 0"},
      {"checkpoint.keep_last=-1", "checkpoint.keep_last is -1 but must be >= 0"},
      {"guard.rollback_after=-1", "guard.rollback_after is -1 but must be >= 0 (0: stop at the first non-finite step)"},
      {"guard.max_rollbacks=-2", "guard.max_rollbacks is -2 but must be >= 0"},
      {"guard.collective_timeout_s=0", "guard.collective_timeout_s is 0 but must be a number of seconds in (0, 604800]"},
      {"metrics.peak_tflops=-1", "metrics.peak_tflops is -1 but must be a finite number >= 0 (0: measured)"},
      {"metrics.peak_tflops=inf", "metrics.peak_tflops is inf but must be a finite number >= 0"},
  };
  for (const Case& c : cases) {
    config::RunConfig cfg = valid();
    apply_config_override(cfg, c.set);
    std::string e = user_error_of([&] { validate_config(cfg); });
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.set << " gave: " << e;
  }
  // Interleaved pipelines: micro-batches in groups of pp, and a block for every virtual stage.
  const std::vector<std::pair<std::vector<std::string>, std::string>> combined = {
      {{"parallel.pp=2", "parallel.virtual_stages=2", "train.grad_accum_steps=3"},
       "train.grad_accum_steps is 3 but the interleaved schedule (parallel.virtual_stages > 1) needs a multiple of parallel.pp = 2"},
      {{"parallel.pp=2", "parallel.virtual_stages=2", "train.grad_accum_steps=4", "model.n_layer=3"},
       "model.n_layer is 3 but 4 pipeline stages (parallel.pp x parallel.virtual_stages) need at least one block each"},
      {{"parallel.pp=2", "parallel.virtual_stages=2", "train.grad_accum_steps=4", "model.n_layer=4", "parallel.pp_layers=2,2"},
       "parallel.pp_layers has 2 entries but parallel.pp x parallel.virtual_stages is 4"},
      // Products and sums of int32 fields are taken in 64 bits (config fuzzing, issue 14).
      {{"parallel.pp=65536", "parallel.virtual_stages=65536", "train.grad_accum_steps=65536"},
       "model.n_layer is 2 but 4294967296 pipeline stages"},
      {{"parallel.pp=2", "parallel.pp_layers=2147483647,2147483647"},
       "parallel.pp_layers sums to 4294967294 blocks but model.n_layer is 2"},
  };
  for (const auto& [sets, expect] : combined) {
    config::RunConfig cfg = valid();
    for (const std::string& set : sets) apply_config_override(cfg, set);
    std::string e = user_error_of([&] { validate_config(cfg); });
    EXPECT_NE(e.find(expect), std::string::npos) << sets.back() << " gave: " << e;
  }
  {
    config::RunConfig cfg = valid();
    for (const char* set : {"parallel.pp=2", "parallel.virtual_stages=2", "train.grad_accum_steps=4", "model.n_layer=5"}) {
      apply_config_override(cfg, set);
    }
    validate_config(cfg);
    EXPECT_EQ(pipeline_split(cfg), (std::vector<int>{2, 1, 1, 1}));
  }
  std::string e = user_error_of([] { validate_config(parse_config_text("", "empty")); });
  EXPECT_NE(e.find("data has no source"), std::string::npos) << e;
}

// train.eval_task: each problem is one sentence naming the task by its index and the field.
TEST(ConfigTest, EvalTasksNameTheirIndexAndField) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"train.eval_task.0.path=hs.jsonl"},
       "train.eval_task[0].kind is unset; set it to MULTIPLE_CHOICE, EXACT_MATCH or LOSS"},
      {{"train.eval_task.0.kind=LOSS"}, "train.eval_task[0].path is empty"},
      {{"train.eval_task.0.kind=EXACT_MATCH", "train.eval_task.0.path=qa.jsonl", "train.eval_task.0.limit=-1"},
       "train.eval_task[0].limit is -1 but must be >= 0 (0: every document)"},
      {{"train.eval_task.0.kind=EXACT_MATCH", "train.eval_task.0.path=qa.jsonl", "train.eval_task.0.every=-2"},
       "train.eval_task[0].every is -2 but must be >= 0"},
      {{"train.eval_task.0.kind=LOSS", "train.eval_task.0.path=data", "train.eval_task.0.delimiter=x"},
       "train.eval_task[0].delimiter is for MULTIPLE_CHOICE tasks only"},
      {{"train.eval_task.0.kind=MULTIPLE_CHOICE", "train.eval_task.0.path=hs.jsonl", "train.eval_task.1.kind=LOSS"},
       "train.eval_task[1].path is empty"},
  };
  for (const auto& [sets, expect] : cases) {
    config::RunConfig cfg = valid();
    for (const std::string& set : sets) apply_config_override(cfg, set);
    std::string e = user_error_of([&] { validate_config(cfg); });
    EXPECT_NE(e.find(expect), std::string::npos) << sets.back() << " gave: " << e;
  }
  config::RunConfig cfg = valid();
  for (const char* set : {"train.eval_task.0.kind=MULTIPLE_CHOICE", "train.eval_task.0.path=hs.jsonl",
                          "train.eval_task.0.delimiter=", "train.eval_task.0.every=100"}) {
    apply_config_override(cfg, set);
  }
  validate_config(cfg);
  EXPECT_EQ(cfg.train().eval_task(0).delimiter(), "");
}

// Lists of sections are addressed by index; the index one past the end appends. Choosing a
// field of another member of the data oneof switches the source.
TEST(ConfigTest, OverridesIndexListsOfSections) {
  config::RunConfig c = valid();
  apply_config_override(c, "data.tokens.source.0.path=corpus/a");
  apply_config_override(c, "data.tokens.source.1.path=corpus/b");
  apply_config_override(c, "data.tokens.source.1.weight=0.25");
  apply_config_override(c, "data.tokens.source.0.path=corpus/a2");
  ASSERT_TRUE(c.data().has_tokens());
  ASSERT_EQ(c.data().tokens().source_size(), 2);
  EXPECT_EQ(c.data().tokens().source(0).path(), "corpus/a2");
  EXPECT_EQ(c.data().tokens().source(1).weight(), 0.25);
  validate_config(c);
  std::string e = user_error_of([&] { apply_config_override(c, "data.tokens.source.5.path=x"); });
  EXPECT_NE(e.find("has 2 entries, so index 5 is out of range"), std::string::npos) << e;
  e = user_error_of([&] { apply_config_override(c, "data.tokens.source.path=x"); });
  EXPECT_NE(e.find("name one by its index, e.g. source.0.<field>"), std::string::npos) << e;
  e = user_error_of([&] { apply_config_override(c, "data.tokens.source.0=x"); });
  EXPECT_NE(e.find("names a section, not a value"), std::string::npos) << e;
  apply_config_override(c, "data.tokens.source.1.weight=0");
  e = user_error_of([&] { validate_config(c); });
  EXPECT_NE(e.find("data.tokens.source 1 (corpus/b) has weight 0 but must be > 0"), std::string::npos) << e;
}

TEST(ConfigTest, TextRoundTrips) {
  config::RunConfig c = valid();
  apply_config_override(c, "model.n_head=8");
  config::RunConfig back = parse_config_text(config_to_text(c), "round trip");
  EXPECT_EQ(back.model().n_head(), 8);
  EXPECT_EQ(back.data().addition().digits(), 2);
}

}  // namespace
TEST(ConfigTest, AConfigPathThatIsNoFileIsOneSentence) {
  std::string e = user_error_of([] { load_config_file("/tmp"); });
  EXPECT_NE(e.find("config file /tmp is a directory, but must be a .pbtxt text file"), std::string::npos) << e;
  // /dev/zero never ends: refused without reading it.
  e = user_error_of([] { load_config_file("/dev/zero"); });
  EXPECT_NE(e.find("config file /dev/zero is not a regular file"), std::string::npos) << e;
  e = user_error_of([] { check_thread_count("--threads", -3); });
  EXPECT_NE(e.find("--threads is -3 but must be in 0 .. 1024"), std::string::npos) << e;
}

}  // namespace loom
