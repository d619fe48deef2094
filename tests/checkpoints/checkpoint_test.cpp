// Checkpoints on one process: exact resume, atomic commit and retention, integrity checks and
// the fallback of --resume auto, which checkpoint it takes (the newest commit, whatever `latest`
// says), model-shape mismatches.
#include "checkpoints/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/base/file_io.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "parallel/solo_communicator.h"
#include "test_util.h"

namespace loom::checkpoint {
namespace {

namespace fs = std::filesystem;

const GPTConfig kConfig{2, 4, 32, 23, 8};
constexpr int kB = 3, kT = 8, kSteps = 20;

config::RunConfig run_config(const GPTConfig& g = kConfig) {
  config::RunConfig cfg;
  cfg.mutable_model()->set_n_layer(g.n_layer);
  cfg.mutable_model()->set_n_head(g.n_head);
  cfg.mutable_model()->set_n_embd(g.n_embd);
  cfg.mutable_model()->set_vocab_size(g.vocab_size);
  cfg.mutable_model()->set_seq_len(g.max_seq_len);
  return cfg;
}

// A one-process training run that can stop, save, and be rebuilt from a checkpoint.
struct TrainingRun {
  GPT model{kConfig};
  AdamW optimizer{model, AdamWSettings{0.9f, 0.95f, 1e-8f, 0.1f, 1.0f}, nullptr, /*bucket_elements=*/700};
  GPT* chunk = &model;
  AdamW* opt = &optimizer;
  std::span<GPT* const> chunks() { return {&chunk, 1}; }
  std::span<AdamW* const> optimizers() { return {&opt, 1}; }
  explicit TrainingRun(uint64_t seed) { model.init_weights(seed); }
  float step(int s) {
    const std::vector<int32_t> tokens = testing::random_ints(kB * kT, 100 + static_cast<uint32_t>(s), 0, kConfig.vocab_size);
    const std::vector<int32_t> targets = testing::random_ints(kB * kT, 200 + static_cast<uint32_t>(s), 0, kConfig.vocab_size);
    const MicroBatch micro{tokens.data(), targets.data(), kB, kT};
    return static_cast<float>(train_step(model, optimizer, {&micro, 1}, lr_at_step(s, kSteps, 3e-3f, 2, 0.1f)).loss);
  }
  void save(Checkpointer& c, int done) {
    Progress p;
    p.step = done;
    p.tokens_seen = static_cast<uint64_t>(done) * kB * kT;
    p.has_loader = true;
    p.loader = loom::LoaderState{7, static_cast<uint64_t>(done) * kB};
    c.save(run_config(), p, chunks(), optimizers());
  }
};

std::vector<char> bytes_of(const Tensor& t) {
  const char* p = static_cast<const char*>(t.raw());
  return std::vector<char>(p, p + t.nbytes());
}

Policy policy(const std::string& root, bool async = true) { return Policy{root, 3, 0, async, 30}; }

TEST(CheckpointTest, StopSaveResumeIsBitwiseTheUninterruptedRun) {
  testing::TempDir dir("ckpt_exact");
  parallel::SoloCommunicator world("world");
  TrainingRun straight(1);
  std::vector<float> want;
  for (int s = 0; s < kSteps; ++s) want.push_back(straight.step(s));

  {
    TrainingRun first(1);
    Checkpointer c(policy(dir.str()), world);
    for (int s = 0; s < kSteps / 2; ++s) EXPECT_EQ(first.step(s), want[static_cast<size_t>(s)]);
    first.save(c, kSteps / 2);
    c.wait();
  }
  TrainingRun second(/*different initial weights*/ 2);
  std::vector<std::string> warnings;
  const Resumed r = resume("auto", dir.str(), run_config(), world, second.chunks(), second.optimizers(),
                           [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(r.resumed);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(r.dir, dir.str() + "/step-00000010");
  EXPECT_EQ(r.progress.step, 10);
  EXPECT_EQ(r.progress.tokens_seen, 10u * kB * kT);
  ASSERT_TRUE(r.progress.has_loader);
  EXPECT_EQ(r.progress.loader.seed, 7u);
  EXPECT_EQ(r.progress.loader.next_sample, 10u * kB);
  EXPECT_EQ(second.optimizer.step_count(), 10);
  for (int s = kSteps / 2; s < kSteps; ++s) {
    const float got = second.step(s);
    EXPECT_EQ(0, std::memcmp(&got, &want[static_cast<size_t>(s)], sizeof got)) << "step " << s + 1;
  }
  EXPECT_EQ(bytes_of(second.model.parameter_arena()), bytes_of(straight.model.parameter_arena()));
  EXPECT_EQ(bytes_of(second.optimizer.moment_m()), bytes_of(straight.optimizer.moment_m()));
  EXPECT_EQ(bytes_of(second.optimizer.moment_v()), bytes_of(straight.optimizer.moment_v()));
}

TEST(CheckpointTest, ManifestRecordsTheRunAndEveryElementOnce) {
  testing::TempDir dir("ckpt_manifest");
  parallel::SoloCommunicator world("world");
  TrainingRun run(3);
  run.step(0);
  Checkpointer c(policy(dir.str(), /*async=*/false), world);
  run.save(c, 1);
  EXPECT_EQ(c.last_committed(), dir.str() + "/step-00000001");
  const CheckpointReader reader(c.last_committed());
  const Manifest& m = reader.manifest();
  EXPECT_EQ(m.format_version(), kFormatVersion);
  EXPECT_EQ(m.step(), 1);
  EXPECT_EQ(m.config().model().n_layer(), kConfig.n_layer);
  EXPECT_EQ(m.optimizer().step_count(), 1);
  EXPECT_TRUE(m.optimizer().has_moments());
  EXPECT_FLOAT_EQ(m.optimizer().beta2(), 0.95f);
  EXPECT_EQ(m.layout().tp(), 1);
  ASSERT_EQ(m.files_size(), 1);
  EXPECT_EQ(m.files(0).name(), "rank-00000.shard");
  EXPECT_EQ(m.files(0).size(), fs::file_size(c.last_committed() + "/rank-00000.shard"));
  ASSERT_GE(m.rng_size(), 2);
  EXPECT_EQ(m.rng(1).name(), "data_order");
  // Per (tensor, state): the stored slices add up to the whole tensor, and reading it back
  // gives the model's values.
  for (const Parameter& p : run.model.parameters()) {
    for (State state : {STATE_PARAMETER, STATE_ADAM_M, STATE_ADAM_V}) {
      int64_t stored = 0;
      for (const TensorShard& t : m.tensors()) {
        if (t.name() != p.name || t.state() != state) continue;
        int64_t n = 1;
        for (int64_t e : t.slice().extent()) n *= e;
        stored += n;
      }
      EXPECT_EQ(stored, p.global_shape.numel()) << p.name << " state " << state;
    }
    std::vector<float> back(static_cast<size_t>(p.value.numel()));
    const int64_t cols = global_columns(p.global_shape);
    reader.read(p.name, STATE_PARAMETER, Rect{0, p.global_shape.numel() / cols, 0, cols}, back.data(), cols);
    EXPECT_EQ(0, std::memcmp(back.data(), p.value.raw(), p.value.nbytes())) << p.name;
  }
  EXPECT_TRUE(reader.verify_all().empty());
}

TEST(CheckpointTest, KeepsTheNewestAndEveryMthAndNeverListsUnfinishedSaves) {
  testing::TempDir dir("ckpt_retention");
  parallel::SoloCommunicator world("world");
  TrainingRun run(4);
  // A save that crashed half-way leaves a temporary directory: never listed, removed later.
  fs::create_directories(dir.str() + "/.tmp-step-00000099-0123");
  std::ofstream(dir.str() + "/.tmp-step-00000099-0123/rank-00000.shard") << "half";
  EXPECT_TRUE(list_checkpoints(dir.str()).empty());
  Checkpointer c(Policy{dir.str(), 2, 3, true, 30}, world);
  for (int s = 1; s <= 7; ++s) run.save(c, s);
  c.wait();
  const std::vector<std::string> left = list_checkpoints(dir.str());
  std::vector<std::string> names;
  for (const std::string& d : left) names.push_back(fs::path(d).filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"step-00000007", "step-00000006", "step-00000003"}));
  EXPECT_FALSE(fs::exists(dir.str() + "/.tmp-step-00000099-0123"));
  std::ifstream latest(dir.str() + "/latest");
  std::string pointed;
  latest >> pointed;
  EXPECT_EQ(pointed, "step-00000007");
}

TEST(CheckpointTest, LatestPointerComesFirstAfterResumingFromAnOlderCheckpoint) {
  testing::TempDir dir("ckpt_latest");
  parallel::SoloCommunicator world("world");
  TrainingRun run(5);
  Checkpointer c(Policy{dir.str(), 0, 0, false, 30}, world);
  run.save(c, 5);
  run.save(c, 9);
  run.save(c, 6);  // a run resumed from step 5 (say) saves at 6: it is the newest save
  const std::vector<std::string> left = list_checkpoints(dir.str());
  ASSERT_EQ(left.size(), 3u);
  EXPECT_EQ(fs::path(left[0]).filename(), "step-00000006");
  EXPECT_EQ(fs::path(left[1]).filename(), "step-00000009");
}

TEST(CheckpointTest, ARunStartedAfreshReplacesTheEarlierRunsCheckpointsAtItsFirstSave) {
  testing::TempDir dir("ckpt_replace");
  parallel::SoloCommunicator world("world");
  TrainingRun run(13);
  {
    Checkpointer earlier(Policy{dir.str(), 0, 0, false, 30}, world);
    run.save(earlier, 50);
    run.save(earlier, 100);
  }
  Policy fresh{dir.str(), 3, 0, false, 30};
  fresh.replace_earlier_run = true;
  Checkpointer c(fresh, world);
  run.save(c, 10);
  run.save(c, 20);
  std::vector<std::string> names;
  for (const std::string& d : list_checkpoints(dir.str())) names.push_back(fs::path(d).filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"step-00000020", "step-00000010"}));
}

// Flips one byte of the stored bytes of tensor `name` in the newest checkpoint.
void corrupt_tensor(const std::string& ckpt, const std::string& name) {
  const CheckpointReader reader(ckpt);
  for (const TensorShard& t : reader.manifest().tensors()) {
    if (t.name() != name || t.state() != STATE_PARAMETER) continue;
    std::fstream f(ckpt + "/" + reader.manifest().files(t.file()).name(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(t.offset() + 5));
    char ch = 0;
    f.read(&ch, 1);
    ch = static_cast<char>(ch ^ 0x40);
    f.seekp(static_cast<std::streamoff>(t.offset() + 5));
    f.write(&ch, 1);
    return;
  }
  FAIL() << "no tensor " << name;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(CheckpointTest, CorruptTruncatedOrMissingFilesAreErrorsNamingFileAndTensor) {
  testing::TempDir dir("ckpt_corrupt");
  parallel::SoloCommunicator world("world");
  TrainingRun run(6);
  Checkpointer c(policy(dir.str(), false), world);
  run.save(c, 1);
  const std::string ckpt = c.last_committed();
  const std::string shard = ckpt + "/rank-00000.shard";
  TrainingRun other(7);
  auto load = [&] { load_state(CheckpointReader(ckpt), other.chunks(), other.optimizers()); };

  corrupt_tensor(ckpt, "h.1.mlp.c_fc.weight");
  std::string e = error_of(load);
  EXPECT_NE(e.find(shard), std::string::npos) << e;
  EXPECT_NE(e.find("\"h.1.mlp.c_fc.weight\""), std::string::npos) << e;
  EXPECT_NE(e.find("checksum"), std::string::npos) << e;
  EXPECT_EQ(CheckpointReader(ckpt).verify_all().size(), 1u);

  fs::resize_file(shard, fs::file_size(shard) - 100);
  e = error_of(load);
  EXPECT_NE(e.find(shard), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;

  fs::remove(shard);
  e = error_of(load);
  EXPECT_NE(e.find("missing its shard file " + shard), std::string::npos) << e;

  std::ofstream(ckpt + "/manifest.pb", std::ios::trunc) << "this is not a manifest";
  e = error_of(load);
  EXPECT_NE(e.find(ckpt + "/manifest.pb"), std::string::npos) << e;
  EXPECT_NE(e.find("corrupt"), std::string::npos) << e;
}

TEST(CheckpointTest, ResumeAutoWarnsAndFallsBackToThePreviousValidCheckpoint) {
  testing::TempDir dir("ckpt_fallback");
  parallel::SoloCommunicator world("world");
  TrainingRun run(8);
  Checkpointer c(policy(dir.str()), world);
  run.step(0);
  run.save(c, 1);
  run.step(1);
  run.save(c, 2);
  c.wait();
  corrupt_tensor(dir.str() + "/step-00000002", "wpe");

  TrainingRun other(9);
  std::vector<std::string> warnings;
  const Resumed r = resume("auto", dir.str(), run_config(), world, other.chunks(), other.optimizers(),
                           [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(r.resumed);
  EXPECT_EQ(r.progress.step, 1);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step-00000002"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("\"wpe\""), std::string::npos) << warnings[0];

  // Naming the corrupt checkpoint itself: an error, no fallback.
  const std::string e = error_of([&] {
    resume(dir.str() + "/step-00000002", dir.str(), run_config(), world, other.chunks(), other.optimizers(),
           [](const std::string&) {});
  });
  EXPECT_NE(e.find("\"wpe\""), std::string::npos) << e;

  // All unusable: an error rather than a silent fresh start.
  corrupt_tensor(dir.str() + "/step-00000001", "wte");
  const std::string all = error_of([&] {
    resume("auto", dir.str(), run_config(), world, other.chunks(), other.optimizers(), [](const std::string&) {});
  });
  EXPECT_NE(all.find("no usable checkpoint"), std::string::npos) << all;

  // Nothing there at all: start afresh.
  testing::TempDir empty("ckpt_empty");
  EXPECT_FALSE(resume("auto", empty.str(), run_config(), world, other.chunks(), other.optimizers(),
                      [](const std::string&) {}).resumed);
}

TEST(CheckpointTest, AModelOfAnotherShapeIsAnErrorListingTheDifferences) {
  testing::TempDir dir("ckpt_shape");
  parallel::SoloCommunicator world("world");
  TrainingRun run(10);
  Checkpointer c(policy(dir.str(), false), world);
  run.save(c, 1);
  GPTConfig wider = kConfig;
  wider.n_layer = 3;
  wider.n_embd = 48;
  GPT model(wider);
  GPT* chunk = &model;
  const std::string e = error_of([&] {
    resume("auto", dir.str(), run_config(wider), world, {&chunk, 1}, {}, [](const std::string&) {});
  });
  EXPECT_NE(e.find("different model"), std::string::npos) << e;
  EXPECT_NE(e.find("model.n_layer: checkpoint 2, config 3"), std::string::npos) << e;
  EXPECT_NE(e.find("model.n_embd: checkpoint 32, config 48"), std::string::npos) << e;
  EXPECT_EQ(e.find("n_head"), std::string::npos) << e;
}

TEST(CheckpointTest, AWeightsOnlyCheckpointStartsAFreshOptimizer) {
  testing::TempDir dir("ckpt_weights");
  parallel::SoloCommunicator world("world");
  TrainingRun run(11);
  run.step(0);
  Checkpointer c(policy(dir.str(), false), world);
  GPT* chunk = &run.model;
  c.save(run_config(), Progress{}, {&chunk, 1}, {}, "test");
  TrainingRun other(12);
  other.step(0);  // non-zero moments to be cleared
  const Resumed r = resume(c.last_committed(), dir.str(), run_config(), world, other.chunks(), other.optimizers(),
                           [](const std::string&) {});
  ASSERT_TRUE(r.resumed);
  EXPECT_FALSE(r.header.optimizer().has_moments());
  EXPECT_EQ(other.optimizer.step_count(), 0);
  EXPECT_EQ(bytes_of(other.model.parameter_arena()), bytes_of(run.model.parameter_arena()));
  const Tensor m = other.optimizer.moment_m();
  EXPECT_TRUE(std::all_of(m.f32(), m.f32() + m.numel(), [](float x) { return x == 0.0f; }));
}

TEST(CheckpointTest, ASecondRunResumedFromAnOlderCheckpointSavesAfterTheFirstRunsSaves) {
  testing::TempDir dir("ckpt_second_run");
  parallel::SoloCommunicator world("world");
  TrainingRun run(5);
  {
    Checkpointer first(Policy{dir.str(), 0, 0, false, 30}, world);
    run.save(first, 5);
    run.save(first, 9);
  }
  Checkpointer second(Policy{dir.str(), 0, 0, false, 30}, world);  // resumed from step 5, say
  run.save(second, 6);
  std::vector<std::string> names;
  for (const std::string& d : list_checkpoints(dir.str())) names.push_back(fs::path(d).filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"step-00000006", "step-00000009", "step-00000005"}));
  EXPECT_EQ(CheckpointReader(dir.str() + "/step-00000006").manifest().save_serial(), 3u);
  TrainingRun other(6);
  std::vector<std::string> warnings;
  const Resumed r = resume("auto", dir.str(), run_config(), world, other.chunks(), other.optimizers(),
                           [&](const std::string& w) { warnings.push_back(w); });
  EXPECT_EQ(r.progress.step, 6);
  EXPECT_TRUE(warnings.empty()) << warnings[0];
}

// A crash after a checkpoint was committed but before `latest` named it: resume takes the newer
// committed checkpoint, and says that `latest` disagrees.
TEST(CheckpointTest, ResumeAutoTakesTheNewestCommitWhenTheLatestPointerLagsAndSaysSo) {
  testing::TempDir dir("ckpt_lagging_latest");
  parallel::SoloCommunicator world("world");
  TrainingRun run(7);
  Checkpointer c(Policy{dir.str(), 0, 0, false, 30}, world);
  run.save(c, 10);
  run.save(c, 20);
  write_file_durably(dir.str() + "/latest", "step-00000010\n");
  EXPECT_EQ(fs::path(list_checkpoints(dir.str()).at(0)).filename(), "step-00000020");
  TrainingRun other(8);
  std::vector<std::string> warnings;
  auto resume_auto = [&] {
    warnings.clear();
    return resume("auto", dir.str(), run_config(), world, other.chunks(), other.optimizers(),
                  [&](const std::string& w) { warnings.push_back(w); });
  };
  EXPECT_EQ(resume_auto().progress.step, 20);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], dir.str() + "/latest names step-00000010 but step-00000020 was committed after it (a crash "
                                     "before the pointer moved?): resuming step-00000020");
  // No pointer at all (a crash before the first one was written).
  fs::remove(dir.str() + "/latest");
  EXPECT_EQ(resume_auto().progress.step, 20);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("latest is missing but step-00000020 was committed"), std::string::npos) << warnings[0];
  // The newest one corrupt: skipped with its own warning, and `latest`'s is the next one.
  write_file_durably(dir.str() + "/latest", "step-00000010\n");
  corrupt_tensor(dir.str() + "/step-00000020", "wpe");
  EXPECT_EQ(resume_auto().progress.step, 10);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step-00000020 is unusable"), std::string::npos) << warnings[0];
}

}  // namespace
}  // namespace loom::checkpoint
