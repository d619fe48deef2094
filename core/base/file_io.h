// Whole-file reads and crash-safe writes, with errors that name the file.
//
// write_file_durably writes to "<path>.tmp.<pid>", fsyncs it, renames it over `path` and fsyncs
// the directory: a crash leaves either the old file or the new one under `path`, never half of
// one (a stale .tmp file at worst).
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace loom {

// The bytes of `path`. Throws UserError "cannot read <what> <path> (does it exist?)".
std::string read_file(const std::string& path, const std::string& what);

// Creates the parent directory if needed. Throws UserError naming the step that failed.
void write_file_durably(const std::string& path, const std::string& bytes);

// The same for a file made of several pieces, written one after another: a large file (a model's
// tensors) is never copied into one buffer first.
struct ByteRange {
  const void* data;
  size_t size;
};
void write_file_durably(const std::string& path, std::span<const ByteRange> pieces);

// write(2) until all `n` bytes are out (retrying short writes and EINTR); UserError naming
// `path` on failure.
void write_fully(int fd, const void* data, size_t n, const std::string& path);

// fsync of a directory, so that the names created or renamed in it survive a crash.
void sync_directory(const std::string& dir);

}  // namespace loom
