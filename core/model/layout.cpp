#include "core/model/layout.h"

#include "core/base/check.h"
#include "core/gpt.h"

namespace loom {

int64_t split_start(int64_t total, int parts, int index) { return total * index / parts; }

std::vector<TensorSpec> model_layout(const GPTConfig& config, int first_layer, int end_layer, bool first_stage,
                                     bool last_stage) {
  return config.llama() ? llama_layout(config, first_layer, end_layer, first_stage, last_stage)
                        : gpt2_layout(config, first_layer, end_layer, first_stage, last_stage);
}

size_t block_tensor_count(const GPTConfig& config) {
  if (!config.llama()) return 12;
  return config.qkv_bias ? 7 : 6;
}

const char* token_embedding_name(const GPTConfig& config) { return config.llama() ? "embed_tokens.weight" : "wte"; }

std::vector<ShardBlock> shard_blocks(const TensorSpec& spec, const GPTConfig& config, int tp, int tp_rank) {
  const Shape& g = spec.global;
  const int64_t rows = g[0], cols = g.rank() == 1 ? 1 : g[1];
  const int64_t HS = config.head_size(), NH = config.n_head, NKV = config.kv_heads();
  switch (spec.sharding) {
    case Sharding::kReplicated:
      return {{0, rows, 0, cols}};
    case Sharding::kRows: {
      const int64_t per = rows / tp;
      return {{tp_rank * per, per, 0, cols}};
    }
    case Sharding::kColumns: {
      const int64_t per = cols / tp;
      return {{0, rows, tp_rank * per, per}};
    }
    case Sharding::kQkvRows: {
      // Query heads [h0, h0 + NH/tp) and the key/value heads that serve them, [g0, g0 + NKV/tp).
      const int64_t heads = NH / tp, h0 = tp_rank * heads;
      const int64_t groups = NKV / tp, g0 = tp_rank * groups;
      return {{h0 * HS, heads * HS, 0, cols},
              {(NH + g0) * HS, groups * HS, 0, cols},
              {(NH + NKV + g0) * HS, groups * HS, 0, cols}};
    }
    case Sharding::kGateUpRows: {
      const int64_t F = rows / 2, per = F / tp;
      return {{tp_rank * per, per, 0, cols}, {F + tp_rank * per, per, 0, cols}};
    }
    case Sharding::kVocabRows: {
      const int64_t start = split_start(rows, tp, tp_rank);
      return {{start, split_start(rows, tp, tp_rank + 1) - start, 0, cols}};
    }
  }
  LOOM_CHECK(false, "tensor", spec.name, "has an unknown sharding");
  return {};
}

const TensorSpec* find_spec(const std::vector<TensorSpec>& layout, const std::string& name) {
  for (const TensorSpec& s : layout) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

}  // namespace loom
