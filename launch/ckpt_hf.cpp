#include "launch/ckpt_hf.h"

#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <span>

#include <google/protobuf/text_format.h>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf_model.h"
#include "checkpoints/hf_tokenizer_files.h"
#include "core/base/check.h"
#include "core/base/file_io.h"
#include "core/base/format.h"
#include "core/config.h"
#include "launch/model_source.h"
#include "launch/run_setup.h"
#include "launch/token_run.h"
#include "parallel/solo_communicator.h"

namespace loom {

namespace {

namespace fs = std::filesystem;
namespace ck = checkpoint;
namespace pb = google::protobuf;

// Every field set in `m` (recursively) as "model.path=value", the form of --set.
void set_fields_of(const pb::Message& m, const std::string& prefix, std::vector<std::pair<std::string, std::string>>& out) {
  std::vector<const pb::FieldDescriptor*> fields;
  m.GetReflection()->ListFields(m, &fields);
  for (const pb::FieldDescriptor* f : fields) {
    if (f->is_repeated()) continue;  // a model section has none
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      set_fields_of(m.GetReflection()->GetMessage(m, f), prefix + f->name() + ".", out);
      continue;
    }
    std::string value;
    pb::TextFormat::PrintFieldValueToString(m, f, -1, &value);
    out.emplace_back(prefix + f->name(), value);
  }
}

// The run config of an import: --config (or the demo's) with --set applied, its model section
// config.json's. Model fields the user set must agree with config.json.
config::RunConfig import_run_config(const ParsedArgs& a, const GPTConfig& model, const std::string& config_json) {
  const std::string config_path = a.get("config", "");
  const auto overrides = a.flags.count("set") ? a.flags.at("set") : std::vector<std::string>{};
  config::RunConfig chosen = config_path.empty() ? config::RunConfig() : load_config_file(config_path);
  for (const std::string& o : overrides) apply_config_override(chosen, o);
  config::ModelConfig from_file;
  set_model_config(model, &from_file);
  std::vector<std::pair<std::string, std::string>> file_fields, user_fields;
  set_fields_of(from_file, "model.", file_fields);
  set_fields_of(chosen.model(), "model.", user_fields);
  const std::map<std::string, std::string> file_map(file_fields.begin(), file_fields.end());
  std::string differences;
  for (const auto& [field, value] : user_fields) {
    auto it = file_map.find(field);
    const std::string theirs = it == file_map.end() ? "unset" : it->second;
    if (theirs != value) differences += str_cat(differences.empty() ? "" : ";", field, "is", value, "in the config but", theirs, "in", config_json);
  }
  if (!differences.empty()) fail_user("the config does not fit", config_json + ":", differences, "(leave these fields unset)");
  std::vector<std::string> all = overrides;
  for (const auto& [field, value] : file_fields) all.push_back(field + "=" + value);
  return resolve_run_config(config_path, all);
}

void check_tokenizer_fits(const std::string& dir, const GPTConfig& model, const std::string& model_name) {
  const std::optional<int64_t> vocab = hf_tokenizer_vocab_size(dir);
  if (vocab && *vocab > model.vocab_size) {
    fail_user("the tokenizer files in", dir, "define", *vocab, "tokens but", model_name, "has vocab_size",
              model.vocab_size, "; the tokenizer does not belong to this model");
  }
}


}  // namespace

uint64_t parse_byte_size(const std::string& text, const std::string& what) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  const std::string unit = text.substr(digits);
  static const std::map<std::string, uint64_t> units = {
      {"", 1}, {"B", 1}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
      {"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}};
  auto it = units.find(unit);
  if (digits == 0 || digits > 12 || it == units.end()) {
    fail_user(what, "is", "\"" + text + "\";", "expected a size such as 5GB, 500MB, 2GiB or a number of bytes");
  }
  const uint64_t size = std::stoull(text.substr(0, digits)) * it->second;
  if (size == 0) fail_user(what, "must be positive");
  return size;
}

int import_hf_model_dir(const std::string& in, const std::string& out_dir, const ParsedArgs& a) {
  if (a.has("n-head")) fail_user("--n-head is for a single safetensors file;", in, "has a config.json that gives the heads");
  // Everything is read and checked before anything is written.
  const HfModelDir hf(in);
  const std::string config_json = (fs::path(in) / kHfConfigName).string();
  const GPTConfig& shape = hf.config().model;
  LoomTensors tensors = hf.read_tensors();
  check_tokenizer_fits(in, shape, config_json);
  const config::RunConfig cfg = import_run_config(a, shape, config_json);
  const GPTConfig built = gpt_config_of(cfg.model());
  LOOM_CHECK(built == shape, "the run config's model section does not describe the model of", config_json);
  GPT model(built);
  load_hf_tensors(tensors, model);
  tensors = {};

  const ImportedModel saved = save_imported_model(cfg, model, out_dir);
  const std::string& config_out = saved.config;
  const std::vector<std::string> tokenizer = hf_tokenizer_files_in(in);
  copy_hf_tokenizer_files(in, tokenizer, out_dir);
  std::printf("imported %s (%s): %s, n_layer %d, n_head %d, n_embd %d, vocab_size %d, seq_len %d (%" PRId64
              " parameters)\n",
              in.c_str(), hf.config().architecture.c_str(), shape.llama() ? "Llama family" : "GPT-2", shape.n_layer,
              shape.n_head, shape.n_embd, shape.vocab_size, shape.max_seq_len, model.num_parameters());
  std::printf("saved %s (weights only, step 0), its config %s and %zu tokenizer file%s\n",
              saved.checkpoint.c_str(), config_out.c_str(), tokenizer.size(), tokenizer.size() == 1 ? "" : "s");
  std::printf("fine-tune it: loom train YOUR_RUN.pbtxt --init-from %s (its model section: %s)\n", out_dir.c_str(),
              config_out.c_str());
  return 0;
}

ImportedModel save_imported_model(const config::RunConfig& cfg, GPT& model, const std::string& out_dir) {
  parallel::SoloCommunicator world("world");
  ck::Policy policy;
  policy.root = out_dir;
  policy.async = false;
  ck::Checkpointer checkpointer(policy, world);
  GPT* chunk = &model;
  checkpointer.save(cfg, ck::Progress{}, std::span<GPT* const>(&chunk, 1), {}, "loom ckpt import");
  checkpointer.wait();
  const std::string config_out = (fs::path(out_dir) / "config.pbtxt").string();
  write_file_durably(config_out, "# The config `loom ckpt import` saved with the checkpoint next to this file.\n" +
                                     config_to_text(cfg));
  return {checkpointer.last_committed(), config_out};
}

int export_hf_model_dir(const std::string& model_path, const std::string& out_dir, const ParsedArgs& a) {
  HfWriteOptions options;
  options.dtype = stored_dtype_of(a.get("dtype", "f32"), "--dtype");
  options.max_shard_bytes = parse_byte_size(a.get("max-shard-size", "5GB"), "--max-shard-size");
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !(fs::is_directory(out_dir, ec) && fs::is_empty(out_dir, ec))) {
    fail_user(out_dir, "already exists and is not an empty directory; export into a new directory (nothing is overwritten)");
  }
  const LoadedModel loaded = load_trained_model(model_path);
  HfModelConfig hf;
  hf.model = loaded.model->config();
  const std::string tokenizer_dir = tokenizer_dir_of(loaded);
  std::vector<std::string> tokenizer;
  if (!tokenizer_dir.empty()) {
    check_tokenizer_fits(tokenizer_dir, hf.model, "the model " + loaded.source);
    tokenizer = hf_tokenizer_files_in(tokenizer_dir);
    const TokenIds ids = hf_generation_token_ids(tokenizer_dir);
    hf.bos_token_id = ids.bos;
    hf.eos_token_id = ids.eos;
  }
  const LoomTensors tensors = hf_tensors_of_model(*loaded.model);

  // Into a temporary sibling, renamed at the end: OUT_DIR is whole or absent.
  const fs::path out = fs::absolute(out_dir).lexically_normal();
  const fs::path tmp = out.parent_path() / ("." + out.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::create_directories(out.parent_path(), ec);
  std::vector<std::string> written;
  try {
    fs::remove_all(tmp, ec);
    fs::create_directory(tmp);
    written = write_hf_model_dir(tmp.string(), hf,
                                 [&](const std::string& name) -> const float* {
                                   auto it = tensors.values.find(name);
                                   return it == tensors.values.end() ? nullptr : it->second.data();
                                 },
                                 options);
    copy_hf_tokenizer_files(tokenizer_dir, tokenizer, tmp.string());
    sync_directory(tmp.string());
    if (fs::exists(out, ec)) fs::remove(out);  // an empty directory (checked above)
    fs::rename(tmp, out);
    sync_directory(out.parent_path().string());
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    fail_user("writing", out_dir, "failed:", e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  uint64_t bytes = 0;
  for (const std::string& f : written) bytes += fs::file_size(out / f);
  const std::string step = loaded.step >= 0 ? "step " + std::to_string(loaded.step) + ", " : "";
  std::printf("exported %s (%s%" PRId64 " parameters) to %s: %s, %zu weight file%s (%s, %s), %zu tokenizer file%s\n",
              loaded.source.c_str(), step.c_str(), loaded.model->num_parameters(), out_dir.c_str(), kHfConfigName,
              written.size() - 1 - (written.size() > 2 ? 1 : 0), written.size() > 2 ? "s" : "",
              safetensors_dtype_name(options.dtype), format_bytes(bytes).c_str(), tokenizer.size(),
              tokenizer.size() == 1 ? "" : "s");
  return 0;
}

}  // namespace loom
