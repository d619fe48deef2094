// Whole-file reads and crash-safe writes, with errors that name the file.
//
// write_file_durably writes to "<path>.tmp.<pid>", fsyncs it, renames it over `path` and fsyncs
// the directory: a crash leaves either the old file or the new one under `path`, never half of
// one (a stale .tmp file at worst).
#pragma once

#include <cstddef>
#include <string>

namespace loom {

// The bytes of `path`. Throws UserError "cannot read <what> <path> (does it exist?)".
std::string read_file(const std::string& path, const std::string& what);

// Creates the parent directory if needed. Throws UserError naming the step that failed.
void write_file_durably(const std::string& path, const std::string& bytes);

// write(2) until all `n` bytes are out (retrying short writes and EINTR); UserError naming
// `path` on failure.
void write_fully(int fd, const void* data, size_t n, const std::string& path);

// fsync of a directory, so that the names created or renamed in it survive a crash.
void sync_directory(const std::string& dir);

}  // namespace loom
