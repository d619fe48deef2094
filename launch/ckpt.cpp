// `loom ckpt`: look inside a training checkpoint (and verify it), export a model as a Hugging
// Face model directory (or, for GPT-2, one safetensors file), and import either as a checkpoint
// to fine-tune from. The formats are checkpoints/checkpoint.proto, checkpoints/hf_model.h and
// checkpoints/hf_gpt2.h; the directory commands are launch/ckpt_hf.cpp; docs/checkpoints.md.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf_gpt2.h"
#include "checkpoints/hf_model.h"
#include "checkpoints/reader.h"
#include "checkpoints/safetensors.h"
#include "core/base/check.h"
#include "core/base/file_io.h"
#include "core/base/format.h"
#include "core/config.h"
#include "launch/ckpt_hf.h"
#include "launch/cli.h"
#include "launch/model_source.h"
#include "launch/commands.h"
#include "launch/run_setup.h"
#include "parallel/solo_communicator.h"

namespace loom {

namespace {

namespace fs = std::filesystem;
namespace ck = checkpoint;

constexpr const char* kCkptUsage =
    "usage: loom ckpt <inspect|export|import> [options]\n"
    "\n"
    "  inspect  describe a checkpoint (or every checkpoint under a directory) and verify its checksums\n"
    "  export   write a model as a Hugging Face model directory (transformers' from_pretrained loads it)\n"
    "  import   turn a Hugging Face model directory (or a GPT-2 safetensors file) into a checkpoint\n"
    "\n"
    "`loom ckpt <subcommand> --help` lists its options. Docs: docs/checkpoints.md.\n";

}  // namespace

const std::vector<FlagSpec>& ckpt_inspect_flags() {
  static const std::vector<FlagSpec> flags = {
      {"verify", "", "verify the xxh64 checksum of every stored tensor (the default)"},
      {"no-verify", "", "skip the checksums: only the manifest and the file sizes are checked"},
      {"help", "", "show this help"},
  };
  return flags;
}

const std::vector<FlagSpec>& ckpt_export_flags() {
  static const std::vector<FlagSpec> flags = {
      {"dtype", "f32|bf16|f16", "the stored weights' type (default f32; bf16 and f16 round to nearest even)"},
      {"max-shard-size", "SIZE", "largest weight file, e.g. 5GB (the default), 500MB, 2GiB; more: shards and an index"},
      {"format", "safetensors", "for an OUT.safetensors file (GPT-2 only): safetensors, the only format"},
      {"help", "", "show this help"},
  };
  return flags;
}

const std::vector<FlagSpec>& ckpt_import_flags() {
  static const std::vector<FlagSpec> flags = {
      {"config", "CONFIG.pbtxt", "the run config to save with the checkpoint (default: the built-in demo's)"},
      {"set", "FIELD=VALUE", "override a config field, e.g. --set data.tokens.seq_len=256", true},
      {"n-head", "N", "attention heads, for a GPT-2 file that does not record n_head (GPT-2 small: 12)"},
      {"help", "", "show this help"},
  };
  return flags;
}

namespace {

std::string utc_time(int64_t unix_time) {
  const std::time_t t = static_cast<std::time_t>(unix_time);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return "?";
  char out[40];
  std::strftime(out, sizeof out, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return out;
}

std::string shape_text(const google::protobuf::RepeatedField<int64_t>& dims) {
  std::string s = "(";
  for (int i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

const char* state_name(ck::State s) {
  return s == ck::STATE_PARAMETER ? "param" : s == ck::STATE_ADAM_M ? "adam_m" : "adam_v";
}

// DIR itself when it is a checkpoint; else the newest checkpoint under it (the one --resume auto
// tries first), after listing them all when `list` is set.
std::string checkpoint_dir_of(const std::string& dir, bool list) {
  if (fs::exists(fs::path(dir) / ck::kManifestName)) return dir;
  const std::vector<std::string> all = ck::list_checkpoints(dir);
  if (all.empty()) {
    fail_user(dir, "is neither a checkpoint (no", std::string(ck::kManifestName) + ")", "nor a directory holding checkpoints");
  }
  if (list) {
    const std::string latest = ck::latest_name(dir);
    std::printf("%zu checkpoint%s under %s (newest save first):\n", all.size(), all.size() == 1 ? "" : "s", dir.c_str());
    std::printf("  %-16s %10s  %-23s  %s\n", "checkpoint", "step", "created", "size");
    for (const std::string& d : all) {
      const std::string name = fs::path(d).filename().string();
      ck::Manifest m;
      std::string bytes;
      try {
        bytes = read_file(d + "/" + ck::kManifestName, "checkpoint manifest");
      } catch (const UserError&) {
      }
      if (bytes.size() > ck::kMaxManifestBytes || !m.ParseFromString(bytes)) {
        std::printf("  %-16s (unreadable manifest)\n", name.c_str());
        continue;
      }
      uint64_t size = 0;
      for (const ck::ShardFile& f : m.files()) size += f.size();
      std::printf("  %-16s %10" PRId64 "  %-23s  %s%s\n", name.c_str(), m.step(), utc_time(m.unix_time()).c_str(),
                  format_bytes(size).c_str(), name == latest ? "  (named by latest)" : "");
    }
    std::printf("\n");
  }
  return all.front();
}

void print_header(const ck::CheckpointReader& reader) {
  const ck::Manifest& m = reader.manifest();
  const config::ModelConfig& mc = m.config().model();
  std::printf("checkpoint %s\n", reader.dir().c_str());
  std::printf("  format version  %u, created by %s, %s, %s\n", m.format_version(), m.created_by().c_str(),
              utc_time(m.unix_time()).c_str(),
              reader.manifest_checksummed() ? "manifest checksum ok" : "no manifest checksum (format 1)");
  std::printf("  progress        step %" PRId64 ", %" PRIu64 " tokens seen\n", m.step(), m.tokens_seen());
  const ck::Layout& l = m.layout();
  std::string stages;
  for (int i = 0; i < l.pp_layers_size(); ++i) stages += (i ? "," : " blocks per stage ") + std::to_string(l.pp_layers(i));
  std::printf("  saved layout    tp=%d x pp=%d x dp=%d, %d virtual stage%s%s%s (any layout can load it)\n", l.tp(),
              l.pp(), l.dp(), l.virtual_stages(), l.virtual_stages() == 1 ? "" : "s",
              l.sequence_parallel() ? ", sequence parallel" : "", stages.c_str());
  int64_t params = 0;
  std::set<std::string> counted;
  for (const ck::TensorShard& t : m.tensors()) {
    if (t.state() != ck::STATE_PARAMETER || !counted.insert(t.name()).second) continue;
    int64_t n = 1;
    for (int64_t d : t.global_shape()) n *= d;
    params += n;
  }
  std::printf("  model           n_layer %d, n_head %d, n_embd %d, vocab_size %d, seq_len %d (%" PRId64 " parameters)\n",
              mc.n_layer(), mc.n_head(), mc.n_embd(), mc.vocab_size(), mc.seq_len(), params);
  const ck::OptimizerState& o = m.optimizer();
  std::printf("  optimizer       AdamW, %" PRId64 " updates, %s\n", o.step_count(),
              o.has_moments() ? "moments saved" : "no moments (weights only: starts fresh)");
  std::printf("                  lr %g, warmup_steps %d, min_lr_ratio %g, beta1 %g, beta2 %g, eps %g, weight_decay %g, "
              "grad_clip %g\n",
              static_cast<double>(o.lr()), o.warmup_steps(), static_cast<double>(o.min_lr_ratio()),
              static_cast<double>(o.beta1()), static_cast<double>(o.beta2()), static_cast<double>(o.eps()),
              static_cast<double>(o.weight_decay()), static_cast<double>(o.grad_clip()));
  if (m.has_loader()) {
    std::printf("  loader          seed %" PRIu64 ", next sample %" PRIu64 "\n", m.loader().seed(),
                m.loader().next_sample());
  } else {
    std::printf("  loader          none (the addition task derives its batches from the step)\n");
  }
  for (const ck::RngState& r : m.rng()) {
    std::printf("  random stream   %s: seed %" PRIu64 ", counter %" PRIu64 "\n", r.name().c_str(), r.seed(), r.counter());
  }
  std::printf("  files\n");
  for (const ck::ShardFile& f : m.files()) {
    std::printf("    %-20s rank %-5d %14" PRIu64 " bytes (%s)\n", f.name().c_str(), f.rank(), f.size(),
                format_bytes(f.size()).c_str());
  }
}

// One row per (tensor, state), in manifest order, with the checksum status of its slices.
void print_tensors(const ck::CheckpointReader& reader) {
  const ck::Manifest& m = reader.manifest();
  struct Row {
    std::string name;
    ck::State state;
    std::string shape;
    int slices = 0;
    uint64_t bytes = 0;
    int ok = 0, bad = 0;
  };
  std::vector<Row> rows;
  std::map<std::pair<std::string, int>, size_t> index;
  for (int i = 0; i < m.tensors_size(); ++i) {
    const ck::TensorShard& t = m.tensors(i);
    auto [it, fresh] = index.emplace(std::make_pair(t.name(), static_cast<int>(t.state())), rows.size());
    if (fresh) rows.push_back(Row{t.name(), t.state(), shape_text(t.global_shape())});
    Row& r = rows[it->second];
    ++r.slices;
    r.bytes += t.nbytes();
    const ck::CheckpointReader::Check c = reader.check_status(static_cast<size_t>(i));
    r.ok += c == ck::CheckpointReader::Check::kOk;
    r.bad += c == ck::CheckpointReader::Check::kBad;
  }
  size_t width = 6;
  for (const Row& r : rows) width = std::max(width, r.name.size());
  std::printf("  tensors (%zu)\n", rows.size());
  std::printf("    %-*s  %-6s  %-14s %6s %14s  %s\n", static_cast<int>(width), "name", "state", "shape", "slices", "bytes",
              "checksum");
  for (const Row& r : rows) {
    const char* status = r.bad ? "CORRUPT" : r.ok == r.slices ? "ok" : "not verified";
    std::printf("    %-*s  %-6s  %-14s %6d %14" PRIu64 "  %s\n", static_cast<int>(width), r.name.c_str(),
                state_name(r.state), r.shape.c_str(), r.slices, r.bytes, status);
  }
}

int inspect_command(const std::vector<std::string>& args) {
  const ParsedArgs a = parse_args("ckpt inspect", args, ckpt_inspect_flags());
  if (a.has("help")) {
    std::cout << usage_text("loom ckpt inspect DIR [--no-verify]",
                            "Describes the checkpoint DIR: format, progress, saved layout, model shape, optimizer,\n"
                            "loader position, shard files and a table of tensors. DIR may also be a directory of\n"
                            "checkpoints (a run's checkpoint root): they are listed and the newest save (the one\n"
                            "--resume auto tries first) is described. It checks all that a resume checks: the\n"
                            "manifest's checksum and consistency, that every tensor of the model is stored whole,\n"
                            "and every stored tensor's checksum unless --no-verify; exit code 2 if anything fails\n"
                            "(each failure names the file and the tensor).",
                            ckpt_inspect_flags());
    return 0;
  }
  if (a.positionals.size() != 1) fail_user("loom ckpt inspect takes one directory (see loom ckpt inspect --help)");
  if (a.has("verify") && a.has("no-verify")) fail_user("--verify and --no-verify contradict each other");
  // The reader checks the manifest (its checksum, its consistency, the files' sizes) as a resume
  // does, and so does check_model_tensors: a failure of either is the one error line.
  const ck::CheckpointReader reader(checkpoint_dir_of(a.positionals[0], true));
  ck::check_model_tensors(reader);
  std::vector<std::string> failures;
  if (!a.has("no-verify")) failures = reader.verify_all();
  print_header(reader);
  print_tensors(reader);
  std::fflush(stdout);
  for (const std::string& f : failures) std::fprintf(stderr, "loom ckpt inspect: error: %s\n", f.c_str());
  if (!failures.empty()) return 2;
  std::printf("%s\n", a.has("no-verify") ? "manifest and tensors consistent; tensor checksums not verified (--no-verify)"
                                         : "all checksums verified: every tensor of the model is stored whole and intact");
  return 0;
}

int export_command(const std::vector<std::string>& args) {
  const ParsedArgs a = parse_args("ckpt export", args, ckpt_export_flags());
  if (a.has("help")) {
    std::cout << usage_text("loom ckpt export MODEL OUT_DIR [--dtype f32|bf16|f16] [--max-shard-size 5GB]",
                            "Loads MODEL into one process (a checkpoint directory, whatever layout saved it; a\n"
                            "directory of checkpoints: the newest that loads; a run directory: its model.loom, else\n"
                            "its newest checkpoint; a model file; or a Hugging Face model directory) and writes\n"
                            "OUT_DIR as a Hugging Face model directory: config.json, model.safetensors (or shards\n"
                            "of at most --max-shard-size and model.safetensors.index.json) and the tokenizer files\n"
                            "found next to the model or where its config points. transformers' from_pretrained\n"
                            "loads it as is. Written to a temporary directory renamed at the end; OUT_DIR must not\n"
                            "exist or be empty.\n"
                            "\n"
                            "loom ckpt export MODEL OUT.safetensors (a GPT-2 only) still writes the one file of\n"
                            "GPT2Model's tensors with the model shape in __metadata__; it is deprecated: prefer a\n"
                            "directory, which carries config.json and the tokenizer.",
                            ckpt_export_flags());
    return 0;
  }
  if (a.positionals.size() != 2) {
    fail_user("loom ckpt export takes a model (a checkpoint, a run directory, a model file or a Hugging Face directory)",
              "and an output directory (see loom ckpt export --help)");
  }
  const std::string& out = a.positionals[1];
  const std::string format = a.get("format", "safetensors");
  if (format != "safetensors") fail_user("--format", format, "is not supported (safetensors is the only format)");
  if (!out.ends_with(".safetensors")) {
    if (a.has("format")) fail_user("--format is for an OUT.safetensors file; a directory export takes --dtype");
    return export_hf_model_dir(a.positionals[0], out, a);
  }
  if (a.has("dtype") || a.has("max-shard-size")) {
    fail_user("--dtype and --max-shard-size are for a directory export; an OUT.safetensors file is f32");
  }
  const LoadedModel loaded = load_trained_model(a.positionals[0]);
  if (loaded.model->config().llama()) {
    fail_user("the model", loaded.source, "is of the Llama family; export it as a directory (loom ckpt export MODEL OUT_DIR)");
  }
  save_hf_gpt2(out, *loaded.model);
  const std::string step = loaded.step >= 0 ? "step " + std::to_string(loaded.step) + ", " : "";
  std::printf("exported %s (%s%" PRId64 " parameters) to %s (%s)\n", loaded.source.c_str(), step.c_str(),
              loaded.model->num_parameters(), out.c_str(), format_bytes(fs::file_size(out)).c_str());
  std::fprintf(stderr, "loom ckpt export: note: a single .safetensors file is deprecated; export to a directory "
                       "(config.json, weights, tokenizer) instead\n");
  return 0;
}

int import_command(const std::vector<std::string>& args) {
  const ParsedArgs a = parse_args("ckpt import", args, ckpt_import_flags());
  if (a.has("help")) {
    std::cout << usage_text(
        "loom ckpt import HF_DIR OUT_DIR [--config CONFIG.pbtxt] [--set field=value ...]\n"
        "       loom ckpt import FILE.safetensors OUT_DIR [--config CONFIG.pbtxt] [--set field=value ...] [--n-head N]",
        "HF_DIR is a Hugging Face model directory: config.json (GPT2LMHeadModel, LlamaForCausalLM,\n"
        "MistralForCausalLM or Qwen2ForCausalLM) and model.safetensors, or shards with\n"
        "model.safetensors.index.json (F32, BF16 or F16). The model comes from config.json; its weights\n"
        "are saved as a weights-only checkpoint at step 0 in OUT_DIR, with the run config\n"
        "(OUT_DIR/config.pbtxt) and the tokenizer files of HF_DIR next to it.\n"
        "\n"
        "FILE.safetensors: reads a GPT-2 in Hugging Face's names (GPT2Model or GPT2LMHeadModel; F32, BF16 or F16) and saves\n"
        "it as a weights-only checkpoint at step 0 in OUT_DIR, with the run config next to it\n"
        "(OUT_DIR/config.pbtxt). n_layer, n_embd, vocab_size and seq_len come from the tensors'\n"
        "shapes, n_head from the file's __metadata__ or --n-head; model fields the config sets must\n"
        "agree. Fine-tune with: loom train OUT_DIR/config.pbtxt --resume OUT_DIR",
        ckpt_import_flags());
    return 0;
  }
  if (a.positionals.size() != 2) {
    fail_user("loom ckpt import takes a Hugging Face model directory (or a GPT-2 safetensors file) and an output",
              "directory (see loom ckpt import --help)");
  }
  const std::string& in = a.positionals[0];
  const std::string& out_dir = a.positionals[1];
  if (!ck::list_checkpoints(out_dir).empty()) {
    fail_user(out_dir, "already holds checkpoints; import into a new directory");
  }
  if (fs::is_directory(in)) {
    if (!is_hf_model_dir(in)) {
      fail_user("the directory", in, "is not a Hugging Face model directory: expected", std::string(kHfConfigName), "and",
                std::string(kHfSingleFileName), "or", kHfIndexName);
    }
    return import_hf_model_dir(in, out_dir, a);
  }
  const std::string config_path = a.get("config", "");
  const auto overrides = a.flags.count("set") ? a.flags.at("set") : std::vector<std::string>{};
  const int flag_heads = a.get_int("n-head", 0);
  if (a.has("n-head") && flag_heads <= 0) fail_user("--n-head expects a positive integer, got", flag_heads);

  // The model fields the user chose (config file or --set), before defaults are filled in.
  config::RunConfig chosen = config_path.empty() ? config::RunConfig() : load_config_file(config_path);
  for (const std::string& o : overrides) apply_config_override(chosen, o);
  const config::ModelConfig& cm = chosen.model();

  const SafetensorsFile file(in);
  const bool heads_known = file.metadata().count("n_head") != 0 || flag_heads != 0 || cm.has_n_head();
  if (!heads_known) {
    fail_user("safetensors file", in, "does not record n_head in its __metadata__; give it with --n-head N (GPT-2 small: 12)");
  }
  const int hint = flag_heads != 0 ? flag_heads : file.metadata().count("n_head") ? 0 : cm.n_head();
  const GPTConfig shape = hf_gpt2_config_of(file, hint);

  // Unset fields are the file's; set ones must agree with it.
  std::vector<std::string> all_overrides = overrides;
  std::string differences;
  auto field = [&](const char* name, bool set, int value, int from_file) {
    if (!set) {
      all_overrides.push_back(std::string("model.") + name + "=" + std::to_string(from_file));
    } else if (value != from_file) {
      differences += str_cat(differences.empty() ? "" : ";", std::string("model.") + name, "is", value,
                             "in the config but", from_file, "in the file");
    }
  };
  field("n_layer", cm.has_n_layer(), cm.n_layer(), shape.n_layer);
  field("n_head", cm.has_n_head(), cm.n_head(), shape.n_head);
  field("n_embd", cm.has_n_embd(), cm.n_embd(), shape.n_embd);
  field("vocab_size", cm.has_vocab_size(), cm.vocab_size(), shape.vocab_size);
  field("seq_len", cm.has_seq_len(), cm.seq_len(), shape.max_seq_len);
  if (!differences.empty()) {
    fail_user("the config does not fit", in + ":", differences, "(leave these fields unset to take the file's values)");
  }
  const config::RunConfig cfg = resolve_run_config(config_path, all_overrides);

  GPT model(model_config_of(cfg));
  load_hf_gpt2(file, model);
  const ImportedModel saved = save_imported_model(cfg, model, out_dir);
  const std::string& config_out = saved.config;
  std::printf("imported %s: n_layer %d, n_head %d, n_embd %d, vocab_size %d, seq_len %d (%" PRId64 " parameters)\n",
              in.c_str(), shape.n_layer, shape.n_head, shape.n_embd, shape.vocab_size, shape.max_seq_len,
              model.num_parameters());
  std::printf("saved %s (weights only, step 0) and its config %s\n", saved.checkpoint.c_str(), config_out.c_str());
  std::printf("fine-tune it: loom train YOUR_RUN.pbtxt --init-from %s (its model section: %s)\n", out_dir.c_str(),
              config_out.c_str());
  return 0;
}

}  // namespace

int run_ckpt(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fputs(kCkptUsage, stderr);
    return 2;
  }
  const std::string& sub = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::fputs(kCkptUsage, stdout);
    return 0;
  }
  if (sub == "inspect") return inspect_command(rest);
  if (sub == "export") return export_command(rest);
  if (sub == "import") return import_command(rest);
  fail_user("unknown subcommand '" + sub + "' of loom ckpt (inspect, export or import; see loom ckpt --help)");
}

}  // namespace loom
