// `loom ckpt import DIR OUT_DIR` and `loom ckpt export MODEL OUT_DIR`: Hugging Face model
// directories (checkpoints/hf_model.h) in and out, with their tokenizer files. docs/checkpoints.md.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/gpt.h"
#include "launch/cli.h"

namespace loom {

// Imports the Hugging Face model directory `in` into OUT_DIR (a weights-only checkpoint, its run
// config and the tokenizer files). `a` holds the parsed flags of `loom ckpt import`.
int import_hf_model_dir(const std::string& in, const std::string& out_dir, const ParsedArgs& a);

// Exports the model `model_path` (anything load_trained_model reads) as a Hugging Face model
// directory OUT_DIR, written atomically; refuses a non-empty OUT_DIR.
int export_hf_model_dir(const std::string& model_path, const std::string& out_dir, const ParsedArgs& a);

// The end of either import: `model` saved as a weights-only checkpoint at step 0 under OUT_DIR
// with `cfg`, and `cfg` as OUT_DIR/config.pbtxt. Returns {the checkpoint's directory, the config's
// path}.
struct ImportedModel {
  std::string checkpoint;
  std::string config;
};
ImportedModel save_imported_model(const config::RunConfig& cfg, GPT& model, const std::string& out_dir);

// "5GB", "500MB", "2GiB", "1000" (bytes) as transformers' max_shard_size reads them; UserError
// naming the flag otherwise.
uint64_t parse_byte_size(const std::string& text, const std::string& what);

}  // namespace loom
