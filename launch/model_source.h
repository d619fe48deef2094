// Where a trained model comes from, for the commands that use one whole (`loom generate`,
// `loom ckpt export`): a model file (model.loom), a checkpoint directory (step-NNNNNNNN), a
// directory of checkpoints (the newest valid one), a run directory (train.out_dir: its
// model.loom, else its newest checkpoint), or a Hugging Face model directory (config.json and
// safetensors: checkpoints/hf_model.h; its run config is the built-in demo's with config.json's
// model section). A checkpoint saved in any parallel layout loads into
// one process.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/config.h"
#include "core/gpt.h"

namespace loom {

struct LoadedModel {
  config::RunConfig config;     // the config that trained it
  std::unique_ptr<GPT> model;   // the whole model, weights loaded
  std::string source;           // the file or checkpoint directory it was read from
  int64_t step = -1;            // the checkpoint's step; -1 for a model file
};

// UserError naming `path` when it is none of the above, or what it holds is unusable.
LoadedModel load_trained_model(const std::string& path);

// Copies the weights of `loaded` into this rank's `chunks`: its shards, in any parallel layout,
// of the model `run` describes (values only: gradients and optimizers are left alone). Not
// collective. UserError naming the model field that differs (model.n_layer: ...), else the
// tensor the chunks hold that `loaded` lacks or holds in another shape.
void copy_model_into(const LoadedModel& loaded, const config::RunConfig& run, std::span<GPT* const> chunks);

// Where the tokenizer files of a loaded model are: next to it (an imported checkpoint's
// directory, a run or Hugging Face directory) or where its run config's tokenizer lives. "" if none.
std::string tokenizer_dir_of(const LoadedModel& loaded);

}  // namespace loom
