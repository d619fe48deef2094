#include "checkpoints/reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "core/base/mapped_file.h"

namespace loom::checkpoint {

namespace {

// Largest element count of one tensor we accept (2^40): keeps every product below 2^63.
constexpr int64_t kMaxElements = int64_t{1} << 40;

// The manifest's checksum trailer: field manifest_xxh64's tag byte (field number << 3 | wire
// type 1, fixed64), then its 8 bytes little-endian.
static_assert(Manifest::kManifestXxh64FieldNumber == 13, "the trailer's tag byte is written by hand");
constexpr char kTrailerTag = static_cast<char>(13 << 3 | 1);
constexpr size_t kTrailerBytes = 9;

uint64_t dtype_bytes(DType d) { return d == DTYPE_BF16 ? 2 : 4; }

const char* state_suffix(int state) {
  return state == STATE_PARAMETER ? "" : state == STATE_ADAM_M ? " (Adam m)" : " (Adam v)";
}

}  // namespace

std::string serialize_manifest(Manifest manifest) {
  manifest.clear_manifest_xxh64();
  std::string bytes = manifest.SerializeAsString();
  const uint64_t sum = XXH64(bytes.data(), bytes.size(), 0);
  bytes.push_back(kTrailerTag);
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((sum >> (8 * i)) & 0xff));
  return bytes;
}

std::string shard_file_name(int rank) {
  char name[32];
  std::snprintf(name, sizeof name, "rank-%05d.shard", rank);
  return name;
}

// A read-only memory map of one shard file (or, from_memory, a view of a string).
// The slices are copied out of the map; their checksums are computed from large sequential
// pread()s of the file instead, which reads a cold file at the disk's streaming rate (faulting in
// the map page by page is about half as fast) and leaves the pages cached for the copy.
struct CheckpointReader::Mapping {
  const char* data = nullptr;
  uint64_t size = 0;
  int fd = -1;  // -1: bytes in memory (from_memory)
  std::unique_ptr<MappedFile> file;
};

CheckpointReader::~CheckpointReader() = default;

std::string CheckpointReader::file_path(int file) const {
  return dir_ + "/" + manifest_.files(file).name();
}

std::string CheckpointReader::manifest_path() const { return dir_ + "/" + kManifestName; }

void CheckpointReader::parse_manifest(std::string_view bytes) {
  const std::string path = manifest_path();
  if (bytes.size() > kMaxManifestBytes) fail_user("checkpoint manifest", path, "is", bytes.size(), "bytes, more than a manifest can be");
  if (!manifest_.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    fail_user("checkpoint manifest", path, "is corrupt: it does not parse as a loom.checkpoint.Manifest");
  }
  // Format 1 had no checksum. A format 1 manifest that has one is a format 2 manifest whose
  // version byte changed: its checksum says so.
  if (manifest_.format_version() < 2 && !manifest_.has_manifest_xxh64()) return;
  const size_t n = bytes.size();
  if (n < kTrailerBytes || bytes[n - kTrailerBytes] != kTrailerTag) {
    fail_user("checkpoint manifest", path, "is corrupt: it does not end with its checksum (manifest_xxh64),",
              "which format", manifest_.format_version(), "manifests do");
  }
  uint64_t stored = 0;
  for (size_t i = 0; i < 8; ++i) stored |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[n - 8 + i])) << (8 * i);
  if (stored != XXH64(bytes.data(), n - kTrailerBytes, 0)) {
    fail_user("checkpoint manifest", path, "is corrupt: its checksum does not match (a byte changed after the save)");
  }
}

CheckpointReader::CheckpointReader(const std::string& dir) : dir_(dir) {
  const std::string path = dir + "/" + kManifestName;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    fail_user("checkpoint", dir, "has no", kManifestName, "(not a checkpoint directory, or an unfinished one)");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxManifestBytes) {
    fail_user("checkpoint manifest", path, "is", st.st_size, "bytes, more than a manifest can be");
  }
  parse_manifest(read_file(path, "checkpoint manifest"));
  for (int i = 0; i < manifest_.files_size(); ++i) {
    const ShardFile& f = manifest_.files(i);
    if (f.name().empty() || f.name().find('/') != std::string::npos || f.name()[0] == '.') {
      fail_user("checkpoint manifest", path, "lists a shard file named \"" + f.name() + "\"",
                "(expected a plain file name inside the checkpoint directory)");
    }
    const std::string file = file_path(i);
    if (!std::filesystem::exists(file)) fail_user("checkpoint", dir, "is missing its shard file", file);
    auto m = std::make_unique<Mapping>();
    m->file = std::make_unique<MappedFile>(file, "checkpoint shard file");
    m->data = m->file->data();
    m->size = m->file->size();
    m->fd = m->file->fd();
    if (m->size != f.size()) {
      fail_user("checkpoint shard file", file, "has", m->size, "bytes but the manifest records", f.size(),
                m->size < f.size() ? "(truncated)" : "(it was changed after the save)");
    }
    files_.push_back(std::move(m));
  }
  validate();
}

std::unique_ptr<CheckpointReader> CheckpointReader::from_memory(std::string_view manifest_bytes,
                                                                std::vector<std::string> files,
                                                                const std::string& label) {
  std::unique_ptr<CheckpointReader> r(new CheckpointReader());
  r->dir_ = label;
  r->parse_manifest(manifest_bytes);
  if (static_cast<size_t>(r->manifest_.files_size()) != files.size()) {
    fail_user("checkpoint", label, "lists", r->manifest_.files_size(), "shard files but", files.size(), "were given");
  }
  r->memory_files_ = std::move(files);
  for (int i = 0; i < r->manifest_.files_size(); ++i) {
    auto m = std::make_unique<Mapping>();
    const std::string& bytes = r->memory_files_[static_cast<size_t>(i)];
    m->data = bytes.data();
    m->size = bytes.size();
    if (m->size != r->manifest_.files(i).size()) {
      fail_user("checkpoint shard file", r->file_path(i), "has", m->size, "bytes but the manifest records",
                r->manifest_.files(i).size());
    }
    r->files_.push_back(std::move(m));
  }
  r->validate();
  return r;
}

void CheckpointReader::validate() {
  const std::string manifest_file = manifest_path();
  if (manifest_.format_version() < kOldestFormatVersion || manifest_.format_version() > kFormatVersion) {
    fail_user("checkpoint", dir_, "has format version", manifest_.format_version(), "but this Loom reads versions",
              kOldestFormatVersion, "to", kFormatVersion, "(a newer Loom wrote it? use that one)");
  }
  validate_progress();
  rects_.resize(static_cast<size_t>(manifest_.tensors_size()));
  checked_.assign(rects_.size(), Check::kUnread);
  std::map<std::string, std::vector<int64_t>> shapes;
  std::map<std::pair<std::string, int>, int64_t> stored;  // elements per (name, state)
  for (int i = 0; i < manifest_.tensors_size(); ++i) {
    const TensorShard& t = manifest_.tensors(i);
    auto bad = [&](const auto&... why) {
      fail_user("checkpoint manifest", manifest_file, "tensor", "\"" + t.name() + "\"", "(entry", i, "):", why...);
    };
    if (t.name().empty()) bad("has no name");
    if (!State_IsValid(t.state())) bad("has an unknown state");
    if (!DType_IsValid(t.dtype())) bad("has an unknown dtype");
    if (t.dtype() != DTYPE_F32) bad("is stored as bf16, which this Loom does not read yet");
    const int rank = t.global_shape_size();
    if (rank < 1 || rank > 2) bad("has", rank, "dimensions (Loom tensors have 1 or 2)");
    if (t.slice().start_size() != rank || t.slice().extent_size() != rank) bad("has a slice of the wrong rank");
    // numel <= total <= kMaxElements, checked before each product so that none overflows.
    int64_t numel = 1, total = 1;
    for (int d = 0; d < rank; ++d) {
      const int64_t dim = t.global_shape(d), s = t.slice().start(d), e = t.slice().extent(d);
      if (dim <= 0) bad("has dimension", dim);
      if (dim > kMaxElements / total) bad("has more than", kMaxElements, "elements");
      if (s < 0 || e <= 0 || s > dim || e > dim - s) {
        bad("has slice start", s, "extent", e, "outside dimension", d, "of size", dim);
      }
      total *= dim;
      numel *= e;
    }
    std::vector<int64_t> shape(t.global_shape().begin(), t.global_shape().end());
    auto [it, fresh] = shapes.emplace(t.name(), shape);
    if (!fresh && it->second != shape) bad("has a global shape that differs from another shard of it");
    if (t.file() < 0 || t.file() >= manifest_.files_size()) bad("names shard file", t.file(), "which is not listed");
    const uint64_t nbytes = static_cast<uint64_t>(numel) * dtype_bytes(t.dtype());
    if (t.nbytes() != nbytes) bad("records", t.nbytes(), "bytes but its slice holds", nbytes);
    const uint64_t size = files_[static_cast<size_t>(t.file())]->size;
    if (t.offset() > size || nbytes > size - t.offset()) {
      fail_user("checkpoint shard file", file_path(t.file()), "is too short for tensor", "\"" + t.name() + "\":",
                "it needs", nbytes, "bytes at offset", t.offset(), "but has", size);
    }
    Rect r;
    r.row0 = t.slice().start(0);
    r.rows = t.slice().extent(0);
    r.col0 = rank == 2 ? t.slice().start(1) : 0;
    r.cols = rank == 2 ? t.slice().extent(1) : 1;
    rects_[static_cast<size_t>(i)] = r;
    index_[{t.name(), static_cast<int>(t.state())}].push_back(static_cast<size_t>(i));
    int64_t& count = stored[{t.name(), static_cast<int>(t.state())}];
    count += numel;
    if (count > total) bad("is stored more than once (its slices hold more elements than the tensor)");
  }
  // No two slices of a tensor may overlap: read() knows a rectangle is whole by counting the
  // elements it copied, which only works if no element is counted twice.
  for (const auto& [key, entries] : index_) {
    std::vector<size_t> by_row = entries;
    std::sort(by_row.begin(), by_row.end(), [&](size_t a, size_t b) { return rects_[a].row0 < rects_[b].row0; });
    for (size_t a = 0; a < by_row.size(); ++a) {
      const Rect& ra = rects_[by_row[a]];
      for (size_t b = a + 1; b < by_row.size() && rects_[by_row[b]].row0 < ra.row0 + ra.rows; ++b) {
        const Rect& rb = rects_[by_row[b]];
        if (rb.col0 < ra.col0 + ra.cols && ra.col0 < rb.col0 + rb.cols) {
          fail_user("checkpoint manifest", manifest_file, "tensor", "\"" + key.first + "\"", "(entries",
                    std::min(by_row[a], by_row[b]), "and", std::max(by_row[a], by_row[b]),
                    "): their slices overlap (an element is stored twice)");
        }
      }
    }
  }
  validate_coverage(stored, shapes);
}

void CheckpointReader::validate_progress() const {
  auto bad = [&](const auto&... why) { fail_user("checkpoint manifest", manifest_path(), "is inconsistent:", why...); };
  const int64_t step = manifest_.step();
  if (step < 0) bad("its step is", step, "(steps completed cannot be negative)");
  const int64_t updates = manifest_.optimizer().step_count();
  if (updates < 0 || updates > step) {
    bad("optimizer.step_count is", updates, "but must lie in [0, step =", std::to_string(step) + "]",
        "(a skipped step makes it smaller than the step, never larger)");
  }
  const RngState* data_order = nullptr;
  for (const RngState& r : manifest_.rng()) {
    if (r.name() == "data_order") data_order = &r;
  }
  if (manifest_.has_loader() != (data_order != nullptr)) {
    bad(manifest_.has_loader() ? "it records a loader position but no data_order random stream"
                               : "it records a data_order random stream but no loader position");
  }
  if (data_order != nullptr &&
      (data_order->seed() != manifest_.loader().seed() || data_order->counter() != manifest_.loader().next_sample())) {
    bad("the loader position (seed", manifest_.loader().seed(), ", next sample", std::to_string(manifest_.loader().next_sample()) + ")",
        "differs from the data_order stream's (seed", data_order->seed(), ", counter", std::to_string(data_order->counter()) + ")");
  }
  if (manifest_.config().data().has_tokens() && step > 0 && !manifest_.has_loader()) {
    bad("a run on token shards at step", step, "must record its loader position, and this one does not");
  }
}

void CheckpointReader::validate_coverage(const std::map<std::pair<std::string, int>, int64_t>& stored,
                                         const std::map<std::string, std::vector<int64_t>>& shapes) const {
  auto bad = [&](const std::string& name, int state, const auto&... why) {
    fail_user("checkpoint manifest", manifest_path(), "tensor", "\"" + name + "\"" + state_suffix(state), why...);
  };
  // No slice overlaps another (checked before), so a count equal to the tensor's is every
  // element exactly once.
  for (const auto& [key, count] : stored) {
    int64_t total = 1;
    for (int64_t d : shapes.at(key.first)) total *= d;
    if (count != total) bad(key.first, key.second, "is incomplete: its slices hold", count, "of its", total, "elements");
  }
  const bool moments = manifest_.optimizer().has_moments();
  for (const auto& [key, count] : stored) {
    const auto& [name, state] = key;
    if (state != STATE_PARAMETER) {
      if (!moments) bad(name, state, "is stored but optimizer.has_moments is false (no Adam moments were saved)");
      if (stored.count({name, STATE_PARAMETER}) == 0) bad(name, state, "is stored but the parameter's values are not");
      continue;
    }
    if (!moments) continue;
    for (int m : {STATE_ADAM_M, STATE_ADAM_V}) {
      if (stored.count({name, m}) == 0) {
        bad(name, m, "is missing, but optimizer.has_moments is true (every parameter's Adam moments were saved)");
      }
    }
  }
}

bool CheckpointReader::has(const std::string& name, State state) const {
  return index_.count({name, static_cast<int>(state)}) != 0;
}

std::vector<int64_t> CheckpointReader::global_shape(const std::string& name) const {
  auto it = index_.find({name, static_cast<int>(STATE_PARAMETER)});
  if (it == index_.end()) return {};
  const TensorShard& t = manifest_.tensors(static_cast<int>(it->second.front()));
  return {t.global_shape().begin(), t.global_shape().end()};
}

void CheckpointReader::verify(size_t i) const {
  if (checked_[i] == Check::kOk) return;
  const TensorShard& t = manifest_.tensors(static_cast<int>(i));
  const Mapping& m = *files_[static_cast<size_t>(t.file())];
  uint64_t sum = 0;
  if (m.fd < 0) {
    sum = XXH64(m.data + t.offset(), t.nbytes(), 0);
  } else {
    constexpr size_t kChunk = size_t{8} << 20;
    if (buffer_.size() < kChunk) buffer_.resize(kChunk);
    const std::unique_ptr<XXH64_state_t, XXH_errorcode (*)(XXH64_state_t*)> state(XXH64_createState(), XXH64_freeState);
    LOOM_CHECK(state != nullptr, "out of memory for a checksum state");
    XXH64_reset(state.get(), 0);
    for (uint64_t done = 0; done < t.nbytes();) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, t.nbytes() - done));
      const ssize_t got = ::pread(m.fd, buffer_.data(), want, static_cast<off_t>(t.offset() + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        fail_user("reading checkpoint shard file", file_path(t.file()), "failed at byte offset", t.offset() + done,
                  got < 0 ? std::string("(") + std::strerror(errno) + ")" : "(the file became shorter)");
      }
      XXH64_update(state.get(), buffer_.data(), static_cast<size_t>(got));
      done += static_cast<uint64_t>(got);
    }
    sum = XXH64_digest(state.get());
  }
  const bool ok = sum == t.xxh64();
  checked_[i] = ok ? Check::kOk : Check::kBad;
  if (!ok) {
    const char* state = t.state() == STATE_PARAMETER ? "" : t.state() == STATE_ADAM_M ? " (Adam m)" : " (Adam v)";
    fail_user("checkpoint shard file", file_path(t.file()), "is corrupt: tensor",
              "\"" + t.name() + "\"" + state, "at byte offset", t.offset(), "does not match its checksum");
  }
}

void CheckpointReader::read(const std::string& name, State state, const Rect& want, float* dest,
                            int64_t dest_stride) const {
  auto it = index_.find({name, static_cast<int>(state)});
  if (it == index_.end()) {
    fail_user("checkpoint", dir_, "has no tensor", "\"" + name + "\"",
              state == STATE_PARAMETER ? "" : "optimizer state", "(it was saved from a different model?)");
  }
  int64_t covered = 0;
  for (size_t i : it->second) {
    const Rect& have = rects_[i];
    const int64_t r0 = std::max(have.row0, want.row0), r1 = std::min(have.row0 + have.rows, want.row0 + want.rows);
    const int64_t c0 = std::max(have.col0, want.col0), c1 = std::min(have.col0 + have.cols, want.col0 + want.cols);
    if (r0 >= r1 || c0 >= c1) continue;
    verify(i);
    const TensorShard& t = manifest_.tensors(static_cast<int>(i));
    const char* base = files_[static_cast<size_t>(t.file())]->data + t.offset();
    for (int64_t r = r0; r < r1; ++r) {
      const char* src = base + ((r - have.row0) * have.cols + (c0 - have.col0)) * 4;
      std::memcpy(dest + (r - want.row0) * dest_stride + (c0 - want.col0), src, static_cast<size_t>(c1 - c0) * 4);
    }
    covered += (r1 - r0) * (c1 - c0);
  }
  if (covered != want.rows * want.cols) {
    fail_user("checkpoint", dir_, "is incomplete: tensor", "\"" + name + "\"", "rows [", want.row0, ",",
              want.row0 + want.rows, ") columns [", want.col0, ",", want.col0 + want.cols, ") are",
              covered < want.rows * want.cols ? "not all stored" : "stored more than once");
  }
}

void CheckpointReader::verify_for(const std::vector<Request>& wants) const {
  std::vector<size_t> touched;
  for (const Request& w : wants) {
    auto it = index_.find({w.name, static_cast<int>(w.state)});
    if (it == index_.end()) continue;  // read() reports it
    for (size_t i : it->second) {
      const Rect& have = rects_[i];
      const bool rows = have.row0 < w.rect.row0 + w.rect.rows && w.rect.row0 < have.row0 + have.rows;
      const bool cols = have.col0 < w.rect.col0 + w.rect.cols && w.rect.col0 < have.col0 + have.cols;
      if (rows && cols && checked_[i] != Check::kOk) touched.push_back(i);
    }
  }
  std::sort(touched.begin(), touched.end(), [&](size_t a, size_t b) {
    const TensorShard& x = manifest_.tensors(static_cast<int>(a));
    const TensorShard& y = manifest_.tensors(static_cast<int>(b));
    return x.file() != y.file() ? x.file() < y.file() : x.offset() < y.offset();
  });
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (size_t i : touched) verify(i);
}

std::vector<std::string> CheckpointReader::verify_all() const {
  std::vector<std::string> failures;
  for (size_t i = 0; i < rects_.size(); ++i) {
    try {
      verify(i);
    } catch (const UserError& e) {
      failures.push_back(e.what());
    }
  }
  return failures;
}

}  // namespace loom::checkpoint
