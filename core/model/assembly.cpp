#include "core/model/assembly.h"

#include <cstring>
#include <string>

#include "core/base/check.h"
#include "core/model/layout.h"

namespace loom {
namespace {

constexpr int kAssembleTag = 7;  // point-to-point tag of the tensors sent to rank 0

// The pipeline rank that holds block `block`: that of the virtual stage whose blocks include it.
int pipeline_rank_of_block(int block, const std::vector<int>& blocks_per_stage, int pp) {
  int stage = 0;
  for (int end = blocks_per_stage[0]; block >= end; end += blocks_per_stage[static_cast<size_t>(++stage)]) {
  }
  return stage % pp;
}

}  // namespace

void assemble_whole_model(std::span<GPT* const> chunks, const parallel::ProcessGrid& grid,
                          const std::vector<int>& blocks_per_stage, GPT* whole) {
  const bool rank0 = grid.world().rank() == 0;
  LOOM_CHECK((whole != nullptr) == rank0, "the whole model goes to world rank 0 alone; rank", grid.world().rank(),
             "passed", whole ? "one" : "none");
  LOOM_CHECK(!chunks.empty(), "no model chunks to assemble on rank", grid.world().rank());
  if (whole) LOOM_CHECK(whole->config() == chunks[0]->config(), "the whole model's config differs from the chunks'");
  const int pp = grid.shape().pp;
  const bool sender = grid.coord().dp == 0 && grid.coord().tp == 0 && grid.coord().pp > 0;
  std::vector<std::vector<float>> mine;  // in block order: chunk by chunk, ln_f last
  for (GPT* chunk : chunks) {
    for (const Parameter& p : chunk->parameters()) {
      std::vector<float> global = gather_parameter(*chunk, p, &grid.tp());  // host buffers over the grid's group
      if (whole) std::memcpy(whole->parameter(p.name).value.raw(), global.data(), global.size() * sizeof(float));
      if (sender && !p.tied_copy) mine.push_back(std::move(global));
    }
  }
  if (pp == 1 || grid.coord().dp != 0 || grid.coord().tp != 0) return;
  if (sender) {
    for (const std::vector<float>& t : mine) grid.pp().send(t.data(), t.size(), DType::kF32, 0, kAssembleTag);
    return;
  }
  // Rank 0 receives, rank by rank, the tensors in the order each rank holds them. The layout
  // says where each is: a block's on its block's pipeline rank, the ones before the blocks (the
  // embeddings) on rank 0, the ones after them (the head) on the last.
  const GPTConfig& config = whole->config();
  const std::vector<TensorSpec> layout = model_layout(config, 0, config.n_layer, true, true);
  std::vector<Parameter>& params = whole->parameters();
  LOOM_CHECK(layout.size() == params.size(), "the layout lists", layout.size(), "tensors, the model holds", params.size());
  bool seen_block = false;
  std::vector<int> owners;
  for (const TensorSpec& t : layout) {
    seen_block = seen_block || t.layer >= 0;
    owners.push_back(t.layer >= 0 ? pipeline_rank_of_block(t.layer, blocks_per_stage, pp) : seen_block ? pp - 1 : 0);
  }
  for (int rank = 1; rank < pp; ++rank) {
    for (size_t i = 0; i < params.size(); ++i) {
      if (owners[i] != rank) continue;
      Parameter& p = params[i];
      grid.pp().recv(p.value.raw(), static_cast<size_t>(p.value.numel()), DType::kF32, rank, kAssembleTag);
    }
  }
}

}  // namespace loom
