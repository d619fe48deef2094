// `loom ckpt inspect|export|import` end to end, on a checkpoint saved in-process by the
// Checkpointer from a model that took one AdamW step (so that moments and a step count exist).
#include <bit>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "checkpoints/reader.h"
#include "core/base/file_io.h"
#include "core/optimizer.h"
#include "launch/loom_process.h"
#include "launch/run_setup.h"
#include "parallel/solo_communicator.h"
#include "reference/safetensors_logits.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
namespace ck = checkpoint;
using testing::expect_user_error;
using testing::run_loom;
using testing::TempDir;

class CkptCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = resolve_run_config("", {"model.n_layer=2", "model.n_head=4", "model.n_embd=32", "train.seed=5"});
    model_ = std::make_unique<GPT>(model_config_of(cfg_));
    model_->init_weights(5);
    AdamW optimizer(*model_, AdamWSettings{});
    const int B = 2, T = cfg_.model().seq_len(), V = cfg_.model().vocab_size();
    const std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T, 1, 0, V);
    const std::vector<int32_t> targets = testing::random_ints(static_cast<size_t>(B) * T, 2, 0, V);
    model_->forward(tokens.data(), targets.data(), B, T);
    model_->backward(1.0f, true, optimizer.gradients_ready());
    optimizer.finish_gradient_reduction();
    optimizer.step(1e-2f, optimizer.gradient_norm());

    parallel::SoloCommunicator world("world");
    ck::Policy policy;
    policy.root = root_.str();
    policy.async = false;
    ck::Checkpointer checkpointer(policy, world);
    ck::Progress progress;
    progress.step = 1;
    progress.tokens_seen = static_cast<uint64_t>(B) * T;
    GPT* chunk = model_.get();
    AdamW* opt = &optimizer;
    checkpointer.save(cfg_, progress, std::span<GPT* const>(&chunk, 1), std::span<AdamW* const>(&opt, 1));
    checkpointer.wait();
    dir_ = checkpointer.last_committed();
    ASSERT_EQ(fs::path(dir_).filename(), "step-00000001");
  }

  // The byte offset in rank-00000.shard of parameter `name`'s first slice.
  uint64_t offset_of(const std::string& name) const {
    const ck::CheckpointReader reader(dir_);
    for (const ck::TensorShard& t : reader.manifest().tensors()) {
      if (t.name() == name && t.state() == ck::STATE_PARAMETER) return t.offset();
    }
    ADD_FAILURE() << "no tensor " << name;
    return 0;
  }

  TempDir root_{"ckpt_cli"};
  config::RunConfig cfg_;
  std::unique_ptr<GPT> model_;
  std::string dir_;
};

TEST_F(CkptCliTest, InspectListsDescribesAndVerifies) {
  const testing::RunResult r = run_loom("ckpt inspect " + root_.str());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* needle :
       {"1 checkpoint under", "step-00000001", "format version  2, created by loom train", "step 1, ",
        "manifest checksum ok", "tp=1 x pp=1 x dp=1", "n_layer 2, n_head 4, n_embd 32", "AdamW, 1 updates, moments saved",
        "loader          none", "addition_problems", "rank-00000.shard", "h.1.attn.c_attn.weight  param   (96, 32)",
        "adam_v", "all checksums verified"}) {
    EXPECT_NE(r.out.find(needle), std::string::npos) << "missing '" << needle << "' in\n" << r.out;
  }
  EXPECT_EQ(r.out.find("CORRUPT"), std::string::npos) << r.out;
  // A checkpoint directory directly: no listing.
  const testing::RunResult direct = run_loom("ckpt inspect " + dir_);
  ASSERT_EQ(direct.exit_code, 0) << direct.out;
  EXPECT_EQ(direct.out.find("checkpoint under"), std::string::npos) << direct.out;
}

TEST_F(CkptCliTest, InspectNamesTheCorruptFileAndTensor) {
  const std::string shard = dir_ + "/rank-00000.shard";
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset_of("h.1.mlp.c_fc.weight") + 5));
    char byte = 0;
    f.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x10);
    f.seekp(static_cast<std::streamoff>(offset_of("h.1.mlp.c_fc.weight") + 5));
    f.write(&byte, 1);
  }
  const testing::RunResult r = run_loom("ckpt inspect " + dir_);
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find(shard), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\"h.1.mlp.c_fc.weight\""), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one failure expected:\n" << r.err;
  EXPECT_NE(r.out.find("CORRUPT"), std::string::npos) << r.out;
  const testing::RunResult skipped = run_loom("ckpt inspect --no-verify " + dir_);
  EXPECT_EQ(skipped.exit_code, 0) << skipped.out;
  EXPECT_NE(skipped.out.find("not verified"), std::string::npos) << skipped.out;
  // Export verifies what it reads.
  expect_user_error("ckpt export " + dir_ + " " + (root_ / "out.safetensors"), "h.1.mlp.c_fc.weight");
}

// A manifest that lost entries but carries a correct checksum (a writer's bug, a hand edit):
// inspect refuses it as export and resume do, with the same reason.
TEST_F(CkptCliTest, AnIncompleteCheckpointIsRefusedByInspectExportAndResumeAlike) {
  const std::string path = dir_ + "/" + ck::kManifestName;
  const std::string original = read_file(path, "manifest");
  struct Case {
    const char* name;
    bool all_states;  // remove the values and both moments, or only the Adam v
    const char* reason;
  };
  for (const Case& c : {Case{"h.1.ln_2.bias", true, "does not store tensor \"h.1.ln_2.bias\""},
                        Case{"wpe", false, "tensor \"wpe\" (Adam v) is missing"}}) {
    SCOPED_TRACE(c.name);
    ck::Manifest m;
    ASSERT_TRUE(m.ParseFromString(original));
    auto* tensors = m.mutable_tensors();
    for (int i = tensors->size() - 1; i >= 0; --i) {
      const ck::TensorShard& t = tensors->Get(i);
      if (t.name() == c.name && (c.all_states || t.state() == ck::STATE_ADAM_V)) tensors->DeleteSubrange(i, 1);
    }
    write_file_durably(path, ck::serialize_manifest(m));
    expect_user_error("ckpt inspect " + dir_, c.reason);
    expect_user_error("ckpt inspect --no-verify " + root_.str(), c.reason);
    expect_user_error("ckpt export " + dir_ + " " + (root_ / "out.safetensors"), c.reason);
    GPT model(model_config_of(cfg_));
    AdamW optimizer(model, AdamWSettings{});
    GPT* chunk = &model;
    AdamW* opt = &optimizer;
    parallel::SoloCommunicator world("world");
    for (const std::string& spec : {std::string("auto"), dir_}) {  // auto: skipped with the reason
      std::string said;
      try {
        ck::resume(spec, root_.str(), cfg_, world, std::span<GPT* const>(&chunk, 1), std::span<AdamW* const>(&opt, 1),
                   [&](const std::string& w) { said += w; });
        ADD_FAILURE() << "resumed an incomplete checkpoint";
      } catch (const UserError& e) {
        said += e.what();
      }
      EXPECT_NE(said.find(c.reason), std::string::npos) << said;
    }
  }
  write_file_durably(path, original);
  EXPECT_EQ(run_loom("ckpt inspect " + dir_).exit_code, 0);
}

TEST_F(CkptCliTest, ExportedFileGivesLoomsLogitsInPyTorch) {
  const std::string out = root_ / "model.safetensors";
  const testing::RunResult r = run_loom("ckpt export " + root_.str() + " --format safetensors " + out);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("exported"), std::string::npos) << r.out;
  const int B = 2, T = 7, V = model_->config().vocab_size;
  const std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T, 3, 0, V);
  const std::vector<float> ref = testing::torch_logits_of(out, tokens, B, T, V, root_);
  ASSERT_FALSE(ref.empty());
  EXPECT_TRUE(testing::all_close(testing::loom_logits_of(*model_, tokens, B, T), ref, 1e-4, 1e-4));
}

TEST_F(CkptCliTest, ImportThenInspectAndLoad) {
  const std::string file = root_ / "model.safetensors";
  ASSERT_EQ(run_loom("ckpt export " + dir_ + " " + file).exit_code, 0);
  const std::string imported = root_ / "imported";
  const testing::RunResult r = run_loom("ckpt import " + file + " " + imported);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("--init-from " + imported), std::string::npos) << r.out;

  const testing::RunResult info = run_loom("ckpt inspect " + imported);
  ASSERT_EQ(info.exit_code, 0) << info.out;
  for (const char* needle : {"step-00000000", "created by loom ckpt import", "step 0, 0 tokens",
                                    "no moments", "n_layer 2, n_head 4, n_embd 32", "all checksums verified"}) {
    EXPECT_NE(info.out.find(needle), std::string::npos) << "missing '" << needle << "' in\n" << info.out;
  }
  EXPECT_EQ(info.out.find("adam_m"), std::string::npos) << info.out;

  // The weights are the original model's, bit for bit, and the saved config builds the model.
  const config::RunConfig saved = resolve_run_config(imported + "/config.pbtxt", {});
  EXPECT_TRUE(ck::model_differences(saved, cfg_).empty());
  const ck::CheckpointReader reader(imported + "/step-00000000");
  EXPECT_TRUE(ck::model_differences(reader.manifest().config(), cfg_).empty());
  GPT back(model_config_of(saved));
  GPT* chunk = &back;
  ck::load_state(reader, std::span<GPT* const>(&chunk, 1), {});
  for (size_t i = 0; i < back.parameters().size(); ++i) {
    const Parameter& a = back.parameters()[i];
    const Parameter& b = model_->parameters()[i];
    for (int64_t j = 0; j < a.value.numel(); ++j) {
      ASSERT_EQ(std::bit_cast<uint32_t>(a.value.f32()[j]), std::bit_cast<uint32_t>(b.value.f32()[j]))
          << a.name << " index " << j;
    }
  }
  // Importing again into a directory that holds checkpoints is refused.
  expect_user_error("ckpt import " + file + " " + imported, "already holds checkpoints");
}

TEST_F(CkptCliTest, ImportChecksTheConfigAgainstTheFile) {
  const std::string file = root_ / "model.safetensors";
  ASSERT_EQ(run_loom("ckpt export " + dir_ + " " + file).exit_code, 0);
  expect_user_error("ckpt import " + file + " " + (root_ / "a") + " --set model.n_layer=3 --set model.n_embd=32",
                    "model.n_layer is 3 in the config but 2 in the file");
  expect_user_error("ckpt import " + file + " " + (root_ / "b") + " --n-head 2", "n_head = 4");
  expect_user_error("ckpt import " + file + " " + (root_ / "c") + " --set model.n_head=8",
                    "model.n_head is 8 in the config but 4 in the file");
  // A config with another model section: its unset fields come from the file.
  const std::string config = root_ / "small.pbtxt";
  std::ofstream(config) << "model { n_embd: 32 }\ndata { addition { digits: 2 } }\n";
  const testing::RunResult r = run_loom("ckpt import " + file + " " + (root_ / "d") + " --config " + config);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const config::RunConfig saved = resolve_run_config(root_ / "d/config.pbtxt", {});
  EXPECT_EQ(saved.data().addition().digits(), 2);
  EXPECT_TRUE(ck::model_differences(saved, cfg_).empty());
}

TEST_F(CkptCliTest, UserErrorsAndHelp) {
  expect_user_error("ckpt inspect " + (root_ / "nothing"), "neither a checkpoint");
  expect_user_error("ckpt export " + dir_ + " --format onnx " + (root_ / "x"), "onnx");
  expect_user_error("ckpt import " + (root_ / "missing.safetensors") + " " + (root_ / "x"), "missing.safetensors");
  expect_user_error("ckpt frobnicate", "unknown subcommand 'frobnicate'");
  expect_user_error("ckpt inspect --verify --no-verify " + dir_, "contradict");
  const std::vector<std::pair<std::string, std::vector<std::string>>> helps = {
      {"inspect", {"--verify", "--no-verify", "--help"}},
      {"export", {"--format", "--help"}},
      {"import", {"--config", "--set", "--n-head", "--help"}},
  };
  for (const auto& [sub, flags] : helps) {
    const testing::RunResult r = run_loom("ckpt " + sub + " --help");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    for (const std::string& flag : flags) EXPECT_NE(r.out.find(flag), std::string::npos) << sub << ": " << flag;
  }
  const testing::RunResult top = run_loom("--help");
  EXPECT_NE(top.out.find("ckpt"), std::string::npos) << top.out;
}

}  // namespace
}  // namespace loom
