// A Hugging Face model directory (config.json, model.safetensors or shards with
// model.safetensors.index.json) to and from Loom's parameters, for every family Loom builds.
//
// The tensors are matched through the model's parameter layout (core/model/layout.h): each Loom
// tensor is one or more Hugging Face tensors, each a block of its rows, perhaps transposed:
//   GPT-2: one each; wte/wpe gain ".weight"; the Conv1D weights are stored (in, out), transposed;
//          names under "transformer." (GPT2LMHeadModel), read without the prefix too (GPT2Model).
//   Llama: Hugging Face's names under "model." (lm_head.weight outside it); Loom's fused
//          self_attn.qkv_proj is q_proj (n_head x head_size rows), k_proj and v_proj
//          (n_kv_head x head_size rows each), its mlp.gate_up_proj is gate_proj then up_proj
//          (intermediate_size rows each). Loom's rotary convention is Hugging Face's (rotate
//          half), so q and k need no permutation.
// The tensors Loom holds as one table of whole (unsharded) f32 tensors by Loom name; copying
// them into or out of a GPT is the last step (load_hf_tensors / hf_tensors_of_model).
//
// Reading checks everything before a byte is used: every tensor present once with the shape
// config.json implies, none left over (the attention mask buffers GPT-2 files may carry, rotary
// inv_freq buffers and a tied lm_head.weight excepted), every shard the index names present and
// holding the tensors mapped to it. Each failure is one UserError naming the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "checkpoints/hf_config.h"
#include "checkpoints/safetensors.h"
#include "core/gpt.h"

namespace loom {

inline constexpr const char* kHfConfigName = "config.json";
inline constexpr const char* kHfSingleFileName = "model.safetensors";
inline constexpr const char* kHfIndexName = "model.safetensors.index.json";
// transformers' default max_shard_size ("5GB", decimal).
inline constexpr uint64_t kHfDefaultMaxShardBytes = uint64_t{5} * 1000 * 1000 * 1000;

// One Hugging Face tensor: rows [row_begin, row_begin + rows) of the Loom tensor `loom_name`
// (all of them for a whole tensor), stored transposed when `transposed` (GPT-2's Conv1D).
struct HfTensor {
  std::string hf_name;
  std::vector<int64_t> hf_shape;
  std::string loom_name;
  int64_t row_begin = 0;
  int64_t rows = 0;
  bool transposed = false;
};

// Every Hugging Face tensor of a whole model of `config`, in the layout's order, with the names
// save_pretrained writes (GPT2LMHeadModel's, LlamaForCausalLM's).
std::vector<HfTensor> hf_tensor_map(const GPTConfig& config);

// Whole f32 tensors by Loom name (the parameter layout's names and global shapes).
struct LoomTensors {
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, std::vector<int64_t>> shapes;
};

// Whether `dir` looks like a Hugging Face model directory (holds config.json and
// model.safetensors or model.safetensors.index.json).
bool is_hf_model_dir(const std::string& dir);

// A Hugging Face model directory opened for reading: its config and its safetensors files.
class HfModelDir {
 public:
  // Reads config.json and opens the weights (one file, or the index and every shard it names).
  explicit HfModelDir(const std::string& dir);
  ~HfModelDir();
  const std::string& dir() const { return dir_; }
  const HfModelConfig& config() const { return config_; }
  // Every tensor of the model as Loom's whole tensors, checked as the file comment says.
  LoomTensors read_tensors() const;

 private:
  struct Located {
    const SafetensorsFile* file = nullptr;
    const SafetensorsFile::Entry* entry = nullptr;
  };
  void open_index(const std::string& index_path);
  // The tensor `name`, also under the name without the family's prefix; null when neither exists.
  const Located* find(const std::string& name) const;
  std::string dir_;
  HfModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Located> tensors_;  // every tensor of every file, by its stored name
};

// Options of a Hugging Face directory written by Loom.
struct HfWriteOptions {
  StoredDType dtype = StoredDType::kF32;
  uint64_t max_shard_bytes = kHfDefaultMaxShardBytes;
};

// Writes config.json and the weights of `config` read from `tensors` (whole tensors by Loom
// name: `find` returns the f32 data of one, row-major, with the layout's global shape) into the
// existing directory `dir`: model.safetensors, or model-0000i-of-0000N.safetensors shards of at
// most max_shard_bytes each (a larger tensor alone in its shard, as transformers does) and
// model.safetensors.index.json. Returns the file names written.
std::vector<std::string> write_hf_model_dir(const std::string& dir, const HfModelConfig& config,
                                            const std::function<const float*(const std::string&)>& find,
                                            const HfWriteOptions& options);

// The whole model's tensors (one rank holding every one), and the reverse: copies `tensors` into
// `model`, which must be a whole model of the same config.
LoomTensors hf_tensors_of_model(const GPT& model);
void load_hf_tensors(const LoomTensors& tensors, GPT& model);

// "torch_dtype" of a dtype: float32, bfloat16, float16.
const char* torch_dtype_name(StoredDType dtype);

}  // namespace loom
