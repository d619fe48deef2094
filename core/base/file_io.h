// Whole-file reads and crash-safe writes, with errors that name the file.
//
// write_file_durably writes to "<path>.tmp.<pid>", fsyncs it, renames it over `path` and fsyncs
// the directory: a crash leaves either the old file or the new one under `path`, never half of
// one (a stale .tmp file at worst).
#pragma once

#include <string>

namespace loom {

// The bytes of `path`. Throws UserError "cannot read <what> <path> (does it exist?)".
std::string read_file(const std::string& path, const std::string& what);

// Creates the parent directory if needed. Throws UserError naming the step that failed.
void write_file_durably(const std::string& path, const std::string& bytes);

}  // namespace loom
