// A whole file mapped read-only into memory, for readers that check every offset against size()
// before use (checkpoint shards, safetensors files). The descriptor stays open for pread().
#pragma once

#include <cstdint>
#include <string>

namespace loom {

class MappedFile {
 public:
  // UserError "cannot open <what> <path> (<reason>)", or "<what> <path> is not a regular file".
  // An empty file maps to data() == nullptr, size() == 0.
  MappedFile(const std::string& path, const std::string& what);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }

 private:
  const char* data_ = nullptr;
  uint64_t size_ = 0;
  int fd_ = -1;
};

}  // namespace loom
