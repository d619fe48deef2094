// The example configs in configs/: each parses and validates (token data need not exist for
// that), the GPT-2 ones have GPT-2's shapes and 0.5M tokens per step, and configs/tiny.pbtxt
// trains through `loom train` with a falling loss.
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/gpt.h"
#include "launch/loom_process.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

std::string config_path(const std::string& name) { return std::string(LOOM_SOURCE_DIR) + "/configs/" + name; }

TEST(ConfigsTest, EveryShippedConfigParsesAndValidates) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(std::string(LOOM_SOURCE_DIR) + "/configs")) {
    SCOPED_TRACE(entry.path().string());
    EXPECT_EQ(entry.path().extension(), ".pbtxt");
    config::RunConfig cfg;
    ASSERT_NO_THROW(cfg = load_config_file(entry.path().string()));
    EXPECT_NO_THROW(validate_config(cfg));
    EXPECT_NO_THROW(pipeline_split(cfg));
    ++count;
  }
  EXPECT_GE(count, 5);
}

TEST(ConfigsTest, Gpt2ConfigsHaveGpt2ShapesAndHalfAMillionTokensPerStep) {
  struct Shape {
    std::string file;
    int n_layer, n_head, n_embd;
  };
  for (const Shape& s : {Shape{"gpt2-124m.pbtxt", 12, 12, 768}, Shape{"gpt2-1.5b.pbtxt", 48, 25, 1600}}) {
    SCOPED_TRACE(s.file);
    const config::RunConfig cfg = load_config_file(config_path(s.file));
    EXPECT_EQ(cfg.model().n_layer(), s.n_layer);
    EXPECT_EQ(cfg.model().n_head(), s.n_head);
    EXPECT_EQ(cfg.model().n_embd(), s.n_embd);
    EXPECT_GE(cfg.model().vocab_size(), 50257);  // GPT-2's tokenizer
    EXPECT_EQ(cfg.model().seq_len(), 1024);
    ASSERT_TRUE(cfg.data().has_tokens());
    const int64_t tokens_per_step = int64_t{cfg.train().micro_batch_size()} * cfg.parallel().dp() *
                                    cfg.train().grad_accum_steps() * cfg.data().tokens().seq_len();
    EXPECT_EQ(tokens_per_step, 524288);
    EXPECT_EQ(cfg.optimizer().weight_decay(), 0.1f);
    EXPECT_EQ(cfg.optimizer().grad_clip(), 1.0f);
    EXPECT_EQ(cfg.optimizer().beta2(), 0.95f);
    EXPECT_GT(cfg.checkpoint().every(), 0);
  }
}

// The Llama configs have the parameter counts of the models whose shapes they carry (as Hugging
// Face's model cards and safetensors headers count them).
TEST(ConfigsTest, LlamaConfigsHaveTheirModelsParameterCounts) {
  struct Count {
    std::string file;
    int64_t parameters;
  };
  for (const Count& c : {Count{"smollm-135m.pbtxt", 134515008}, Count{"llama3-1b.pbtxt", 1235814400},
                         Count{"llama3-8b.pbtxt", 8030261248}}) {
    SCOPED_TRACE(c.file);
    const config::RunConfig cfg = load_config_file(config_path(c.file));
    const GPTConfig model = gpt_config_of(cfg.model());
    EXPECT_TRUE(model.llama());
    int64_t n = 0;
    for (const GPT::ParameterShape& p : GPT::parameter_shapes(model)) n += p.global.numel();
    EXPECT_EQ(n, c.parameters);
  }
}

TEST(ConfigsTest, TinyTrainsWithAFallingLoss) {
  const fs::path out = fs::temp_directory_path() / ("loom_tiny_" + std::to_string(::getpid()));
  const testing::RunResult r =
      testing::run_loom("train " + config_path("tiny.pbtxt") + " --set train.steps=60 --set train.log_every=20 " +
                        "--set train.eval_every=0 --set train.samples=0 --set train.out_dir=" + out.string());
  fs::remove_all(out);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  static const std::regex line(R"(step +(\d+)/60 \| loss ([0-9.]+))");
  std::vector<double> losses;
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), line); it != std::sregex_iterator(); ++it) {
    losses.push_back(std::stod((*it)[2]));
  }
  ASSERT_EQ(losses.size(), 3u) << r.out;
  EXPECT_LT(losses.back(), losses.front()) << r.out;
}

}  // namespace
}  // namespace loom
