#include "core/model/assembly.h"

#include <cstring>
#include <string>

#include "core/base/check.h"

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
  // Rank 0 receives, rank by rank, the tensors in the order each rank holds them.
  for (int rank = 1; rank < pp; ++rank) {
    for (Parameter& p : whole->parameters()) {
      if (p.name == "wte" || p.name == "wpe") continue;
      const bool head = p.name.rfind("ln_f.", 0) == 0;
      const int owner =
          head ? pp - 1
               : pipeline_rank_of_block(std::stoi(p.name.substr(2, p.name.find('.', 2) - 2)), blocks_per_stage, pp);
      if (owner != rank) continue;
      grid.pp().recv(p.value.raw(), static_cast<size_t>(p.value.numel()), DType::kF32, rank, kAssembleTag);
    }
  }
}

}  // namespace loom
