// A trainable tensor and the part of the global (unsharded) tensor this rank holds.
//
// A tensor-parallel rank holds one or more rectangular blocks of the global matrix (1-D tensors
// are (n, 1) matrices): rows of a column-parallel weight, columns of a row-parallel one, the
// q, k and v rows of its heads in the fused QKV weight, a slice of the vocabulary. The blocks lie
// one after another in local memory, each row-major. Initial values are drawn at each element's
// *global* index, so every layout starts from the single-rank weights, and the blocks say where
// each local value goes when a full tensor is assembled (tests, checkpoints).
#pragma once

#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace loom {

struct ShardBlock {
  int64_t row0 = 0;  // first global row
  int64_t rows = 0;
  int64_t col0 = 0;  // first global column
  int64_t cols = 0;
};

struct Parameter {
  std::string name;
  Shape global_shape;
  std::vector<ShardBlock> blocks;  // in local memory order
  Tensor value;                    // local values (f32: the master copy)
  Tensor grad;                     // local gradient, same layout, f32
  Tensor compute;                  // the values the model's ops read: `value` itself in fp32, a
                                   // bf16 rounding of it in bf16 precision
  bool decay = false;              // weight decay applies (matrices and embeddings)
  bool tp_replicated = false;      // every tensor-parallel rank holds the whole tensor
  bool tied_copy = false;          // a second copy of a tensor another stage holds (the last
                                   // stage's wte): not counted twice in the gradient norm
};

// Columns of the global tensor seen as a matrix: the last dimension, 1 for vectors.
int64_t global_columns(const Shape& shape);
// Elements held locally: the sum of the blocks' sizes.
int64_t local_elements(const std::vector<ShardBlock>& blocks);

// value[i] = mean + std * N(0,1) drawn at the global index of local element i.
void fill_parameter_normal(const Parameter& p, const CounterRng& rng, float mean, float std);

// Writes the local values `local` (laid out as p's blocks) into their places in `global`
// (global_shape, row-major). Other elements of `global` are left as they are.
void place_into_global(const Parameter& p, const float* local, float* global);

}  // namespace loom
