// The model file: trained weights plus the resolved config that built them, in one file.
//
// This is what `loom train` leaves behind and `loom generate` reads. Layout (little-endian),
// documented for other programs in docs/formats.md:
//   "LOOMMDL1" | u32 version | u32 config_len | config text (protobuf text format)
//   | u32 n_tensors | per tensor: u16 name_len, name, u8 dtype, u8 ndim, i64 dims[ndim],
//     u64 offset (from file start), u64 nbytes, u64 xxh64 of the bytes | tensor bytes ...
// Every length and offset is checked against the file size before use, every tensor against its
// checksum; a write goes to a temporary name, is fsync'd and renamed, so a crash never leaves a
// half-written file under the real name. (Sharded training checkpoints are a separate format.)
#pragma once

#include <string>
#include <vector>

#include "core/gpt.h"

namespace loom {

struct StoredTensor {
  std::string name;
  Shape shape;
  std::vector<float> values;
};

struct ModelFile {
  std::string config_text;
  std::vector<StoredTensor> tensors;
};

// `params` hold host values (a CPU model's parameters()).
void save_model_file(const std::string& path, const std::string& config_text,
                     const std::vector<Parameter>& params);
// A whole model on any backend: its weights read through one host copy (none on the CPU).
void save_model_file(const std::string& path, const std::string& config_text, const GPT& model);

// Throws UserError naming the file (and the tensor, and the byte offset) for a missing, short,
// corrupted or foreign file.
ModelFile load_model_file(const std::string& path);

// Copies stored tensors into a model's parameters (on any backend: through one host copy, uploaded
// once every tensor was found); every parameter must be present with the same shape (else
// UserError listing the difference, and the model unchanged).
void copy_into_model(const ModelFile& file, const std::string& path, GPT& model);

}  // namespace loom
