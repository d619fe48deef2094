// The whole model from the shards of a parallel layout: what a run writes to its model file and
// samples from. Every rank holds a tensor-parallel shard of one pipeline stage (or of several
// virtual stages when the pipeline is interleaved); world rank 0 ends with every tensor of the
// model whole, in a GPT of its own.
//
// The tensors travel as the parameter layout places them: each chunk gathers its shards over its
// tensor-parallel group (gather_parameter), and the pipeline ranks after the first send theirs
// to rank 0 over the pipeline group of data-parallel replica 0, in the order each holds them.
// The last stage's copy of the tied wte stays home: rank 0 holds the first stage's.
#pragma once

#include <span>
#include <vector>

#include "core/gpt.h"
#include "parallel/process_grid.h"

namespace loom {

// Assembles the whole model in `whole` on world rank 0 (null on every other rank): a GPT of the
// chunks' config holding every tensor (one stage, no tensor parallelism; gradients not needed).
// `chunks`: this rank's model chunks, one per virtual stage it holds, in chunk order;
// `blocks_per_stage`: the blocks of each virtual stage, virtual stage k living on pipeline rank
// k % pp (model_parallel_for's split). Collective over the grid's world.
void assemble_whole_model(std::span<GPT* const> chunks, const parallel::ProcessGrid& grid,
                          const std::vector<int>& blocks_per_stage, GPT* whole);

}  // namespace loom
