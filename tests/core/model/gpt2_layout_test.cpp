// GPT-2's parameter layout: the facts every reader takes from it, and shards that cover each
// tensor exactly once for every tensor-parallel size.
#include "core/model/gpt2_layout.h"

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/gpt.h"

namespace loom {
namespace {

const GPTConfig kConfig{3, 6, 48, 53, 12};  // 53: vocabulary slices of unequal size

TEST(Gpt2LayoutTest, EveryTensorOnceWithItsFacts) {
  const std::vector<TensorSpec> layout = gpt2_layout(kConfig, 0, kConfig.n_layer, true, true);
  ASSERT_EQ(layout.size(), 2u + 12u * 3 + 2);
  EXPECT_EQ(layout.front().name, "wte");
  EXPECT_EQ(layout.back().name, "ln_f.bias");
  std::map<std::string, int> seen;
  for (const TensorSpec& t : layout) ++seen[t.name];
  for (const auto& [name, count] : seen) EXPECT_EQ(count, 1) << name;

  const TensorSpec* qkv = find_spec(layout, "h.1.attn.c_attn.weight");
  ASSERT_NE(qkv, nullptr);
  EXPECT_EQ(qkv->global, (Shape{144, 48}));
  EXPECT_EQ(qkv->sharding, Sharding::kQkvRows);
  EXPECT_TRUE(qkv->decay && qkv->hf_transposed);
  EXPECT_EQ(find_spec(layout, "h.2.mlp.c_proj.weight")->init, Init::kResidualNormal);
  EXPECT_EQ(find_spec(layout, "h.0.ln_2.weight")->init, Init::kOnes);
  EXPECT_TRUE(find_spec(layout, "h.0.ln_2.bias")->partial_under_sequence_parallel);
  EXPECT_FALSE(find_spec(layout, "h.0.attn.c_proj.bias")->partial_under_sequence_parallel);
  EXPECT_FALSE(find_spec(layout, "wte")->hf_transposed);
  EXPECT_EQ(find_spec(layout, "nothing"), nullptr);
  int transposed = 0;
  for (const TensorSpec& t : layout) transposed += t.hf_transposed ? 1 : 0;
  EXPECT_EQ(transposed, 4 * kConfig.n_layer) << "the four Conv1D weights of each block";

  // A middle pipeline stage holds its blocks only; the last one wte (tied) and ln_f.
  const std::vector<TensorSpec> middle = gpt2_layout(kConfig, 1, 2, false, false);
  ASSERT_EQ(middle.size(), 12u);
  EXPECT_EQ(middle.front().name, "h.1.ln_1.weight");
  const std::vector<TensorSpec> last = gpt2_layout(kConfig, 2, 3, false, true);
  EXPECT_EQ(last.front().name, "wte");
  EXPECT_EQ(last.back().name, "ln_f.bias");
}

TEST(Gpt2LayoutTest, ShardsCoverEachTensorExactlyOnce) {
  const std::vector<TensorSpec> layout = gpt2_layout(kConfig, 0, kConfig.n_layer, true, true);
  for (int tp : {1, 2, 3, 6}) {
    for (const TensorSpec& t : layout) {
      const int64_t rows = t.global[0], cols = t.global.rank() == 1 ? 1 : t.global[1];
      std::vector<int> covered(static_cast<size_t>(rows * cols), 0);
      for (int r = 0; r < tp; ++r) {
        for (const ShardBlock& b : shard_blocks(t, kConfig, tp, r)) {
          for (int64_t i = b.row0; i < b.row0 + b.rows; ++i) {
            for (int64_t j = b.col0; j < b.col0 + b.cols; ++j) ++covered[static_cast<size_t>(i * cols + j)];
          }
        }
      }
      const int want = t.sharding == Sharding::kReplicated ? tp : 1;
      for (size_t i = 0; i < covered.size(); ++i) {
        ASSERT_EQ(covered[i], want) << t.name << " tp=" << tp << " element " << i;
      }
    }
  }
}

}  // namespace
}  // namespace loom
