// The parameter layouts of GPT-2 and Llama: the facts every reader takes from them, and shards
// that cover each tensor exactly once for every tensor-parallel size.
#include "core/model/layout.h"

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/base/check.h"
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

// Every element of every tensor of `layout` is held by exactly one rank of tp (replicated ones by
// every rank).
void expect_shards_cover(const std::vector<TensorSpec>& layout, const GPTConfig& config, int tp) {
  for (const TensorSpec& t : layout) {
    const int64_t rows = t.global[0], cols = t.global.rank() == 1 ? 1 : t.global[1];
    std::vector<int> covered(static_cast<size_t>(rows * cols), 0);
    for (int r = 0; r < tp; ++r) {
      for (const ShardBlock& b : shard_blocks(t, config, tp, r)) {
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

TEST(Gpt2LayoutTest, ShardsCoverEachTensorExactlyOnce) {
  const std::vector<TensorSpec> layout = gpt2_layout(kConfig, 0, kConfig.n_layer, true, true);
  for (int tp : {1, 2, 3, 6}) expect_shards_cover(layout, kConfig, tp);
}

// A Llama of 8 query heads of size 8 sharing 4 key/value heads, MLP 40 wide.
GPTConfig llama_config(bool tied, bool qkv_bias) {
  GPTConfig c{3, 8, 64, 53, 12};
  c.family = Family::kLlama;
  c.n_kv_head = 4;
  c.intermediate_size = 40;
  c.tie_embeddings = tied;
  c.qkv_bias = qkv_bias;
  return c;
}

TEST(LlamaLayoutTest, EveryTensorOnceWithItsFacts) {
  const GPTConfig c = llama_config(false, false);
  const std::vector<TensorSpec> layout = model_layout(c, 0, c.n_layer, true, true);
  ASSERT_EQ(layout.size(), 1u + 6u * 3 + 2);
  EXPECT_EQ(block_tensor_count(c), 6u);
  EXPECT_EQ(layout.front().name, "embed_tokens.weight");
  EXPECT_EQ(layout[layout.size() - 2].name, "norm.weight");
  EXPECT_EQ(layout.back().name, "lm_head.weight");
  EXPECT_TRUE(layout.back().output_projection);
  EXPECT_EQ(layout.back().sharding, Sharding::kVocabRows);
  const TensorSpec* qkv = find_spec(layout, "layers.1.self_attn.qkv_proj.weight");
  ASSERT_NE(qkv, nullptr);
  EXPECT_EQ(qkv->global, (Shape{(8 + 2 * 4) * 8, 64}));
  EXPECT_EQ(qkv->sharding, Sharding::kQkvRows);
  EXPECT_EQ(find_spec(layout, "layers.2.mlp.gate_up_proj.weight")->global, (Shape{80, 64}));
  EXPECT_EQ(find_spec(layout, "layers.2.mlp.down_proj.weight")->global, (Shape{64, 40}));
  EXPECT_EQ(find_spec(layout, "layers.2.mlp.down_proj.weight")->init, Init::kNormal) << "no residual scaling";
  EXPECT_EQ(find_spec(layout, "layers.0.self_attn.o_proj.weight")->sharding, Sharding::kColumns);
  EXPECT_EQ(find_spec(layout, "layers.0.self_attn.qkv_proj.bias"), nullptr);
  EXPECT_FALSE(find_spec(layout, "layers.0.input_layernorm.weight")->decay);
  EXPECT_TRUE(find_spec(layout, "layers.0.post_attention_layernorm.weight")->partial_under_sequence_parallel);
  for (const TensorSpec& t : layout) EXPECT_FALSE(t.hf_transposed) << t.name;

  // Tied: no lm_head, and the last stage holds its copy of embed_tokens; biases when asked.
  const GPTConfig tied = llama_config(true, true);
  EXPECT_EQ(block_tensor_count(tied), 7u);
  const std::vector<TensorSpec> last = model_layout(tied, 2, 3, false, true);
  ASSERT_EQ(last.size(), 1u + 7u + 1u);
  EXPECT_EQ(last.front().name, "embed_tokens.weight");
  EXPECT_EQ(last[3].name, "layers.2.self_attn.qkv_proj.bias");
  EXPECT_EQ(last.back().name, "norm.weight");
  // Untied: the last stage has no embedding, the first no head.
  const GPTConfig untied = llama_config(false, false);
  EXPECT_EQ(model_layout(untied, 2, 3, false, true).front().name, "layers.2.input_layernorm.weight");
  EXPECT_EQ(model_layout(untied, 0, 1, true, false).back().name, "layers.0.mlp.down_proj.weight");
}

TEST(LlamaLayoutTest, ShardsCoverEachTensorExactlyOnce) {
  for (bool bias : {false, true}) {
    const GPTConfig c = llama_config(false, bias);
    const std::vector<TensorSpec> layout = model_layout(c, 0, c.n_layer, true, true);
    for (int tp : {1, 2, 4}) expect_shards_cover(layout, c, tp);
  }
}

TEST(LlamaLayoutTest, ARankHoldsWholeKeyValueGroupsWithTheirQueryHeads) {
  const GPTConfig c = llama_config(false, false);
  const TensorSpec* qkv = find_spec(model_layout(c, 0, 1, true, true), "layers.0.self_attn.qkv_proj.weight");
  ASSERT_NE(qkv, nullptr);
  // tp = 2, rank 1: query heads 4..7 (rows 32..63), key/value heads 2, 3 (k rows 64 + 16..31,
  // v rows 96 + 16..31): query heads 4, 5 read kv head 2 and 6, 7 kv head 3, as on one rank.
  const std::vector<ShardBlock> blocks = shard_blocks(*qkv, c, 2, 1);
  ASSERT_EQ(blocks.size(), 3u);
  EXPECT_EQ(blocks[0].row0, 32);
  EXPECT_EQ(blocks[0].rows, 32);
  EXPECT_EQ(blocks[1].row0, 64 + 16);
  EXPECT_EQ(blocks[1].rows, 16);
  EXPECT_EQ(blocks[2].row0, 96 + 16);
  EXPECT_EQ(blocks[2].rows, 16);
}

TEST(LlamaConfigTest, ValidatesItsFields) {
  GPTConfig c = llama_config(false, false);
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.kv_heads(), 4);
  EXPECT_EQ(c.mlp_hidden(), 40);
  c.intermediate_size = 0;
  EXPECT_EQ(c.mlp_hidden(), 256) << "8 x 64 / 3 = 170, rounded up to 256";
  EXPECT_EQ(llama_intermediate_size(4096), 11008);
  c.n_kv_head = 3;
  EXPECT_THROW(c.validate(), UserError);
  c.n_kv_head = 4;
  c.rope_theta = 0;
  EXPECT_THROW(c.validate(), UserError);
  c.rope_theta = 10000;
  c.n_embd = 72;
  c.n_head = 8;  // head size 9: odd
  EXPECT_THROW(c.validate(), UserError);
}

}  // namespace
}  // namespace loom
