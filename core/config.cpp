#include "core/config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/base/check.h"
#include "core/gpt.h"

namespace loom {

namespace pb = google::protobuf;

namespace {

// Collects the first parse error with its position, so the user sees file:line:column.
class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  explicit FirstErrorCollector(std::string source) : source_(std::move(source)) {}
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty()) {
      first_ = str_cat(source_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) +
                       ":", message);
    }
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string source_;
  std::string first_;
};

void require_positive(const char* field, int64_t value) {
  if (value <= 0) fail_user(field, "is", value, "but must be a positive integer");
}

// A deadline: positive, finite, and at most a week (it becomes milliseconds in 64 bits).
void require_seconds(const char* field, double seconds) {
  constexpr double kWeek = 7 * 24 * 3600;
  if (!(seconds > 0 && seconds <= kWeek)) {
    fail_user(field, "is", seconds, "but must be a number of seconds in (0, 604800] (at most a week)");
  }
}

// Config files are a few kilobytes; anything far larger (or endless, like /dev/zero) is not one.
constexpr std::uintmax_t kMaxConfigBytes = 16 << 20;

}  // namespace

config::RunConfig parse_config_text(const std::string& text, const std::string& source_name) {
  config::RunConfig cfg;
  FirstErrorCollector errors(source_name);
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &cfg)) {
    fail_user(errors.first().empty() ? source_name + ": not a valid config" : errors.first(),
              "(the schema is core/config.proto, documented in docs/config.md)");
  }
  return cfg;
}

config::RunConfig load_config_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) fail_user("cannot read config file", path, "(does it exist?)");
  if (!fs::is_regular_file(status)) {
    fail_user("config file", path, "is", fs::is_directory(status) ? "a directory," : "not a regular file,",
              "but must be a .pbtxt text file (examples in configs/)");
  }
  const std::uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > kMaxConfigBytes) {
    fail_user("config file", path, "has", size, "bytes; a config is a small .pbtxt text file (at most", kMaxConfigBytes,
              "bytes)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_user("cannot read config file", path, "(does it exist?)");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parse_config_text(buffer.str(), path);
}

void apply_config_override(config::RunConfig& cfg, std::string_view assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    fail_user("--set expects field.path=value, got '" + std::string(assignment) + "'");
  }
  std::string path(assignment.substr(0, eq));
  std::string value(assignment.substr(eq + 1));

  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);

  pb::Message* message = &cfg;
  for (size_t i = 0; i < parts.size(); ++i) {
    const pb::Descriptor* descriptor = message->GetDescriptor();
    const pb::FieldDescriptor* field = descriptor->FindFieldByName(parts[i]);
    if (field == nullptr) {
      fail_user("--set " + path + ": no field '" + parts[i] + "' in " + descriptor->name(),
                "(see docs/config.md for the fields)");
    }
    const pb::Reflection* reflection = message->GetReflection();
    bool last = i + 1 == parts.size();
    if (field->is_repeated() && field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      // A list of sections: the next part is an index; the index one past the end appends
      // (--set data.tokens.source.0.path=DIR).
      const int size = reflection->FieldSize(*message, field);
      if (last || parts[i + 1].empty() ||
          parts[i + 1].find_first_not_of("0123456789") != std::string::npos) {
        fail_user("--set " + path + ": '" + parts[i] + "' is a list of sections; name one by its index,",
                  "e.g. " + parts[i] + ".0." + "<field>", "(0 ..", size, "; " + std::to_string(size) + " appends)");
      }
      const int index = std::stoi(parts[i + 1].substr(0, 9));
      if (index > size) {
        fail_user("--set " + path + ": '" + parts[i] + "' has", size, "entries, so index", parts[i + 1],
                  "is out of range (0 ..", size, "; " + std::to_string(size) + " appends)");
      }
      message = index == size ? reflection->AddMessage(message, field)
                              : reflection->MutableRepeatedMessage(message, field, index);
      ++i;
      if (i + 1 == parts.size()) fail_user("--set " + path + ": names a section, not a value");
      continue;
    }
    if (field->is_repeated()) {
      // A list of scalars: --set parallel.pp_layers=3,1 replaces the whole list.
      if (!last) fail_user("--set " + path + ": '" + parts[i] + "' is a value, not a section");
      reflection->ClearField(message, field);
      std::string text;
      std::stringstream items(value);
      for (std::string item; std::getline(items, item, ',');) text += field->name() + ": " + item + " ";
      FirstErrorCollector errors("--set " + path);
      pb::TextFormat::Parser parser;
      parser.RecordErrorsTo(&errors);
      if (!parser.MergeFromString(text, message)) {
        fail_user("--set " + path + ": '" + value + "' is not a comma-separated list of",
                  std::string(field->type_name()) + " values");
      }
      continue;
    }
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (last) fail_user("--set " + path + ": '" + parts[i] + "' is a section, not a value");
      message = reflection->MutableMessage(message, field);
      continue;
    }
    if (!last) fail_user("--set " + path + ": '" + parts[i] + "' is a value, not a section");
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
      reflection->SetString(message, field, value);  // plain text; no quoting needed on a shell
      continue;
    }
    // A parser with a collector reports through us instead of logging to stderr.
    FirstErrorCollector errors("--set " + path);
    pb::TextFormat::Parser parser;
    parser.RecordErrorsTo(&errors);
    if (!parser.ParseFieldValueFromString(value, field, message)) {
      std::string expected;
      if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
        const pb::EnumDescriptor* e = field->enum_type();
        expected = " (one of:";
        for (int v = 0; v < e->value_count(); ++v) expected += std::string(v ? ", " : " ") + e->value(v)->name();
        expected += ")";
      }
      fail_user("--set " + path + ": '" + value + "' is not a valid " + field->type_name() + " value" +
                expected);
    }
  }
}

void check_thread_count(const char* what, int threads) {
  if (threads < 0 || threads > kMaxThreads) {
    fail_user(what, "is", threads, "but must be in 0 ..", kMaxThreads, "(0: this process's share of the host's cores)");
  }
}

void validate_config(const config::RunConfig& cfg) {
  const config::ModelConfig& m = cfg.model();
  require_positive("model.n_layer", m.n_layer());
  require_positive("model.n_head", m.n_head());
  require_positive("model.n_embd", m.n_embd());
  if (m.has_vocab_size()) require_positive("model.vocab_size", m.vocab_size());
  if (m.has_seq_len()) require_positive("model.seq_len", m.seq_len());
  if (m.n_embd() % m.n_head() != 0) {
    fail_user("model.n_head =", m.n_head(), "must divide model.n_embd =", m.n_embd(),
              "(each head gets n_embd / n_head channels)");
  }
  if (m.family() == config::ModelConfig::FAMILY_LLAMA) {
    if (m.has_n_kv_head()) {
      require_positive("model.n_kv_head", m.n_kv_head());
      if (m.n_head() % m.n_kv_head() != 0) {
        fail_user("model.n_kv_head =", m.n_kv_head(), "must divide model.n_head =", m.n_head(),
                  "(each key/value head serves n_head / n_kv_head query heads)");
      }
    }
    if (m.has_intermediate_size()) require_positive("model.intermediate_size", m.intermediate_size());
    if ((m.n_embd() / m.n_head()) % 2 != 0) {
      fail_user("model.n_embd / model.n_head =", m.n_embd() / m.n_head(),
                "must be even for the Llama family (rotary embeddings turn pairs of channels)");
    }
    if (!(m.rope_theta() > 0 && std::isfinite(m.rope_theta()))) {
      fail_user("model.rope_theta is", m.rope_theta(), "but must be a finite number > 0 (Llama 2: 10000, Llama 3: 500000)");
    }
    if (!(m.norm_eps() > 0 && std::isfinite(m.norm_eps()))) {
      fail_user("model.norm_eps is", m.norm_eps(), "but must be a finite number > 0 (typically 1e-5 or 1e-6)");
    }
  } else {
    // A Llama field on a GPT-2 model would be ignored silently: say so instead.
    const char* llama_only[] = {"n_kv_head", "intermediate_size", "rope_theta", "norm_eps", "tie_embeddings",
                                "qkv_bias", "rope_scaling"};
    const google::protobuf::Descriptor* d = m.GetDescriptor();
    for (const char* name : llama_only) {
      if (m.GetReflection()->HasField(m, d->FindFieldByName(name))) {
        fail_user("model." + std::string(name), "applies to the Llama family only: set model.family: FAMILY_LLAMA,",
                  "or remove it (GPT-2 has LayerNorm, learned positions and tied embeddings)");
      }
    }
  }

  const config::OptimizerConfig& o = cfg.optimizer();
  // AdamW moves every weight by about lr per step: beyond 1 no training survives the first steps.
  if (!(o.lr() > 0 && o.lr() <= 1)) {
    fail_user("optimizer.lr is", o.lr(), "but must be a number in (0, 1] (AdamW moves each weight by about lr per "
              "step; typical values are 1e-4 to 1e-2)");
  }
  if (o.warmup_steps() < 0) fail_user("optimizer.warmup_steps is", o.warmup_steps(), "but must be >= 0");
  if (!(o.min_lr_ratio() >= 0 && o.min_lr_ratio() <= 1)) {
    fail_user("optimizer.min_lr_ratio is", o.min_lr_ratio(), "but must be in [0, 1]");
  }
  if (!(o.beta1() >= 0 && o.beta1() < 1)) fail_user("optimizer.beta1 is", o.beta1(), "but must be in [0, 1)");
  if (!(o.beta2() >= 0 && o.beta2() < 1)) fail_user("optimizer.beta2 is", o.beta2(), "but must be in [0, 1)");
  if (!(o.eps() > 0 && std::isfinite(o.eps()))) fail_user("optimizer.eps is", o.eps(), "but must be a finite number > 0");
  if (!(o.weight_decay() >= 0 && std::isfinite(o.weight_decay()))) {
    fail_user("optimizer.weight_decay is", o.weight_decay(), "but must be a finite number >= 0");
  }
  if (!(o.grad_clip() >= 0 && std::isfinite(o.grad_clip()))) {
    fail_user("optimizer.grad_clip is", o.grad_clip(), "but must be a finite number >= 0 (0 disables clipping)");
  }

  if (cfg.data().has_addition()) {
    const config::AdditionData& a = cfg.data().addition();
    if (a.digits() < 1 || a.digits() > 9) {
      fail_user("data.addition.digits is", a.digits(), "but must be in 1..9");
    }
    if (a.has_min_digits() && (a.min_digits() < 1 || a.min_digits() > a.digits())) {
      fail_user("data.addition.min_digits is", a.min_digits(), "but must be in 1 ..", a.digits(),
                "(data.addition.digits)");
    }
    require_positive("data.addition.test_problems", a.test_problems());
    // The held-out set is drawn, kept and decoded problem by problem at every evaluation: two
    // billion of them would take the run's memory and never finish one evaluation.
    if (a.test_problems() > kMaxTestProblems) {
      fail_user("data.addition.test_problems is", a.test_problems(), "but must be at most", kMaxTestProblems,
                "(each held-out problem is decoded at every evaluation)");
    }
  } else if (cfg.data().has_tokens()) {
    const config::TokenData& d = cfg.data().tokens();
    if (d.source_size() == 0) {
      fail_user("data.tokens has no source: add one, e.g. data { tokens { source { path: \"data/my-corpus\" } } }");
    }
    for (int i = 0; i < d.source_size(); ++i) {
      const config::TokenSource& src = d.source(i);
      if (src.path().empty()) {
        fail_user("data.tokens.source", i, "has no path (the directory `loom prepare` wrote, or a Megatron dataset)");
      }
      if (!(src.val_fraction() >= 0 && src.val_fraction() < 1)) {
        fail_user("data.tokens.source", i, "(" + src.path() + ") has val_fraction", src.val_fraction(),
                  "but must be at least 0 and below 1 (e.g. 0.01)");
      }
      if (!(src.weight() > 0) || !std::isfinite(src.weight())) {
        fail_user("data.tokens.source", i, "(" + src.path() + ") has weight", src.weight(), "but must be > 0");
      }
    }
    require_positive("data.tokens.seq_len", d.seq_len());
    if (d.eval_batches() < 0) fail_user("data.tokens.eval_batches is", d.eval_batches(), "but must be >= 0");
    if (d.sample_tokens() < 0) fail_user("data.tokens.sample_tokens is", d.sample_tokens(), "but must be >= 0");
  } else {
    fail_user("data has no source: set one, e.g. data { addition { digits: 3 } } or "
              "data { tokens { source { path: \"DIR\" } } } for a dataset from `loom prepare`");
  }

  const config::TrainConfig& t = cfg.train();
  require_positive("train.steps", t.steps());
  require_positive("train.micro_batch_size", t.micro_batch_size());
  if (o.warmup_steps() > t.steps()) {
    fail_user("optimizer.warmup_steps is", o.warmup_steps(), "but train.steps is only", t.steps(),
              "(the learning rate would never reach optimizer.lr): lower optimizer.warmup_steps or raise train.steps");
  }
  require_positive("train.grad_accum_steps", t.grad_accum_steps());
  require_positive("train.log_every", t.log_every());
  if (t.eval_every() < 0) fail_user("train.eval_every is", t.eval_every(), "but must be >= 0");
  for (int i = 0; i < t.eval_task_size(); ++i) {
    const config::EvalTask& e = t.eval_task(i);
    const std::string field = "train.eval_task[" + std::to_string(i) + "]";
    if (e.kind() == config::EvalTask::KIND_UNSET) {
      fail_user(field + ".kind is unset; set it to MULTIPLE_CHOICE, EXACT_MATCH or LOSS");
    }
    if (e.path().empty()) fail_user(field + ".path is empty; name the task's JSONL file (LOSS: its dataset directory)");
    if (e.limit() < 0) fail_user(field + ".limit is", e.limit(), "but must be >= 0 (0: every document)");
    if (e.every() < 0) fail_user(field + ".every is", e.every(), "but must be >= 0 (0: at train.eval_every)");
    if (e.has_delimiter() && e.kind() != config::EvalTask::MULTIPLE_CHOICE) {
      fail_user(field + ".delimiter is for MULTIPLE_CHOICE tasks only");
    }
  }
  check_thread_count("train.threads", t.threads());
  if (t.samples() < 0) fail_user("train.samples is", t.samples(), "but must be >= 0");
  if (t.out_dir().empty()) fail_user("train.out_dir is empty but must name a directory");
  if (t.device() == config::TrainConfig::DEVICE_CUDA && t.precision() == config::TrainConfig::PRECISION_FP32) {
    fail_user("train.precision is PRECISION_FP32 but train.device DEVICE_CUDA trains in bf16 mixed precision;",
              "set train.precision: PRECISION_BF16 (or PRECISION_AUTO), or train on the CPU");
  }

  const config::ParallelConfig& p = cfg.parallel();
  require_positive("parallel.tp", p.tp());
  require_positive("parallel.pp", p.pp());
  require_positive("parallel.dp", p.dp());
  require_positive("parallel.virtual_stages", p.virtual_stages());
  // In 64 bits: two int32 fields whose product must not wrap before it is compared.
  const int64_t virtual_stages = int64_t{p.pp()} * p.virtual_stages();
  if (p.virtual_stages() > 1) {
    if (p.pp() == 1) {
      fail_user("parallel.virtual_stages is", p.virtual_stages(),
                "but the interleaved schedule needs parallel.pp > 1");
    }
    if (t.grad_accum_steps() % p.pp() != 0) {
      fail_user("train.grad_accum_steps is", t.grad_accum_steps(),
                "but the interleaved schedule (parallel.virtual_stages > 1) needs a multiple of "
                "parallel.pp =", p.pp());
    }
  }
  if (p.pp_layers_size() == 0 && m.n_layer() < virtual_stages) {
    fail_user("model.n_layer is", m.n_layer(), "but", virtual_stages,
              "pipeline stages (parallel.pp x parallel.virtual_stages) need at least one block each");
  }
  if (p.pp_layers_size() > 0) {
    if (p.pp_layers_size() != virtual_stages) {
      fail_user("parallel.pp_layers has", p.pp_layers_size(), "entries but parallel.pp x "
                "parallel.virtual_stages is", virtual_stages, "(one block count per stage)");
    }
    int64_t sum = 0;
    for (int n : p.pp_layers()) {
      if (n < 0) fail_user("parallel.pp_layers has a negative block count", n);
      sum += n;
    }
    if (sum != m.n_layer()) {
      fail_user("parallel.pp_layers sums to", sum, "blocks but model.n_layer is", m.n_layer());
    }
  }
  if (m.n_head() % p.tp() != 0) {
    fail_user("parallel.tp =", p.tp(), "must divide model.n_head =", m.n_head(),
              "(each rank computes whole heads)");
  }
  const config::CheckpointConfig& c = cfg.checkpoint();
  if (c.every() < 0) fail_user("checkpoint.every is", c.every(), "but must be >= 0 (0: only at the end)");
  if (c.keep_last() < 0) fail_user("checkpoint.keep_last is", c.keep_last(), "but must be >= 0 (0: keep all)");
  if (c.keep_every() < 0) fail_user("checkpoint.keep_every is", c.keep_every(), "but must be >= 0 (0: none)");
  require_seconds("checkpoint.commit_timeout_s", c.commit_timeout_s());
  if (c.has_dir() && c.dir().empty()) fail_user("checkpoint.dir is empty; unset it to use <train.out_dir>/checkpoints");
  const config::GuardConfig& g = cfg.guard();
  if (g.rollback_after() < 0) fail_user("guard.rollback_after is", g.rollback_after(), "but must be >= 0 (0: stop at the first non-finite step)");
  if (g.max_rollbacks() < 0) fail_user("guard.max_rollbacks is", g.max_rollbacks(), "but must be >= 0");
  require_seconds("guard.collective_timeout_s", g.collective_timeout_s());
  const config::MetricsConfig& mc = cfg.metrics();
  if (!(mc.peak_tflops() >= 0 && std::isfinite(mc.peak_tflops()))) {
    fail_user("metrics.peak_tflops is", mc.peak_tflops(), "but must be a finite number >= 0 (0: measured)");
  }
}

std::string metrics_path(const config::RunConfig& cfg) {
  return cfg.metrics().has_jsonl() ? cfg.metrics().jsonl() : cfg.train().out_dir() + "/metrics.jsonl";
}

std::string tensorboard_dir(const config::RunConfig& cfg) {
  if (!cfg.metrics().tensorboard()) return "";
  const std::string jsonl = metrics_path(cfg);
  if (jsonl.empty()) return cfg.train().out_dir();
  const std::string dir = std::filesystem::path(jsonl).parent_path().string();
  return dir.empty() ? "." : dir;
}

std::string checkpoint_root(const config::RunConfig& cfg) {
  return cfg.checkpoint().has_dir() ? cfg.checkpoint().dir() : cfg.train().out_dir() + "/checkpoints";
}

std::vector<int> pipeline_split(const config::RunConfig& cfg) {
  const config::ParallelConfig& p = cfg.parallel();
  std::vector<int> split;
  if (p.pp_layers_size() > 0) {
    split.assign(p.pp_layers().begin(), p.pp_layers().end());
    return split;
  }
  return even_block_split(cfg.model().n_layer(), p.pp() * p.virtual_stages());
}

std::string config_to_text(const config::RunConfig& cfg) {
  std::string out;
  pb::TextFormat::Printer printer;
  printer.PrintToString(cfg, &out);
  return out;
}

}  // namespace loom
