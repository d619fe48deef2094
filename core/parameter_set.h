// ParameterSet: what an optimizer updates, without the model around it.
//
// One model chunk's parameters on this rank, as views into three flat arenas (f32 master weights,
// f32 gradients, and the copy the ops read, in the precision's dtype), the groups over which a
// global gradient norm is summed, and the backend that runs the update where the arenas live. A
// model hands one out (GPT::parameter_set()); the optimizer, checkpoints and whole-model assembly
// need nothing else of it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend/backend.h"
#include "core/parameter.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace loom {

struct ParameterSet {
  const std::vector<Parameter>* parameters = nullptr;  // views into the arenas, in arena order
  Tensor master;   // (n) f32, padded to the arena multiple
  Tensor grads;    // (n) f32, same layout
  Tensor compute;  // (n) activation dtype; absent when it is `master` itself (fp32)
  parallel::Communicator* tp = nullptr;  // the tensor-parallel group (a one-rank one without tp)
  parallel::Communicator* pp = nullptr;  // the pipeline group (a one-rank one without pp)
  Backend* backend = nullptr;

  int64_t size() const { return master.numel(); }
  // Offset of a parameter's first element in the arenas.
  int64_t offset_of(const Parameter& p) const { return p.value.f32() - master.f32(); }
};

}  // namespace loom
