// AdamW over a model's parameters, data parallel with ZeRO-1, with global-norm gradient clipping,
// and the learning-rate schedule (linear warmup, then cosine decay to a floor).
//
// The model's gradients live in one flat arena. It is cut into buckets of about
// `bucket_elements` (each a multiple of dp). During the backward of the last micro-batch of a
// step, the model reports how much of the arena is final; every bucket that is complete is
// reduce-scattered over the data-parallel group at once, while the backward goes on (overlap).
// Data-parallel rank r keeps the r-th slice of every bucket: the summed gradient, the fp32 Adam
// moments and the update of exactly those elements (ZeRO stage 1). After its update it
// all-gathers each bucket's parameters so that every replica holds the new weights.
// With dp = 1 the single slice is the whole arena and nothing is communicated.
//
// The optimizer works on a ParameterSet (core/parameter_set.h), not on the model: its state
// lives where the set's arenas live (the set's backend allocates it), and the sum of squares of
// the gradients and the AdamW update run through that backend. The host reads one scalar per
// step, this rank's sum of squares, to form the global norm.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/gpt.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace loom {

struct AdamWSettings {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;  // max global norm; 0 disables
};

// lr at 0-based `step` of `total_steps`: (step+1)/warmup * peak during warmup, then a cosine
// from peak down to peak * min_ratio at the last step.
float lr_at_step(int64_t step, int64_t total_steps, float peak_lr, int64_t warmup_steps,
                 float min_ratio);

class AdamW {
 public:
  // `dp` null: one replica. The model's arenas must be padded to a multiple of dp
  // (ModelParallel::arena_multiple).
  AdamW(const ParameterSet& parameters, const AdamWSettings& settings, parallel::Communicator* dp = nullptr,
        int64_t bucket_elements = int64_t{1} << 20);
  // The parameters of `model` (GPT::parameter_set()).
  AdamW(GPT& model, const AdamWSettings& settings, parallel::Communicator* dp = nullptr,
        int64_t bucket_elements = int64_t{1} << 20);
  ~AdamW();

  // Pass to GPT::backward of the last micro-batch: posts the reduce-scatter of every bucket
  // whose gradients are final (arena elements from `offset` on).
  GradientsReady gradients_ready();
  // Posts what is left and waits for every bucket's reduction.
  void finish_gradient_reduction();
  // Global L2 norm of the (data-parallel summed) gradients over every rank that holds a part of
  // the model; tensor-parallel replicated tensors and the tied wte counted once. Collective.
  double gradient_norm() const;
  // This rank's part of the squared global norm (no communication).
  double local_gradient_square_sum() const;
  // `into` (1) of the backend's accumulator dtype += this rank's part of the squared global norm,
  // on the device (nothing read back).
  void add_gradient_square_sum(const Tensor& into) const;
  // A device scalar of the accumulator dtype this optimizer lends to global_gradient_norm().
  const Tensor& square_sum_scalar() const { return square_sum_; }
  // One update of this rank's slice with learning rate `lr`, clipping by `grad_norm`, then the
  // all-gather of the new parameters.
  void step(float lr, double grad_norm);
  parallel::Communicator& dp() const { return *dp_; }
  const ParameterSet& parameters() const { return set_; }
  // Elements whose optimizer state this rank keeps (the memory accounting tests use it).
  int64_t owned_elements() const { return owned_; }

  // The elements this rank updates: runs of one parameter's local elements, in bucket order.
  // Their Adam moments lie at `state_offset` in moment_m() / moment_v(). The runs of all
  // data-parallel ranks together cover every parameter element exactly once (checkpoints write
  // each rank's runs).
  struct OwnedRun {
    size_t param = 0;          // index into parameters().parameters
    int64_t local_offset = 0;  // first element within the parameter's local values
    int64_t count = 0;
    int64_t state_offset = 0;  // first element within moment_m() / moment_v()
  };
  std::vector<OwnedRun> owned_runs() const;
  Tensor moment_m() const { return m_; }
  Tensor moment_v() const { return v_; }
  // Updates applied so far (Adam's bias correction uses it); restored from checkpoints.
  int64_t step_count() const { return t_; }
  void set_step_count(int64_t t) { t_ = t; }

 private:
  struct Bucket;
  struct Segment;
  void post_bucket(Bucket& b);

  ParameterSet set_;
  AdamWSettings settings_;
  std::unique_ptr<parallel::Communicator> solo_;
  parallel::Communicator* dp_;
  std::vector<Bucket> buckets_;     // from the end of the arena to its start (backward order)
  std::vector<Segment> segments_;   // owned elements split by parameter, in bucket order
  Tensor grad_shard_;  // (owned) summed gradients of this rank's slices
  Tensor m_;           // (owned)
  Tensor v_;           // (owned)
  Tensor square_sum_;  // (1) the backend's accumulator dtype: this rank's sum of squares
  Tensor norm_;        // (1) the same dtype: the global norm the update clips by
  int64_t owned_ = 0;
  int64_t t_ = 0;
  size_t next_bucket_ = 0;  // buckets_[0 .. next_bucket_) are posted this step
};

// The global norm over the gradients of several optimizers per rank (the model chunks of an
// interleaved pipeline, which share their groups): gradient_norm() of one optimizer is the case
// of one. Collective over the first optimizer's data-, tensor- and pipeline-parallel groups.
double global_gradient_norm(std::span<const AdamW* const> optimizers);

}  // namespace loom
