#include "checkpoints/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <tuple>

#include "core/backend/host_copy.h"
#include "core/base/check.h"
#include "core/base/file_io.h"

namespace loom::checkpoint {

namespace fs = std::filesystem;

namespace {

constexpr char kShardMagic[8] = {'L', 'O', 'O', 'M', 'S', 'H', 'R', 'D'};
constexpr uint64_t kShardHeaderBytes = 64;
constexpr uint64_t kAlign = 64;
constexpr const char* kLatestName = "latest";

uint64_t align_up(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::string index_name(int rank) {
  char name[32];
  std::snprintf(name, sizeof name, "rank-%05d.index", rank);
  return name;
}
std::string failed_name(int rank) {
  char name[32];
  std::snprintf(name, sizeof name, "rank-%05d.failed", rank);
  return name;
}

std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

// Calls f(rect, local_index) for rectangles of the global tensor that together are the local
// elements [begin, begin + count) of p; each is a contiguous run of local memory starting at
// local_index (a partial row, or whole rows of one block).
template <typename F>
void for_each_rect(const Parameter& p, int64_t begin, int64_t count, F&& f) {
  const int64_t end = begin + count;
  int64_t block_start = 0;
  for (const ShardBlock& b : p.blocks) {
    const int64_t block_end = block_start + b.rows * b.cols;
    int64_t lo = std::max(begin, block_start);
    const int64_t hi = std::min(end, block_end);
    while (lo < hi) {
      const int64_t e = lo - block_start, r = e / b.cols, c = e % b.cols;
      if (c != 0 || hi - lo < b.cols) {
        const int64_t n = std::min(b.cols - c, hi - lo);
        f(Rect{b.row0 + r, 1, b.col0 + c, n}, lo);
        lo += n;
      } else {
        const int64_t rows = (hi - lo) / b.cols;
        f(Rect{b.row0 + r, rows, b.col0, b.cols}, lo);
        lo += rows * b.cols;
      }
    }
    block_start = block_end;
  }
}

void set_slice(TensorShard& t, const Parameter& p, const Rect& r) {
  for (int64_t d : p.global_shape.dims()) t.add_global_shape(d);
  Slice* s = t.mutable_slice();
  s->add_start(r.row0);
  s->add_extent(r.rows);
  if (p.global_shape.rank() == 2) {
    s->add_start(r.col0);
    s->add_extent(r.cols);
  } else {
    LOOM_CHECK(p.global_shape.rank() == 1 && r.col0 == 0 && r.cols == 1, "tensor", p.name, "of rank",
               p.global_shape.rank(), "cannot be checkpointed");
  }
}

// Whether this rank writes parameter p: every element is written exactly once over all ranks.
bool writes(const GPT& chunk, const Parameter& p) {
  return !p.tied_copy && (!p.tp_replicated || chunk.tp().rank() == 0);
}

// Sends `msg` from `root` to every rank of `world` (in int32 words: the communicators carry no
// bytes).
std::string share_message(parallel::Communicator& world, int root, std::string msg) {
  int32_t n = static_cast<int32_t>(msg.size());
  world.broadcast(&n, 1, loom::DType::kI32, root);
  std::vector<int32_t> words(static_cast<size_t>(n + 3) / 4, 0);
  if (world.rank() == root) std::memcpy(words.data(), msg.data(), msg.size());
  if (!words.empty()) world.broadcast(words.data(), words.size(), loom::DType::kI32, root);
  msg.assign(reinterpret_cast<const char*>(words.data()), static_cast<size_t>(n));
  return msg;
}

// Committed checkpoint directories under `root` (step-N with a manifest), highest step first.
std::vector<std::pair<int64_t, std::string>> committed_by_step(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() < 6 || name.rfind("step-", 0) != 0) continue;
    if (!std::all_of(name.begin() + 5, name.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) continue;
    if (name.size() > 5 + 18) continue;
    if (!fs::exists(entry.path() / kManifestName)) continue;
    found.emplace_back(std::stoll(name.substr(5)), (fs::path(root) / name).string());
  }
  std::sort(found.begin(), found.end(), std::greater<>());
  return found;
}

// DIR's manifest as far as it parses, its checksum unchecked (ordering only: loading checks it).
std::optional<Manifest> read_manifest_leniently(const std::string& dir) {
  Manifest m;
  try {
    const std::string path = dir + "/" + kManifestName;
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec || size > kMaxManifestBytes || !m.ParseFromString(read_file(path, "checkpoint manifest"))) return std::nullopt;
  } catch (const UserError&) {
    return std::nullopt;
  }
  return m;
}

// The highest save_serial of the checkpoints under `root` (0: none).
uint64_t last_save_serial(const std::string& root) {
  uint64_t last = 0;
  for (const auto& [step, dir] : committed_by_step(root)) {
    if (const std::optional<Manifest> m = read_manifest_leniently(dir)) last = std::max(last, m->save_serial());
  }
  return last;
}

}  // namespace

std::string step_dir_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

// One save: this rank's file image and its index, and on rank 0 the manifest's header.
struct Checkpointer::Pending {
  int rank = 0, world_size = 1;
  int64_t step = 0;
  std::string tmp_dir, final_dir;
  Manifest index;   // this rank's tensors, file 0 being its own shard file
  Manifest header;  // rank 0: everything but the tensor and file lists
  std::vector<uint64_t> offsets;  // of index.tensors(i) in the image
  const char* image = nullptr;  // the shard file's bytes (a host copy); null when written in place
  size_t image_size = 0;
  // In place: the file's header, then tensor i's bytes (index.tensors(i)) read from the tensors.
  std::string header_bytes;
  std::vector<const char*> sources;
  // Host copies of arenas that live on a GPU (one device-to-host copy each), which the image or
  // the in-place sources read; empty on the CPU, where they read the arenas themselves.
  std::vector<Tensor> host_arenas;
};

Checkpointer::Checkpointer(Policy policy, parallel::Communicator& world)
    : policy_(std::move(policy)), world_(world) {
  LOOM_CHECK(!policy_.root.empty(), "checkpoint root is empty");
}

Checkpointer::~Checkpointer() {
  if (thread_.joinable()) thread_.join();
}

void Checkpointer::wait() {
  if (thread_.joinable()) thread_.join();
  pending_.reset();
  // The host copy is held only while a save is in flight: between saves a rank holds its model.
  buffer_.reset();
  buffer_size_ = 0;
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void Checkpointer::save(const config::RunConfig& cfg, const Progress& progress,
                        std::span<GPT* const> chunks, std::span<AdamW* const> optimizers,
                        const std::string& created_by, bool in_place) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  wait();
  LOOM_CHECK(optimizers.empty() || optimizers.size() == chunks.size(), "one optimizer per chunk");
  LOOM_CHECK(!optimizers.empty() || world_.size() == 1, "a weights-only checkpoint is saved by one process");
  // A fresh temporary name per save, the same on every rank.
  uint32_t nonce[2] = {0, 0};
  if (world_.rank() == 0) {
    std::random_device rd;
    nonce[0] = rd();
    nonce[1] = rd();
  }
  world_.broadcast(nonce, 2, loom::DType::kI32, 0);
  auto job = std::make_unique<Pending>();
  job->rank = world_.rank();
  job->world_size = world_.size();
  job->step = progress.step;
  char tag[32];
  std::snprintf(tag, sizeof tag, "%08x%08x", nonce[0], nonce[1]);
  job->tmp_dir = policy_.root + "/.tmp-" + step_dir_name(progress.step) + "-" + tag;
  job->final_dir = policy_.root + "/" + step_dir_name(progress.step);

  // The image of this rank's shard file: a header, then every tensor shard 64-byte aligned.
  struct Copy {
    const float* src;
    uint64_t offset, nbytes;
  };
  std::vector<Copy> copies;
  uint64_t size = kShardHeaderBytes;
  auto add = [&](const Parameter& p, State state, const Rect& r, const float* src) {
    TensorShard* t = job->index.add_tensors();
    t->set_name(p.name);
    t->set_state(state);
    t->set_dtype(DTYPE_F32);
    set_slice(*t, p, r);
    t->set_file(0);
    const uint64_t nbytes = static_cast<uint64_t>(r.rows * r.cols) * 4;
    t->set_offset(size);
    t->set_nbytes(nbytes);
    copies.push_back(Copy{src, size, nbytes});
    size = align_up(size + nbytes);
  };
  // The arenas as the host sees them: themselves on the CPU, one copy each from a GPU.
  auto on_host = [&](Backend& backend, const Tensor& arena) -> const float* {
    HostCopy copy(backend, arena, /*download=*/true);
    if (copy.host().raw() != arena.raw()) job->host_arenas.push_back(copy.host());
    return copy.host().f32();
  };
  for (size_t c = 0; c < chunks.size(); ++c) {
    const GPT& chunk = *chunks[c];
    const float* values = on_host(chunk.backend(), chunk.parameter_arena());
    auto value_of = [&](const Parameter& p) { return values + chunk.arena_offset(p); };
    if (optimizers.empty()) {
      for (const Parameter& p : chunk.parameters()) {
        if (!writes(chunk, p)) continue;
        for_each_rect(p, 0, p.value.numel(), [&](const Rect& r, int64_t li) {
          add(p, STATE_PARAMETER, r, value_of(p) + li);
        });
      }
      continue;
    }
    const AdamW& opt = *optimizers[c];
    const float* m = on_host(*opt.parameters().backend, opt.moment_m());
    const float* v = on_host(*opt.parameters().backend, opt.moment_v());
    for (const AdamW::OwnedRun& run : opt.owned_runs()) {
      const Parameter& p = chunk.parameters()[run.param];
      if (!writes(chunk, p)) continue;
      for_each_rect(p, run.local_offset, run.count, [&](const Rect& r, int64_t li) {
        const int64_t s = run.state_offset + (li - run.local_offset);
        add(p, STATE_PARAMETER, r, value_of(p) + li);
        add(p, STATE_ADAM_M, r, m + s);
        add(p, STATE_ADAM_V, r, v + s);
      });
    }
  }
  // The host copy: the only part of a save that holds training up. In place, only the header.
  const auto copy_start = Clock::now();
  if (in_place) {
    job->header_bytes.assign(kShardHeaderBytes, '\0');
    for (const Copy& cp : copies) job->sources.push_back(reinterpret_cast<const char*>(cp.src));
  } else if (size > buffer_size_) {
    buffer_.reset(new char[size]);
    buffer_size_ = size;
  }
  char* image = in_place ? job->header_bytes.data() : buffer_.get();
  std::memset(image, 0, kShardHeaderBytes);
  std::memcpy(image, kShardMagic, sizeof kShardMagic);
  const uint32_t version = kFormatVersion, rank = static_cast<uint32_t>(job->rank);
  std::memcpy(image + 8, &version, 4);
  std::memcpy(image + 12, &rank, 4);
  std::memcpy(image + 16, &job->step, 8);
  std::memcpy(image + 24, &size, 8);
  const int64_t n_copies = in_place ? 0 : static_cast<int64_t>(copies.size());
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t i = 0; i < n_copies; ++i) {
    const Copy& cp = copies[static_cast<size_t>(i)];
    std::memcpy(image + cp.offset, cp.src, cp.nbytes);
    const uint64_t end = i + 1 < n_copies ? copies[static_cast<size_t>(i + 1)].offset : size;
    std::memset(image + cp.offset + cp.nbytes, 0, end - cp.offset - cp.nbytes);  // alignment gap
  }
  if (!in_place) job->host_arenas.clear();  // the image holds the bytes now
  job->image = in_place ? nullptr : image;
  job->image_size = size;
  copy_s_ = std::chrono::duration<double>(Clock::now() - copy_start).count();

  if (job->rank == 0) {
    Manifest& h = job->header;
    h.set_format_version(kFormatVersion);
    *h.mutable_config() = cfg;
    h.set_step(progress.step);
    h.set_tokens_seen(progress.tokens_seen);
    OptimizerState* o = h.mutable_optimizer();
    const config::OptimizerConfig& oc = cfg.optimizer();
    o->set_lr(oc.lr());
    o->set_beta1(oc.beta1());
    o->set_beta2(oc.beta2());
    o->set_eps(oc.eps());
    o->set_weight_decay(oc.weight_decay());
    o->set_grad_clip(oc.grad_clip());
    o->set_warmup_steps(oc.warmup_steps());
    o->set_min_lr_ratio(oc.min_lr_ratio());
    o->set_step_count(optimizers.empty() ? 0 : optimizers[0]->step_count());
    o->set_has_moments(!optimizers.empty());
    const uint64_t seed = cfg.train().seed();
    RngState* w = h.add_rng();
    w->set_name("weights");  // initial weights: keyed by (seed, parameter name), counted by element
    w->set_seed(seed);
    w->set_counter(0);
    if (progress.has_loader) {
      RngState* d = h.add_rng();
      d->set_name("data_order");  // the sample permutation: counted by global sample index
      d->set_seed(progress.loader.seed);
      d->set_counter(progress.loader.next_sample);
      h.mutable_loader()->set_seed(progress.loader.seed);
      h.mutable_loader()->set_next_sample(progress.loader.next_sample);
    } else if (cfg.data().has_addition()) {
      RngState* d = h.add_rng();
      d->set_name("addition_problems");  // training problems: counted by micro-batch index
      d->set_seed(seed);
      d->set_counter(static_cast<uint64_t>(progress.step) * static_cast<uint64_t>(cfg.train().grad_accum_steps()));
    }
    Layout* l = h.mutable_layout();
    const config::ParallelConfig& pc = cfg.parallel();
    l->set_tp(pc.tp());
    l->set_pp(pc.pp());
    l->set_dp(pc.dp());
    l->set_virtual_stages(pc.virtual_stages());
    l->set_sequence_parallel(pc.sequence_parallel());
    for (int n : pc.pp_layers()) l->add_pp_layers(n);
    h.set_created_by(created_by);
    h.set_unix_time(static_cast<int64_t>(std::time(nullptr)));
  }
  pending_ = std::move(job);
  Pending* p = pending_.get();
  thread_ = std::thread([this, p, start] {
    try {
      write_and_commit(*p);
    } catch (...) {
      error_ = std::current_exception();
    }
    save_s_.store(std::chrono::duration<double>(Clock::now() - start).count());
  });
  blocked_s_ = std::chrono::duration<double>(Clock::now() - start).count();
  if (!policy_.async) wait();
}

void Checkpointer::write_and_commit(Pending& job) {
  const std::string file = shard_file_name(job.rank);
  const std::string path = job.tmp_dir + "/" + file;
  try {
    std::error_code ec;
    fs::create_directories(job.tmp_dir, ec);
    if (ec) fail_user("cannot create checkpoint directory", job.tmp_dir, ":", ec.message());
    const bool in_place = job.image == nullptr;
    auto bytes_of = [&](int i) {
      const TensorShard& t = job.index.tensors(i);
      return in_place ? job.sources[static_cast<size_t>(i)] : job.image + t.offset();
    };
    for (int i = 0; i < job.index.tensors_size(); ++i) {
      TensorShard* t = job.index.mutable_tensors(i);
      t->set_xxh64(XXH64(bytes_of(i), t->nbytes(), 0));
    }
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail_user("cannot create checkpoint shard file", path, ":", std::strerror(errno));
    try {
      if (in_place) {
        // The header, then each tensor after the zeros that align it, then the zeros to the end.
        static const char kZeros[kAlign] = {};
        write_fully(fd, job.header_bytes.data(), job.header_bytes.size(), path);
        uint64_t at = job.header_bytes.size();
        const int n = job.index.tensors_size();
        for (int i = 0; i < n; ++i) {
          if (policy_.halfway_hook && i == n / 2) policy_.halfway_hook(job.step);
          const TensorShard& t = job.index.tensors(i);
          write_fully(fd, kZeros, t.offset() - at, path);
          write_fully(fd, bytes_of(i), t.nbytes(), path);
          at = t.offset() + t.nbytes();
        }
        write_fully(fd, kZeros, job.image_size - at, path);
      } else {
        const size_t half = policy_.halfway_hook ? job.image_size / 2 : job.image_size;
        write_fully(fd, job.image, half, path);
        if (policy_.halfway_hook) {
          policy_.halfway_hook(job.step);
          write_fully(fd, job.image + half, job.image_size - half, path);
        }
      }
    } catch (...) {
      ::close(fd);
      throw;
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) fail_user("flushing checkpoint shard file", path, "failed:", std::strerror(errno));
    ShardFile* f = job.index.add_files();
    f->set_name(file);
    f->set_rank(job.rank);
    f->set_size(job.image_size);
    // The report: once this name exists, the rank's shard is complete on disk.
    write_file_durably(job.tmp_dir + "/" + index_name(job.rank), job.index.SerializeAsString());
  } catch (const std::exception& e) {
    // Tell rank 0 rather than let it wait for the timeout (best effort).
    try {
      write_file_durably(job.tmp_dir + "/" + failed_name(job.rank), e.what());
    } catch (...) {
    }
    throw;
  }
  if (job.rank != 0) return;

  // Rank 0: wait for every rank's report, then commit.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(policy_.commit_timeout_s);
  Manifest manifest = job.header;
  for (int r = 0; r < job.world_size; ++r) {
    const std::string idx = job.tmp_dir + "/" + index_name(r);
    while (!fs::exists(idx)) {
      const std::string failed = job.tmp_dir + "/" + failed_name(r);
      if (fs::exists(failed)) {
        fail_user("checkpoint at step", job.step, "was not saved: rank", r, "failed:", read_file(failed, "failure report"));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        fail_user("checkpoint at step", job.step, "was not committed: rank", r, "did not report its shard within",
                  policy_.commit_timeout_s, "s (checkpoint.commit_timeout_s)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    Manifest part;
    if (!part.ParseFromString(read_file(idx, "checkpoint shard index")) || part.files_size() != 1) {
      fail_user("checkpoint shard index", idx, "is corrupt");
    }
    const int file_index = manifest.files_size();
    *manifest.add_files() = part.files(0);
    for (TensorShard& t : *part.mutable_tensors()) {
      t.set_file(file_index);
      *manifest.add_tensors() = std::move(t);
    }
  }
  if (next_serial_ == 0) next_serial_ = last_save_serial(policy_.root) + 1;
  manifest.set_save_serial(next_serial_++);
  write_file_durably(job.tmp_dir + "/" + kManifestName, serialize_manifest(manifest));
  for (int r = 0; r < job.world_size; ++r) fs::remove(job.tmp_dir + "/" + index_name(r));
  sync_directory(job.tmp_dir);
  // A checkpoint of the same step may exist (a run resumed from an earlier one): move it aside
  // first, as a directory cannot be renamed over a non-empty one.
  std::error_code ec;
  const std::string old = job.tmp_dir + ".old";
  const bool replacing = fs::exists(job.final_dir);
  if (replacing) fs::rename(job.final_dir, old, ec);
  if (ec) fail_user("cannot replace checkpoint", job.final_dir, ":", ec.message());
  fs::rename(job.tmp_dir, job.final_dir, ec);
  if (ec) fail_user("cannot rename", job.tmp_dir, "to", job.final_dir, ":", ec.message());
  sync_directory(policy_.root);
  write_file_durably(policy_.root + "/" + kLatestName, step_dir_name(job.step) + "\n");
  if (replacing) fs::remove_all(old, ec);
  committed_ = job.final_dir;

  // Retention: the newest keep_last, every keep_every-th, and whatever `latest` names. A run that
  // started afresh replaces the checkpoints of the earlier run, now that it has one of its own.
  written_.insert(job.final_dir);
  std::vector<std::pair<int64_t, std::string>> by_step;
  for (auto& [step, dir] : committed_by_step(policy_.root)) {
    if (policy_.replace_earlier_run && written_.count(dir) == 0) {
      fs::remove_all(dir, ec);
      continue;
    }
    by_step.emplace_back(step, std::move(dir));
  }
  for (size_t i = 0; i < by_step.size(); ++i) {
    const auto& [step, dir] = by_step[i];
    const bool keep = policy_.keep_last <= 0 || static_cast<int>(i) < policy_.keep_last ||
                      (policy_.keep_every > 0 && step % policy_.keep_every == 0) || dir == job.final_dir;
    if (!keep) fs::remove_all(dir, ec);
  }
  // Leftovers of saves that never committed (a crash mid-save).
  for (const auto& entry : fs::directory_iterator(policy_.root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0) fs::remove_all(entry.path(), ec);
  }
}

std::vector<std::string> list_checkpoints(const std::string& root) {
  // Sorted by (manifest readable, save_serial, named by `latest`, step), descending. An
  // unreadable manifest cannot say when it was saved; it comes first so that resuming tries it
  // and says why it is skipped. Format 1 checkpoints (serial 0) keep their former order: the one
  // `latest` names, then the highest step.
  const std::string latest = latest_name(root);
  struct Entry {
    bool unreadable;
    uint64_t serial;
    bool named_latest;
    int64_t step;
    std::string dir;
  };
  std::vector<Entry> entries;
  for (auto& [step, dir] : committed_by_step(root)) {
    const std::optional<Manifest> m = read_manifest_leniently(dir);
    entries.push_back({!m, m ? m->save_serial() : 0, fs::path(dir).filename() == latest, step, std::move(dir)});
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.unreadable, a.serial, a.named_latest, a.step) > std::tie(b.unreadable, b.serial, b.named_latest, b.step);
  });
  std::vector<std::string> dirs;
  for (Entry& e : entries) dirs.push_back(std::move(e.dir));
  return dirs;
}

std::string latest_name(const std::string& root) {
  std::string latest;
  try {
    latest = read_file(root + "/" + kLatestName, "latest pointer");
  } catch (const UserError&) {
    return "";
  }
  while (!latest.empty() && (latest.back() == '\n' || latest.back() == '\r')) latest.pop_back();
  return latest;
}

void check_model_tensors(const CheckpointReader& reader) {
  const Manifest& m = reader.manifest();
  const std::string path = reader.dir() + "/" + kManifestName;
  const config::ModelConfig& mc = m.config().model();
  // A block holds tensors, so a model of more blocks than the manifest has entries cannot fit
  // (and is not listed: n_layer may be anything here).
  if (mc.n_layer() > m.tensors_size()) {
    fail_user("checkpoint manifest", path, "records a model of", mc.n_layer(), "blocks but only", m.tensors_size(),
              "tensor slices: it is not a checkpoint of that model");
  }
  std::vector<GPT::ParameterShape> expected;
  try {
    expected = GPT::parameter_shapes(gpt_config_of(mc));
  } catch (const UserError& e) {
    fail_user("checkpoint manifest", path, "records an invalid model:", e.what());
  }
  std::set<std::string> names;
  for (const GPT::ParameterShape& p : expected) {
    names.insert(p.name);
    const std::vector<int64_t> stored = reader.global_shape(p.name);
    if (stored.empty()) {
      fail_user("checkpoint", reader.dir(), "is incomplete: it does not store tensor", "\"" + p.name + "\"",
                "of its model (n_layer", mc.n_layer(), ", n_embd", std::to_string(mc.n_embd()) + ")");
    }
    if (stored != p.global.dims()) {
      fail_user("checkpoint", reader.dir(), "tensor", "\"" + p.name + "\"", "has shape", shape_str(stored),
                "but its model (the manifest's config) has", p.global.str());
    }
  }
  for (const TensorShard& t : m.tensors()) {
    if (names.count(t.name()) == 0) {
      fail_user("checkpoint", reader.dir(), "stores tensor", "\"" + t.name() + "\"",
                "which its model (the manifest's config) does not have");
    }
  }
}

std::vector<std::string> model_differences(const config::RunConfig& checkpoint, const config::RunConfig& run) {
  std::vector<std::string> diffs;
  const config::ModelConfig& a = checkpoint.model();
  const config::ModelConfig& b = run.model();
  auto cmp = [&](const char* field, int32_t x, int32_t y) {
    if (x != y) diffs.push_back(str_cat(std::string("model.") + field + ":", "checkpoint", std::to_string(x) + ",", "config", y));
  };
  cmp("n_layer", a.n_layer(), b.n_layer());
  cmp("n_head", a.n_head(), b.n_head());
  cmp("n_embd", a.n_embd(), b.n_embd());
  cmp("vocab_size", a.vocab_size(), b.vocab_size());
  cmp("seq_len", a.seq_len(), b.seq_len());
  return diffs;
}

Progress progress_of(const Manifest& manifest) {
  Progress p;
  p.step = manifest.step();
  p.tokens_seen = manifest.tokens_seen();
  p.has_loader = manifest.has_loader();
  p.loader = LoaderState{manifest.loader().seed(), manifest.loader().next_sample()};
  return p;
}

void load_state(const CheckpointReader& reader, std::span<GPT* const> chunks, std::span<AdamW* const> optimizers) {
  LOOM_CHECK(optimizers.empty() || optimizers.size() == chunks.size(), "one optimizer per chunk");
  check_model_tensors(reader);
  const bool moments = reader.manifest().optimizer().has_moments();
  // Every rectangle this rank needs, with where it goes: the arenas themselves on the CPU, host
  // copies uploaded once at the end from a GPU.
  std::vector<CheckpointReader::Request> wants;
  std::vector<std::unique_ptr<HostCopy>> copies;
  auto on_host = [&](Backend& backend, const Tensor& arena) {
    copies.push_back(std::make_unique<HostCopy>(backend, arena, /*download=*/true));
    return copies.back()->host().f32();
  };
  for (size_t c = 0; c < chunks.size(); ++c) {
    GPT& chunk = *chunks[c];
    float* values = on_host(chunk.backend(), chunk.parameter_arena());
    for (Parameter& p : chunk.parameters()) {
      const std::vector<int64_t> stored = reader.global_shape(p.name);
      if (!stored.empty() && stored != p.global_shape.dims()) {
        fail_user("checkpoint", reader.dir(), "tensor", "\"" + p.name + "\"", "has shape", shape_str(stored),
                  "but the model expects", shape_str(p.global_shape.dims()));
      }
      int64_t local = 0;
      for (const ShardBlock& b : p.blocks) {
        wants.push_back({p.name, STATE_PARAMETER, b, values + chunk.arena_offset(p) + local, b.cols});
        local += b.rows * b.cols;
      }
    }
    if (optimizers.empty()) continue;
    AdamW& opt = *optimizers[c];
    Backend& backend = *opt.parameters().backend;
    if (!moments) {
      backend.zero(opt.moment_m());
      backend.zero(opt.moment_v());
      continue;
    }
    float* m = on_host(backend, opt.moment_m());
    float* v = on_host(backend, opt.moment_v());
    for (const AdamW::OwnedRun& run : opt.owned_runs()) {
      const Parameter& p = chunk.parameters()[run.param];
      for_each_rect(p, run.local_offset, run.count, [&](const Rect& r, int64_t li) {
        const int64_t s = run.state_offset + (li - run.local_offset);
        wants.push_back({p.name, STATE_ADAM_M, r, m + s, r.cols});
        wants.push_back({p.name, STATE_ADAM_V, r, v + s, r.cols});
      });
    }
  }
  // Checksums first, over the stored slices these touch in file order (sequential reads), then
  // the copies from the now cached files.
  reader.verify_for(wants);
  for (const CheckpointReader::Request& w : wants) reader.read(w.name, w.state, w.rect, w.dest, w.dest_stride);
  for (auto& copy : copies) copy->upload();
  for (AdamW* opt : optimizers) opt->set_step_count(moments ? reader.manifest().optimizer().step_count() : 0);
}

Resumed resume(const std::string& spec, const std::string& root, const config::RunConfig& run,
               parallel::Communicator& world, std::span<GPT* const> chunks,
               std::span<AdamW* const> optimizers,
               const std::function<void(const std::string&)>& warn) {
  const bool automatic = spec == "auto";
  std::vector<std::string> candidates;
  if (automatic) {
    candidates = list_checkpoints(root);
    if (candidates.empty()) return {};
  } else if (fs::exists(fs::path(spec) / kManifestName)) {
    candidates.push_back(spec);
  } else {
    candidates = list_checkpoints(spec);
    if (candidates.empty()) {
      fail_user("--resume", spec, "is neither a checkpoint (no", kManifestName, ") nor a directory holding checkpoints");
    }
    candidates.resize(1);
  }
  const std::string latest = automatic ? latest_name(root) : "";
  bool latest_tried = false;
  for (const std::string& dir : candidates) {
    // 0: loaded; 1: unusable here (missing, corrupt); 2: does not fit the model.
    int status = 0;
    std::string message;
    Resumed r;
    try {
      const CheckpointReader reader(dir);
      const std::vector<std::string> diffs = model_differences(reader.manifest().config(), run);
      if (!diffs.empty()) {
        status = 2;
        message = str_cat("checkpoint", dir, "was saved from a different model:");
        for (size_t i = 0; i < diffs.size(); ++i) message += (i ? "; " : " ") + diffs[i];
      } else {
        load_state(reader, chunks, optimizers);
        r.resumed = true;
        r.dir = dir;
        r.progress = progress_of(reader.manifest());
        r.header = reader.manifest();
        r.header.clear_tensors();
        r.header.clear_files();
      }
    } catch (const UserError& e) {
      status = 1;
      message = e.what();
    }
    // Every rank learns the worst outcome and the message of the first rank that had it.
    float worst = static_cast<float>(status);
    world.all_reduce(&worst, &worst, 1, loom::DType::kF32, parallel::ReduceOp::kMax);
    const std::string name = fs::path(dir).filename().string();
    if (worst == 0) {
      // Resuming another checkpoint than `latest` names, which was not skipped as unusable: the
      // run crashed between committing a checkpoint and moving the pointer to it.
      if (automatic && name != latest && !latest_tried && world.rank() == 0) {
        warn(latest.empty() ? str_cat(root + "/latest", "is missing but", name,
                                      "was committed (a crash before the pointer was written?): resuming", name)
                            : str_cat(root + "/latest", "names", latest, "but", name,
                                      "was committed after it (a crash before the pointer moved?): resuming", name));
      }
      return r;
    }
    latest_tried = latest_tried || name == latest;
    float neg_first = status == static_cast<int>(worst) ? -static_cast<float>(world.rank()) : -1e9f;
    world.all_reduce(&neg_first, &neg_first, 1, loom::DType::kF32, parallel::ReduceOp::kMax);
    const int first = static_cast<int>(-neg_first);
    message = share_message(world, first, message);
    if (worst == 2 || !automatic) {
      if (world.size() > 1 && first != 0) message = str_cat("rank", first, ":", message);
      if (worst == 2) {
        throw DifferentModel(message + " (make the config match it, or start a new run with another checkpoint.dir)",
                             message);
      }
      throw UserError(message);
    }
    if (world.rank() == 0) warn(str_cat("checkpoint", dir, "is unusable and was skipped:", message));
  }
  fail_user("no usable checkpoint under", root, "(", candidates.size(),
            "found, all unusable; see the warnings). Move them away to start afresh, or repair the files.");
}

}  // namespace loom::checkpoint
