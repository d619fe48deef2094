#include "checkpoints/hf_gpt2.h"

#include <charconv>
#include <cstring>
#include <set>
#include <optional>
#include <utility>
#include <vector>

#include "core/backend/host_copy.h"
#include "core/base/check.h"
#include "core/model/layout.h"

namespace loom {

namespace {

// The whole model's parameter layout (core/model/layout.h): it says which tensors Hugging
// Face stores transposed (GPT-2's Conv1D weights, (in, out) there, (out, in) in Loom).
std::vector<TensorSpec> whole_layout(const GPT& model) {
  return gpt2_layout(model.config(), 0, model.config().n_layer, true, true);
}

bool is_conv1d_weight(const std::vector<TensorSpec>& layout, const std::string& loom_name) {
  const TensorSpec* spec = find_spec(layout, loom_name);
  LOOM_CHECK(spec != nullptr, "no tensor", loom_name, "in GPT-2's layout");
  return spec->hf_transposed;
}

std::string hf_name_of(const std::string& loom_name) {
  return loom_name == "wte" || loom_name == "wpe" ? loom_name + ".weight" : loom_name;
}

// The tensor's shape in the file: Loom's, reversed for a Conv1D weight.
std::vector<int64_t> hf_shape_of(const std::vector<TensorSpec>& layout, const Parameter& p) {
  std::vector<int64_t> shape = p.global_shape.dims();
  if (is_conv1d_weight(layout, p.name)) std::swap(shape[0], shape[1]);
  return shape;
}

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

void check_whole_model(const GPT& model) {
  LOOM_CHECK(model.tp().size() == 1 && model.first_stage() && model.last_stage() && model.first_layer() == 0 &&
                 model.end_layer() == model.config().n_layer,
             "the Hugging Face GPT-2 files hold a whole model: tp", model.tp().size(), "layers [",
             model.first_layer(), ",", model.end_layer(), ") of", model.config().n_layer);
}

// "transformer." when the file uses GPT2LMHeadModel's names, "" for GPT2Model's.
std::string name_prefix(const SafetensorsFile& file) {
  if (file.find("wte.weight")) return "";
  if (file.find("transformer.wte.weight")) return "transformer.";
  fail_user("safetensors file", file.path(),
            "has no tensor \"wte.weight\" (nor \"transformer.wte.weight\"): it is not a GPT-2 model");
}

// Tensor `name`, which the file must have as a matrix.
const SafetensorsFile::Entry& matrix(const SafetensorsFile& file, const std::string& name) {
  const SafetensorsFile::Entry* e = file.find(name);
  if (!e) fail_user("safetensors file", file.path(), "has no tensor", "\"" + name + "\"");
  if (e->shape.size() != 2) {
    fail_user("safetensors file", file.path(), "tensor", "\"" + name + "\"", "has shape", shape_text(e->shape),
              "but a GPT-2 stores it as a matrix");
  }
  return *e;
}

// A positive int written in decimal (a __metadata__ value), or nullopt.
std::optional<int> metadata_int(const SafetensorsFile& file, const std::string& key) {
  auto it = file.metadata().find(key);
  if (it == file.metadata().end()) return std::nullopt;
  const std::string& text = it->second;
  int v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v <= 0) {
    fail_user("safetensors file", file.path(), "has __metadata__", key, "=", "\"" + text + "\"",
              "(expected a positive integer)");
  }
  return v;
}

}  // namespace

void save_hf_gpt2(const std::string& path, const GPT& model) {
  check_whole_model(model);
  const std::vector<TensorSpec> layout = whole_layout(model);
  const HostCopy values(model.backend(), model.parameter_arena(), /*download=*/true);
  std::vector<SafetensorsOutput> tensors;
  for (const Parameter& p : model.parameters()) {
    SafetensorsOutput t;
    t.name = hf_name_of(p.name);
    t.shape = hf_shape_of(layout, p);
    const float* src = values.host().f32() + model.arena_offset(p);
    const int64_t numel = p.value.numel();
    if (is_conv1d_weight(layout, p.name)) {
      const int64_t out = p.global_shape[0], in = p.global_shape[1];
      t.fill = [src, out, in](float* dest) {
        for (int64_t o = 0; o < out; ++o) {
          for (int64_t i = 0; i < in; ++i) dest[i * out + o] = src[o * in + i];
        }
      };
    } else {
      t.fill = [src, numel](float* dest) { std::memcpy(dest, src, static_cast<size_t>(numel) * 4); };
    }
    tensors.push_back(std::move(t));
  }
  const GPTConfig& c = model.config();
  write_safetensors(path, tensors,
                    {{"format", "pt"},
                     {"n_head", std::to_string(c.n_head)},
                     {"n_layer", std::to_string(c.n_layer)},
                     {"n_embd", std::to_string(c.n_embd)},
                     {"vocab_size", std::to_string(c.vocab_size)},
                     {"n_positions", std::to_string(c.max_seq_len)}});
}

GPTConfig hf_gpt2_config_of(const SafetensorsFile& file, int n_head) {
  const std::string prefix = name_prefix(file);
  const SafetensorsFile::Entry& wte = matrix(file, prefix + "wte.weight");
  const SafetensorsFile::Entry& wpe = matrix(file, prefix + "wpe.weight");
  if (wpe.shape[1] != wte.shape[1]) {
    fail_user("safetensors file", file.path(), "tensor", "\"" + wpe.name + "\"", "has shape", shape_text(wpe.shape),
              "but wte's", shape_text(wte.shape), "implies", wte.shape[1], "columns");
  }
  const int64_t limit = int64_t{1} << 30;
  for (const SafetensorsFile::Entry* e : {&wte, &wpe}) {
    if (e->shape[0] <= 0 || e->shape[1] <= 0 || e->shape[0] > limit || e->shape[1] > limit) {
      fail_user("safetensors file", file.path(), "tensor", "\"" + e->name + "\"", "has shape", shape_text(e->shape));
    }
  }
  GPTConfig c;
  c.vocab_size = static_cast<int>(wte.shape[0]);
  c.n_embd = static_cast<int>(wte.shape[1]);
  c.max_seq_len = static_cast<int>(wpe.shape[0]);
  c.n_layer = 0;
  while (file.find(prefix + "h." + std::to_string(c.n_layer) + ".ln_1.weight")) ++c.n_layer;
  if (c.n_layer == 0) fail_user("safetensors file", file.path(), "has no tensor", "\"" + prefix + "h.0.ln_1.weight\"");

  const std::optional<int> stored_heads = metadata_int(file, "n_head");
  if (stored_heads && n_head != 0 && *stored_heads != n_head) {
    fail_user("safetensors file", file.path(), "records n_head =", *stored_heads, "in its __metadata__ but",
              n_head, "was given");
  }
  c.n_head = stored_heads ? *stored_heads : n_head;
  if (c.n_head == 0) {
    fail_user("safetensors file", file.path(),
              "does not record n_head in its __metadata__ and no head count was given (GPT-2 small has 12)");
  }
  const std::pair<const char*, int> implied[] = {
      {"n_layer", c.n_layer}, {"n_embd", c.n_embd}, {"vocab_size", c.vocab_size}, {"n_positions", c.max_seq_len}};
  for (const auto& [key, value] : implied) {
    const std::optional<int> stored = metadata_int(file, key);
    if (stored && *stored != value) {
      fail_user("safetensors file", file.path(), "records", key, "=", *stored, "in its __metadata__ but its tensors imply",
                value);
    }
  }
  try {
    c.validate();
  } catch (const UserError& e) {
    fail_user("safetensors file", file.path(), "describes a model Loom cannot build:", e.what());
  }
  return c;
}

void load_hf_gpt2(const SafetensorsFile& file, GPT& model) {
  check_whole_model(model);
  const std::vector<TensorSpec> layout = whole_layout(model);
  const std::string prefix = name_prefix(file);
  // Read into a host copy of the weights, which goes to the model once every tensor was found.
  HostCopy host(model.backend(), model.parameter_arena(), /*download=*/true);
  std::set<std::string> used;
  for (Parameter& p : model.parameters()) {
    const std::string name = prefix + hf_name_of(p.name);
    const SafetensorsFile::Entry* e = file.find(name);
    if (!e) {
      fail_user("safetensors file", file.path(), "has no tensor", "\"" + name + "\"", "(a GPT-2 of", model.config().n_layer,
                "layers has it)");
    }
    const std::vector<int64_t> expected = hf_shape_of(layout, p);
    if (e->shape != expected) {
      fail_user("safetensors file", file.path(), "tensor", "\"" + name + "\"", "has shape", shape_text(e->shape),
                "but the model expects", shape_text(expected));
    }
    used.insert(name);
    const std::vector<float> values = file.read_f32(*e);
    float* dest = host.host().f32() + model.arena_offset(p);
    if (is_conv1d_weight(layout, p.name)) {
      const int64_t out = p.global_shape[0], in = p.global_shape[1];
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t i = 0; i < in; ++i) dest[o * in + i] = values[static_cast<size_t>(i * out + o)];
      }
    } else {
      std::memcpy(dest, values.data(), values.size() * 4);
    }
  }
  // Anything else is a sign of a different model (a gap in the block numbers shows up here too).
  for (const SafetensorsFile::Entry& e : file.tensors()) {
    const bool mask = e.name.ends_with(".attn.bias") || e.name.ends_with(".attn.masked_bias");
    if (used.count(e.name) || e.name == "lm_head.weight" || mask) continue;
    fail_user("safetensors file", file.path(), "tensor", "\"" + e.name + "\"", "is not part of a GPT-2 of",
              model.config().n_layer, "layers (n_embd", model.config().n_embd, ")");
  }
  host.upload();
}

}  // namespace loom
