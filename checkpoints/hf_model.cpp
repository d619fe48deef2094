#include "checkpoints/hf_model.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>

#include "core/backend/host_copy.h"
#include "core/base/check.h"
#include "core/base/file_io.h"
#include "core/model/layout.h"
#include "data/json.h"

namespace loom {

namespace fs = std::filesystem;

namespace {

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

int64_t columns_of(const std::vector<int64_t>& dims) { return dims.size() == 2 ? dims[1] : 1; }

// GPT-2's tensors: one Hugging Face tensor per Loom tensor, the Conv1D weights transposed.
void add_gpt2(const TensorSpec& spec, std::vector<HfTensor>& out) {
  HfTensor t;
  t.loom_name = spec.name;
  t.hf_name = "transformer." + (spec.name == "wte" || spec.name == "wpe" ? spec.name + ".weight" : spec.name);
  t.hf_shape = spec.global.dims();
  t.rows = t.hf_shape[0];
  t.transposed = spec.hf_transposed;
  if (t.transposed) std::swap(t.hf_shape[0], t.hf_shape[1]);
  out.push_back(std::move(t));
}

// Llama's tensors: the fused ones split by rows, the rest whole.
void add_llama(const TensorSpec& spec, const GPTConfig& c, std::vector<HfTensor>& out) {
  const std::vector<int64_t> dims = spec.global.dims();
  const std::string prefix = spec.name == "lm_head.weight" ? "" : "model.";
  auto part = [&](const std::string& fused, const std::string& piece, int64_t row_begin, int64_t rows) {
    HfTensor t;
    t.loom_name = spec.name;
    t.hf_name = prefix + spec.name;
    t.hf_name.replace(t.hf_name.find(fused), fused.size(), piece);
    t.hf_shape = dims;
    t.hf_shape[0] = rows;
    t.row_begin = row_begin;
    t.rows = rows;
    out.push_back(std::move(t));
  };
  const int64_t q = int64_t{c.n_head} * c.head_size(), kv = int64_t{c.kv_heads()} * c.head_size();
  if (spec.name.find(".qkv_proj.") != std::string::npos) {
    part("qkv_proj", "q_proj", 0, q);
    part("qkv_proj", "k_proj", q, kv);
    part("qkv_proj", "v_proj", q + kv, kv);
  } else if (spec.name.find(".gate_up_proj.") != std::string::npos) {
    const int64_t F = dims[0] / 2;
    part("gate_up_proj", "gate_proj", 0, F);
    part("gate_up_proj", "up_proj", F, F);
  } else {
    part(spec.name, spec.name, 0, dims[0]);
  }
}

// Buffers some transformers versions save that are not weights.
bool ignorable(const std::string& name, const GPTConfig& c) {
  if (name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")) return !c.llama();
  if (name.ends_with("rotary_emb.inv_freq")) return c.llama();
  return name == "lm_head.weight" && c.tied();
}

std::string shard_name(size_t i, size_t n) {
  char name[64];
  std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return name;
}

}  // namespace

std::vector<HfTensor> hf_tensor_map(const GPTConfig& config) {
  std::vector<HfTensor> out;
  for (const TensorSpec& spec : model_layout(config, 0, config.n_layer, true, true)) {
    if (config.llama()) {
      add_llama(spec, config, out);
    } else {
      add_gpt2(spec, out);
    }
  }
  return out;
}

const char* torch_dtype_name(StoredDType dtype) {
  switch (dtype) {
    case StoredDType::kF32: return "float32";
    case StoredDType::kBF16: return "bfloat16";
    case StoredDType::kF16: return "float16";
  }
  return "?";
}

bool is_hf_model_dir(const std::string& dir) {
  const fs::path d(dir);
  std::error_code ec;
  return fs::is_regular_file(d / kHfConfigName, ec) &&
         (fs::is_regular_file(d / kHfSingleFileName, ec) || fs::is_regular_file(d / kHfIndexName, ec));
}

HfModelDir::HfModelDir(const std::string& dir) : dir_(dir) {
  const fs::path d(dir);
  config_ = read_hf_config((d / kHfConfigName).string());
  const fs::path index = d / kHfIndexName, single = d / kHfSingleFileName;
  if (fs::is_regular_file(index)) {
    open_index(index.string());
  } else if (fs::is_regular_file(single)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single.string()));
    for (const SafetensorsFile::Entry& e : files_.back()->tensors()) tensors_[e.name] = {files_.back().get(), &e};
  } else {
    fail_user("Hugging Face model directory", dir, "has neither", kHfSingleFileName, "nor", kHfIndexName);
  }
}

HfModelDir::~HfModelDir() = default;

void HfModelDir::open_index(const std::string& index_path) {
  JsonValue root;
  try {
    root = json_parse(read_file(index_path, "safetensors index"));
  } catch (const JsonError& e) {
    fail_user("safetensors index", index_path, "is not valid JSON:", e.what());
  }
  const JsonValue* map = root.kind == JsonValue::Kind::kObject ? root.find("weight_map") : nullptr;
  if (map == nullptr || map->kind != JsonValue::Kind::kObject) {
    fail_user("safetensors index", index_path, "has no \"weight_map\" object (tensor name -> shard file)");
  }
  std::map<std::string, const SafetensorsFile*> opened;
  for (const auto& [tensor, file] : map->members) {
    if (file.kind != JsonValue::Kind::kString || file.text.empty() || file.text.find('/') != std::string::npos ||
        file.text == "." || file.text == "..") {
      fail_user("safetensors index", index_path, "maps tensor", "\"" + tensor + "\"", "to something other than a file name in",
                dir_);
    }
    auto it = opened.find(file.text);
    if (it == opened.end()) {
      const fs::path shard = fs::path(dir_) / file.text;
      if (!fs::is_regular_file(shard)) {
        fail_user("safetensors index", index_path, "maps tensor", "\"" + tensor + "\"", "to shard", shard.string(),
                  "which does not exist");
      }
      files_.push_back(std::make_unique<SafetensorsFile>(shard.string()));
      const SafetensorsFile* f = files_.back().get();
      it = opened.emplace(file.text, f).first;
      for (const SafetensorsFile::Entry& e : f->tensors()) {
        if (tensors_.count(e.name)) {
          fail_user("safetensors shard", f->path(), "holds tensor", "\"" + e.name + "\"", "which",
                    tensors_.at(e.name).file->path(), "holds too");
        }
        tensors_[e.name] = {f, &e};
      }
    }
    const SafetensorsFile::Entry* e = it->second->find(tensor);
    if (e == nullptr) {
      fail_user("safetensors index", index_path, "maps tensor", "\"" + tensor + "\"", "to shard", it->second->path(),
                "which does not hold it");
    }
  }
}

const HfModelDir::Located* HfModelDir::find(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return &it->second;
  for (const char* prefix : {"transformer.", "model."}) {
    if (name.starts_with(prefix)) {
      it = tensors_.find(name.substr(std::strlen(prefix)));
      if (it != tensors_.end()) return &it->second;
    }
  }
  return nullptr;
}

LoomTensors HfModelDir::read_tensors() const {
  const GPTConfig& c = config_.model;
  const std::string config_path = (fs::path(dir_) / kHfConfigName).string();
  LoomTensors out;
  for (const TensorSpec& spec : model_layout(c, 0, c.n_layer, true, true)) {
    out.shapes[spec.name] = spec.global.dims();
  }
  std::set<std::string> used;
  for (const HfTensor& t : hf_tensor_map(c)) {
    const Located* at = find(t.hf_name);
    if (at == nullptr) {
      fail_user("Hugging Face model directory", dir_, "has no tensor", "\"" + t.hf_name + "\"", "which the model",
                config_path, "describes has");
    }
    const SafetensorsFile::Entry& e = *at->entry;
    if (e.shape != t.hf_shape) {
      fail_user("safetensors file", at->file->path(), "tensor", "\"" + e.name + "\"", "has shape", shape_text(e.shape),
                "but", config_path, "implies", shape_text(t.hf_shape));
    }
    used.insert(e.name);
    const std::vector<int64_t>& loom_shape = out.shapes.at(t.loom_name);
    std::vector<float>& dest = out.values[t.loom_name];
    int64_t numel = 1;
    for (int64_t d : loom_shape) numel *= d;
    dest.resize(static_cast<size_t>(numel));
    const std::vector<float> values = at->file->read_f32(e);
    const int64_t cols = columns_of(loom_shape);
    if (t.transposed) {
      const int64_t rows = loom_shape[0];
      for (int64_t o = 0; o < rows; ++o) {
        for (int64_t i = 0; i < cols; ++i) dest[static_cast<size_t>(o * cols + i)] = values[static_cast<size_t>(i * rows + o)];
      }
    } else {
      std::memcpy(dest.data() + t.row_begin * cols, values.data(), values.size() * 4);
    }
  }
  for (const auto& [name, at] : tensors_) {
    if (used.count(name) || ignorable(name, c)) continue;
    fail_user("safetensors file", at.file->path(), "holds tensor", "\"" + name + "\"", "which is not part of the model",
              config_path, "describes");
  }
  return out;
}

std::vector<std::string> write_hf_model_dir(const std::string& dir, const HfModelConfig& config,
                                            const std::function<const float*(const std::string&)>& find,
                                            const HfWriteOptions& options) {
  const GPTConfig& c = config.model;
  std::map<std::string, std::vector<int64_t>> loom_shapes;
  for (const TensorSpec& spec : model_layout(c, 0, c.n_layer, true, true)) loom_shapes[spec.name] = spec.global.dims();
  // The tensors, cut into shards in order: a new shard when the next tensor would pass the limit.
  const uint64_t element_bytes = stored_dtype_bytes(options.dtype);
  std::vector<std::vector<SafetensorsOutput>> shards(1);
  std::vector<uint64_t> shard_bytes(1, 0);
  uint64_t total = 0;
  for (const HfTensor& t : hf_tensor_map(c)) {
    uint64_t bytes = element_bytes;
    for (int64_t d : t.hf_shape) bytes *= static_cast<uint64_t>(d);
    if (!shards.back().empty() && shard_bytes.back() + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes.push_back(0);
    }
    shard_bytes.back() += bytes;
    total += bytes;
    const float* src = find(t.loom_name);
    LOOM_CHECK(src != nullptr, "no values for tensor", t.loom_name);
    const std::vector<int64_t>& shape = loom_shapes.at(t.loom_name);
    const int64_t rows = shape[0], cols = columns_of(shape);
    SafetensorsOutput out;
    out.name = t.hf_name;
    out.shape = t.hf_shape;
    if (t.transposed) {
      out.fill = [src, rows, cols](float* dest) {
        for (int64_t o = 0; o < rows; ++o) {
          for (int64_t i = 0; i < cols; ++i) dest[i * rows + o] = src[o * cols + i];
        }
      };
    } else {
      const float* begin = src + t.row_begin * cols;
      const size_t n = static_cast<size_t>(t.rows * cols);
      out.fill = [begin, n](float* dest) { std::memcpy(dest, begin, n * 4); };
    }
    shards.back().push_back(std::move(out));
  }
  const std::vector<std::pair<std::string, std::string>> metadata = {{"format", "pt"}};
  std::vector<std::string> written;
  write_file_durably((fs::path(dir) / kHfConfigName).string(),
                     hf_config_json(config, torch_dtype_name(options.dtype)));
  written.push_back(kHfConfigName);
  if (shards.size() == 1) {
    write_safetensors((fs::path(dir) / kHfSingleFileName).string(), shards[0], metadata, options.dtype);
    written.push_back(kHfSingleFileName);
    return written;
  }
  std::map<std::string, std::string> weight_map;  // sorted by name, as transformers writes it
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shard_name(i, shards.size());
    write_safetensors((fs::path(dir) / name).string(), shards[i], metadata, options.dtype);
    for (const SafetensorsOutput& t : shards[i]) weight_map[t.name] = name;
    written.push_back(name);
  }
  std::string index = "{\n  \"metadata\": {\n    \"total_size\": " + std::to_string(total) + "\n  },\n  \"weight_map\": {\n";
  size_t k = 0;
  for (const auto& [tensor, file] : weight_map) {
    index += "    \"" + tensor + "\": \"" + file + "\"" + (++k < weight_map.size() ? ",\n" : "\n");
  }
  index += "  }\n}\n";
  write_file_durably((fs::path(dir) / kHfIndexName).string(), index);
  written.push_back(kHfIndexName);
  return written;
}

namespace {

void check_whole_model(const GPT& model) {
  LOOM_CHECK(model.tp().size() == 1 && model.first_stage() && model.last_stage() && model.first_layer() == 0 &&
                 model.end_layer() == model.config().n_layer,
             "a Hugging Face model directory holds a whole model: tp", model.tp().size(), "layers [",
             model.first_layer(), ",", model.end_layer(), ") of", model.config().n_layer);
}

}  // namespace

LoomTensors hf_tensors_of_model(const GPT& model) {
  check_whole_model(model);
  const HostCopy values(model.backend(), model.parameter_arena(), /*download=*/true);
  LoomTensors out;
  for (const Parameter& p : model.parameters()) {
    const float* src = values.host().f32() + model.arena_offset(p);
    out.values[p.name].assign(src, src + p.value.numel());
    out.shapes[p.name] = p.global_shape.dims();
  }
  return out;
}

void load_hf_tensors(const LoomTensors& tensors, GPT& model) {
  check_whole_model(model);
  HostCopy host(model.backend(), model.parameter_arena(), /*download=*/true);
  for (const Parameter& p : model.parameters()) {
    auto it = tensors.values.find(p.name);
    LOOM_CHECK(it != tensors.values.end() && it->second.size() == static_cast<size_t>(p.value.numel()), "tensor", p.name,
               "is missing or of another size than the model's");
    std::memcpy(host.host().f32() + model.arena_offset(p), it->second.data(), it->second.size() * 4);
  }
  host.upload();
}

}  // namespace loom
