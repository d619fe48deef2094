#include "launch/model_source.h"

#include <algorithm>
#include <filesystem>
#include <span>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf_model.h"
#include "checkpoints/hf_tokenizer_files.h"
#include "checkpoints/model_file.h"
#include "checkpoints/reader.h"
#include "core/backend/host_copy.h"
#include "launch/run_setup.h"
#include "launch/token_run.h"

namespace loom {

namespace fs = std::filesystem;
namespace ck = checkpoint;

namespace {

constexpr const char* kModelFileName = "model.loom";

std::string shape_text(const Shape& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.dims().size(); ++i) out += (i ? ", " : "") + std::to_string(shape.dims()[i]);
  return out + ")";
}

LoadedModel from_model_file(const std::string& path) {
  ModelFile file = load_model_file(path);
  LoadedModel m;
  m.config = parse_config_text(file.config_text, path + " (stored config)");
  validate_config(m.config);
  m.model = std::make_unique<GPT>(model_config_of(m.config));
  copy_into_model(file, path, *m.model);
  m.source = path;
  return m;
}

LoadedModel from_checkpoint(const std::string& dir) {
  const ck::CheckpointReader reader(dir);
  LoadedModel m;
  m.config = reader.manifest().config();
  m.model = std::make_unique<GPT>(model_config_of(m.config));
  GPT* chunk = m.model.get();
  ck::load_state(reader, std::span<GPT* const>(&chunk, 1), {});
  m.source = dir;
  m.step = reader.manifest().step();
  return m;
}

// A Hugging Face model directory: the demo's run config with config.json's model section.
LoadedModel from_hf_model_dir(const std::string& dir) {
  const HfModelDir hf(dir);
  LoomTensors tensors = hf.read_tensors();
  LoadedModel m;
  config::ModelConfig model;
  set_model_config(hf.config().model, &model);
  m.config = resolve_run_config("", {});
  *m.config.mutable_model() = model;
  m.model = std::make_unique<GPT>(model_config_of(m.config));
  load_hf_tensors(tensors, *m.model);
  m.source = dir;
  return m;
}

// The newest checkpoint under `root` that loads; UserError with the last reason when none does.
LoadedModel from_checkpoints(const std::string& root, const std::vector<std::string>& dirs) {
  std::string reasons;
  for (const std::string& dir : dirs) {
    try {
      return from_checkpoint(dir);
    } catch (const UserError& e) {
      reasons += std::string(reasons.empty() ? "" : "; ") + e.what();
    }
  }
  fail_user("none of the", dirs.size(), "checkpoints under", root, "loads:", reasons);
}

}  // namespace

LoadedModel load_trained_model(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) fail_user("the model", path, "does not exist (give a model file, a checkpoint or a run directory)");
  if (fs::is_regular_file(status)) return from_model_file(path);
  if (!fs::is_directory(status)) fail_user("the model", path, "is neither a file nor a directory");
  const fs::path dir(path);
  if (fs::exists(dir / ck::kManifestName)) return from_checkpoint(path);
  if (is_hf_model_dir(path)) return from_hf_model_dir(path);
  if (fs::is_regular_file(dir / kModelFileName)) return from_model_file((dir / kModelFileName).string());
  for (const fs::path& root : {dir, dir / "checkpoints"}) {
    const std::vector<std::string> found = ck::list_checkpoints(root.string());
    if (!found.empty()) return from_checkpoints(root.string(), found);
  }
  fail_user("the directory", path, "holds no model: expected a model file (" + std::string(kModelFileName) + "),",
            "a checkpoint (" + std::string(ck::kManifestName) + ") or checkpoints (step-NNNNNNNN), or a Hugging Face model",
            "directory (" + std::string(kHfConfigName) + " and safetensors)");
}

void copy_model_into(const LoadedModel& loaded, const config::RunConfig& run, std::span<GPT* const> chunks) {
  std::vector<std::string> diffs = ck::model_differences(loaded.config, run);
  // Rotary positions have no weights: a Llama's seq_len (Hugging Face's max_position_embeddings)
  // is a limit, not a shape, and fine-tuning may use shorter (or longer) sequences.
  if (loaded.config.model().family() == config::ModelConfig::FAMILY_LLAMA &&
      run.model().family() == config::ModelConfig::FAMILY_LLAMA) {
    std::erase_if(diffs, [](const std::string& d) { return d.starts_with("model.seq_len:"); });
  }
  if (!diffs.empty()) {
    std::string list;
    for (const std::string& d : diffs) list += (list.empty() ? "" : "; ") + d;
    fail_user("the model", loaded.source, "has another shape than the config's (" + list + ")");
  }
  const GPT& whole = *loaded.model;
  for (GPT* chunk : chunks) {
    HostCopy arena(chunk->backend(), chunk->parameter_arena(), /*download=*/true);
    float* values = arena.host().f32();
    for (const Parameter& p : chunk->parameters()) {
      const auto from = std::find_if(whole.parameters().begin(), whole.parameters().end(),
                                     [&](const Parameter& w) { return w.name == p.name; });
      if (from == whole.parameters().end()) {
        fail_user("the model", loaded.source, "has no tensor \"" + p.name + "\", which the config's model has");
      }
      if (from->global_shape != p.global_shape) {
        fail_user("the model", loaded.source, "holds tensor \"" + p.name + "\" in shape",
                  shape_text(from->global_shape), "but the config's model has", shape_text(p.global_shape));
      }
      // The whole model holds every tensor whole, on the CPU: its value is the global matrix.
      const float* global = from->value.f32();
      const int64_t cols = global_columns(p.global_shape);
      float* local = values + chunk->arena_offset(p);
      for (const ShardBlock& b : p.blocks) {
        for (int64_t r = 0; r < b.rows; ++r) {
          std::copy_n(global + (b.row0 + r) * cols + b.col0, b.cols, local);
          local += b.cols;
        }
      }
    }
    arena.upload();
  }
}

std::string tokenizer_dir_of(const LoadedModel& loaded) {
  std::vector<fs::path> candidates;
  const fs::path source(loaded.source);
  for (fs::path p = fs::is_directory(source) ? source : source.parent_path(); !p.empty(); p = p.parent_path()) {
    candidates.push_back(p);
    if (candidates.size() == 3 || p == p.parent_path()) break;  // the checkpoint, its root, the run
  }
  if (loaded.config.data().has_tokens()) {
    const fs::path t(tokenizer_path_of(loaded.config.data().tokens()));
    if (!t.empty()) candidates.push_back(fs::is_directory(t) ? t : t.parent_path());
  }
  for (const fs::path& p : candidates) {
    if (!hf_tokenizer_files_in(p.string()).empty()) return p.string();
  }
  return "";
}

}  // namespace loom
