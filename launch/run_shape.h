// The model a run's config describes, from the config alone: the part of resolving a config that
// reads no file (no token shards, no default config), so that the memory estimate and the size
// validation can run where no data exists (the config fuzz target, dev/fuzz/config_fuzz.cpp).
// launch/run_setup.h builds the rest of a run on top of it.
#pragma once

#include "core/config.h"
#include "core/gpt.h"
#include "data/addition.h"

namespace loom {

// After validate_config: sets model.vocab_size and model.seq_len from the dataset where unset and
// refuses them where smaller than the dataset needs. `token_vocab` is the token shards'
// vocabulary (read by the caller; unused for the addition dataset). UserError on any problem.
void fit_model_to_data(config::RunConfig& config, int token_vocab);

// The precision the CPU model computes in: bf16 only when train.precision asks for it (PRECISION_AUTO
// is fp32 on the CPU; a GPU run trains in bf16 on the device whatever its host copy holds).
Precision cpu_precision_of(const config::RunConfig& cfg);

AdditionTask make_task(const config::RunConfig& config);
GPTConfig model_config_of(const config::RunConfig& config);

}  // namespace loom
