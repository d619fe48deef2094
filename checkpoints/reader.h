// Reading a checkpoint directory (checkpoints/checkpoint.proto, docs/checkpoints.md) safely.
//
// Opening parses the manifest, verifies its own checksum (the trailer serialize_manifest writes)
// and checks, before any tensor byte is touched, that every shard file exists with the size the
// manifest records; that every tensor shard lies inside its file, has the byte count its slice
// and dtype imply, and lies inside its global shape; and that the manifest is consistent: the
// step and the optimizer's step count are possible, every (tensor, state) stored is stored whole
// and exactly once, and the Adam moments are there for every parameter exactly when the manifest
// says they were saved. (Whether the tensors are those of the manifest's model is
// checkpoint.h's check_model_tensors: it needs the model.) Reading a
// rectangle of a tensor copies it from the stored slices that intersect it, after verifying the
// xxh64 of each of those slices (once). Nothing in a file is ever executed or used as a length
// before it is checked against the file's size. Every failure is a UserError naming the
// checkpoint file and, where there is one, the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoints/checkpoint.pb.h"
#include "core/parameter.h"

namespace loom::checkpoint {

// Written: 2. Read: 1 too (the checkpoints saved before the manifest had its checksum).
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr uint32_t kOldestFormatVersion = 1;
inline constexpr const char* kManifestName = "manifest.pb";
// The manifest is small (a few thousand tensor entries); anything far larger is not one.
inline constexpr uint64_t kMaxManifestBytes = uint64_t{256} << 20;

// The bytes of manifest.pb: `manifest`'s wire format (without manifest_xxh64) followed by the
// field manifest_xxh64 holding the XXH64 of those bytes. Protobuf reads the whole as one
// Manifest, so a program that ignores the checksum reads the file as before. Every writer of a
// manifest uses this.
std::string serialize_manifest(Manifest manifest);

// "rank-00003.shard"
std::string shard_file_name(int rank);

// A rectangle of a global tensor seen as a matrix (1-D tensors are (n, 1)); core/parameter.h.
using Rect = ShardBlock;

class CheckpointReader {
 public:
  // Opens DIR/manifest.pb and memory-maps the shard files it lists.
  explicit CheckpointReader(const std::string& dir);
  // The same checks on bytes in memory (the fuzz target and tests): `files[i]` is the content of
  // manifest.files[i]. The reader keeps its own copies.
  static std::unique_ptr<CheckpointReader> from_memory(std::string_view manifest_bytes,
                                                       std::vector<std::string> files,
                                                       const std::string& label = "<memory>");
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::string& dir() const { return dir_; }
  const Manifest& manifest() const { return manifest_; }
  // Whether the manifest carried its checksum (always from format 2 on; it was verified).
  bool manifest_checksummed() const { return manifest_.has_manifest_xxh64(); }

  // Whether any shard of (name, state) is stored, and its global shape (empty when not).
  bool has(const std::string& name, State state) const;
  std::vector<int64_t> global_shape(const std::string& name) const;

  // Copies the elements of `want` (global coordinates of tensor `name`'s matrix view) into
  // dest, row r of the rectangle at dest + r * dest_stride. UserError if the tensor or part of
  // the rectangle is not stored, or a stored slice fails its checksum.
  void read(const std::string& name, State state, const Rect& want, float* dest,
            int64_t dest_stride) const;

  // A rectangle to read and where it goes (the arguments of read()).
  struct Request {
    std::string name;
    State state;
    Rect rect;
    float* dest;
    int64_t dest_stride;
  };
  // Verifies, in file order, every stored slice that intersects one of `wants` (read() then
  // finds them verified). UserError for the first that fails. Reading a cold file this way runs
  // at its sequential rate; verifying slice by slice in the order a model asks for them does not.
  void verify_for(const std::vector<Request>& wants) const;

  // Verifies every stored slice; one line per failure ("" when all pass). For `loom ckpt inspect`.
  std::vector<std::string> verify_all() const;
  // Whether tensors[i] was verified, failed, or not yet read.
  enum class Check : uint8_t { kUnread, kOk, kBad };
  Check check_status(size_t i) const { return checked_[i]; }

 private:
  CheckpointReader() = default;
  void parse_manifest(std::string_view bytes);  // parses and verifies its checksum
  void validate();  // the manifest against the file sizes and itself; throws UserError
  void validate_progress() const;
  void validate_coverage(const std::map<std::pair<std::string, int>, int64_t>& stored,
                         const std::map<std::string, std::vector<int64_t>>& shapes) const;
  void verify(size_t i) const;
  std::string file_path(int file) const;
  std::string manifest_path() const;

  struct Mapping;
  std::string dir_;
  Manifest manifest_;
  std::vector<std::unique_ptr<Mapping>> files_;
  std::vector<std::string> memory_files_;
  // Per tensor entry: its matrix-view rectangle; grouped by (name, state).
  std::vector<Rect> rects_;
  std::map<std::pair<std::string, int>, std::vector<size_t>> index_;  // (name, state) -> entries
  mutable std::vector<Check> checked_;
  mutable std::vector<char> buffer_;  // for the checksums' reads
};

}  // namespace loom::checkpoint
