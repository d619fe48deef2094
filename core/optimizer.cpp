#include "core/optimizer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/base/check.h"
#include "kernels/cpu/adamw.h"
#include "parallel/solo_communicator.h"

namespace loom {

namespace k = kernels::cpu;

float lr_at_step(int64_t step, int64_t total_steps, float peak_lr, int64_t warmup_steps,
                 float min_ratio) {
  if (step < warmup_steps) {
    return peak_lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
  }
  const int64_t decay_steps = total_steps - warmup_steps;
  if (decay_steps <= 1) return peak_lr;
  double progress = static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps - 1);
  if (progress > 1) progress = 1;
  const double min_lr = static_cast<double>(peak_lr) * min_ratio;
  return static_cast<float>(min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + std::cos(M_PI * progress)));
}

// A contiguous range of the arena, [begin, begin + size); this rank owns the slice
// [begin + r * size/dp, begin + (r+1) * size/dp) and keeps its summed gradient at shard_offset.
struct AdamW::Bucket {
  int64_t begin = 0;
  int64_t size = 0;
  int64_t shard_offset = 0;
  std::unique_ptr<parallel::CommRequest> reduction;  // in flight between post and finish
};

// Owned elements of one parameter within one bucket slice: they share the weight-decay choice
// and whether they count in the gradient norm.
struct AdamW::Segment {
  int64_t arena_begin = 0;
  int64_t count = 0;
  int64_t shard_offset = 0;
  size_t param = 0;
  bool decay = false;
  bool counts_in_norm = true;
};

AdamW::AdamW(GPT& model, const AdamWSettings& settings, parallel::Communicator* dp, int64_t bucket_elements)
    : AdamW(model.parameter_set(), settings, dp, bucket_elements) {}

AdamW::AdamW(const ParameterSet& parameters, const AdamWSettings& settings, parallel::Communicator* dp,
             int64_t bucket_elements)
    : set_(parameters), settings_(settings) {
  LOOM_CHECK(set_.parameters != nullptr && set_.backend != nullptr && set_.tp != nullptr && set_.pp != nullptr,
             "AdamW needs a complete ParameterSet");
  if (dp == nullptr) {
    solo_ = std::make_unique<parallel::SoloCommunicator>("dp");
    dp = solo_.get();
  }
  dp_ = dp;
  const int64_t replicas = dp_->size(), r = dp_->rank();
  const int64_t n = set_.grads.numel();
  LOOM_CHECK(n % replicas == 0, "gradient arena of", n, "elements is not a multiple of dp =", replicas,
             "(build the model with ModelParallel::arena_multiple = dp)");
  LOOM_CHECK(bucket_elements > 0, "bucket_elements", bucket_elements);
  const int64_t step = std::max<int64_t>(replicas, bucket_elements / replicas * replicas);

  // Buckets from the end of the arena: the backward finishes the last parameters first.
  for (int64_t end = n; end > 0;) {
    const int64_t size = std::min(step, end);
    Bucket b;
    b.begin = end - size;
    b.size = size;
    b.shard_offset = owned_;
    owned_ += size / replicas;
    buckets_.push_back(std::move(b));
    end -= size;
  }
  const int tp_rank = set_.tp->rank();
  const std::vector<Parameter>& params = *set_.parameters;
  for (const Bucket& b : buckets_) {
    const int64_t slice = b.size / replicas, lo = b.begin + r * slice, hi = lo + slice;
    for (size_t i = 0; i < params.size(); ++i) {
      const Parameter& p = params[i];
      const int64_t p_lo = set_.offset_of(p), p_hi = p_lo + p.value.numel();
      const int64_t s_lo = std::max(lo, p_lo), s_hi = std::min(hi, p_hi);
      if (s_lo >= s_hi) continue;
      Segment s;
      s.arena_begin = s_lo;
      s.count = s_hi - s_lo;
      s.shard_offset = b.shard_offset + (s_lo - lo);
      s.param = i;
      s.decay = p.decay;
      s.counts_in_norm = !p.tied_copy && (!p.tp_replicated || tp_rank == 0);
      segments_.push_back(s);
    }
  }
  Backend& be = *set_.backend;
  grad_shard_ = be.zeros({replicas > 1 ? owned_ : 0}, DType::kF32);
  m_ = be.zeros({owned_}, DType::kF32);
  v_ = be.zeros({owned_}, DType::kF32);
  square_sum_ = be.zeros({1}, be.accumulator_dtype());
  norm_ = be.zeros({1}, be.accumulator_dtype());
}

AdamW::~AdamW() = default;

std::vector<AdamW::OwnedRun> AdamW::owned_runs() const {
  std::vector<OwnedRun> runs;
  runs.reserve(segments_.size());
  for (const Segment& s : segments_) {
    const Parameter& p = (*set_.parameters)[s.param];
    runs.push_back(OwnedRun{s.param, s.arena_begin - set_.offset_of(p), s.count, s.shard_offset});
  }
  return runs;
}

void AdamW::post_bucket(Bucket& b) {
  if (dp_->size() == 1) return;  // the arena itself holds the (only) gradient
  // Posted, not awaited: the backward goes on with the next blocks meanwhile. Every replica
  // posts the buckets in the same order (the model reports readiness at the same points).
  const float* grads = set_.grads.f32();
  b.reduction = dp_->reduce_scatter_async(grads + b.begin, grad_shard_.f32() + b.shard_offset,
                                          static_cast<size_t>(b.size / dp_->size()), DType::kF32,
                                          parallel::ReduceOp::kSum);
}

GradientsReady AdamW::gradients_ready() {
  return [this](int64_t offset) {
    while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].begin >= offset) {
      post_bucket(buckets_[next_bucket_++]);
    }
  };
}

void AdamW::finish_gradient_reduction() {
  while (next_bucket_ < buckets_.size()) post_bucket(buckets_[next_bucket_++]);
  for (Bucket& b : buckets_) {
    if (b.reduction) b.reduction->wait();
    b.reduction.reset();
  }
  next_bucket_ = 0;
}

namespace {

// A view of n f32 elements of `arena` from `offset`.
Tensor f32_range(const Tensor& arena, int64_t offset, int64_t n) {
  return Tensor::view(arena.f32() + offset, {n}, DType::kF32, arena.device());
}

// The value of a one-element accumulator on the host (f64 on the CPU, f32 on a GPU).
double read_scalar(Backend& backend, const Tensor& scalar) {
  if (scalar.dtype() == DType::kF64) {
    double value = 0;
    backend.to_host(&value, scalar);
    return value;
  }
  float value = 0;
  backend.to_host(&value, scalar);
  return value;
}

void write_scalar(Backend& backend, const Tensor& scalar, double value) {
  if (scalar.dtype() == DType::kF64) {
    backend.from_host(scalar, &value);
  } else {
    const auto narrow = static_cast<float>(value);
    backend.from_host(scalar, &narrow);
  }
}

}  // namespace

void AdamW::add_gradient_square_sum(const Tensor& into) const {
  const bool sharded = dp_->size() > 1;
  Backend& be = *set_.backend;
  for (const Segment& s : segments_) {
    if (!s.counts_in_norm) continue;
    const Tensor g = sharded ? f32_range(grad_shard_, s.shard_offset, s.count) : f32_range(set_.grads, s.arena_begin, s.count);
    be.sum_of_squares(into, g, /*accumulate=*/true);
  }
}

double AdamW::local_gradient_square_sum() const {
  set_.backend->zero(square_sum_);
  add_gradient_square_sum(square_sum_);
  return read_scalar(*set_.backend, square_sum_);
}

double AdamW::gradient_norm() const {
  const AdamW* self = this;
  return global_gradient_norm(std::span<const AdamW* const>(&self, 1));
}

double global_gradient_norm(std::span<const AdamW* const> optimizers) {
  LOOM_CHECK(!optimizers.empty(), "global_gradient_norm of no optimizer");
  Backend& be = *optimizers[0]->parameters().backend;
  if (be.accumulator_dtype() == DType::kF32) {
    // On a GPU: every chunk's squares into one device scalar, summed over the groups on the
    // device (stream-ordered), read once.
    const Tensor& total = optimizers[0]->square_sum_scalar();
    be.zero(total);
    for (const AdamW* o : optimizers) o->add_gradient_square_sum(total);
    for (parallel::Communicator* group : {&optimizers[0]->dp(), optimizers[0]->parameters().tp,
                                          optimizers[0]->parameters().pp}) {
      if (group->size() > 1) group->all_reduce(total.raw(), total.raw(), 1, DType::kF32, parallel::ReduceOp::kSum);
    }
    for (parallel::Communicator* group : {&optimizers[0]->dp(), optimizers[0]->parameters().tp,
                                          optimizers[0]->parameters().pp}) {
      group->synchronize();  // complete, or the stream-ordered group's error thrown
    }
    return std::sqrt(read_scalar(be, total));
  }
  // On the CPU (f64 accumulators): each chunk's sum read, then summed over ranks in fp32.
  double local = 0;
  for (const AdamW* o : optimizers) local += o->local_gradient_square_sum();
  // Across ranks in fp32 (~1e-7 relative), as Loom always summed them.
  const ParameterSet& set = optimizers[0]->parameters();
  parallel::Communicator& dp = optimizers[0]->dp();
  parallel::Communicator& tp = *set.tp;
  parallel::Communicator& pp = *set.pp;
  float mine = static_cast<float>(local);
  if (dp.size() > 1) dp.all_reduce(&mine, &mine, 1, DType::kF32, parallel::ReduceOp::kSum);
  if (tp.size() > 1) tp.all_reduce(&mine, &mine, 1, DType::kF32, parallel::ReduceOp::kSum);
  if (pp.size() > 1) pp.all_reduce(&mine, &mine, 1, DType::kF32, parallel::ReduceOp::kSum);
  const bool shared = dp.size() > 1 || tp.size() > 1 || pp.size() > 1;
  return shared ? std::sqrt(static_cast<double>(mine)) : std::sqrt(local);
}

void AdamW::step(float lr, double grad_norm) {
  ++t_;
  k::AdamWArenaHyper hyper;
  hyper.lr = lr;
  hyper.beta1 = settings_.beta1;
  hyper.beta2 = settings_.beta2;
  hyper.eps = settings_.eps;
  hyper.weight_decay = settings_.weight_decay;
  hyper.step = t_;
  hyper.max_norm = settings_.grad_clip;
  Backend& be = *set_.backend;
  write_scalar(be, norm_, grad_norm);
  const bool sharded = dp_->size() > 1;
  // One update per segment: the master weights are indexed by arena offset, the gradient slice
  // and the moments by shard offset. The compute copy follows at the model's next forward.
  for (const Segment& s : segments_) {
    const Tensor g = sharded ? f32_range(grad_shard_, s.shard_offset, s.count) : f32_range(set_.grads, s.arena_begin, s.count);
    be.adamw_update(f32_range(set_.master, s.arena_begin, s.count), Tensor(), g, f32_range(m_, s.shard_offset, s.count),
                    f32_range(v_, s.shard_offset, s.count), {{0, s.count, s.decay ? 1 : 0}}, norm_, hyper);
  }
  float* params = set_.master.f32();
  if (!sharded) return;
  // Every replica gets the new weights: each bucket's slices gathered in place, all in flight
  // together.
  const int64_t replicas = dp_->size();
  std::vector<std::unique_ptr<parallel::CommRequest>> gathers;
  for (const Bucket& b : buckets_) {
    const int64_t slice = b.size / replicas;
    gathers.push_back(dp_->all_gather_async(params + b.begin + dp_->rank() * slice, params + b.begin,
                                            static_cast<size_t>(slice), DType::kF32));
  }
  for (auto& g : gathers) g->wait();
}

}  // namespace loom
