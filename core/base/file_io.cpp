#include "core/base/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/base/check.h"

namespace loom {

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in || std::filesystem::is_directory(path)) fail_user("cannot read", what, path, "(does it exist?)");
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) fail_user("error while reading", what, path);
  return content.str();
}

void write_file_durably(const std::string& path, const std::string& bytes) {
  const ByteRange whole{bytes.data(), bytes.size()};
  write_file_durably(path, std::span<const ByteRange>(&whole, 1));
}

void write_file_durably(const std::string& path, std::span<const ByteRange> pieces) {
  std::filesystem::path target(path);
  std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail_user("cannot create directory", dir.string(), ":", ec.message());
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail_user("cannot write", tmp, ":", std::strerror(errno));
  try {
    for (const ByteRange& piece : pieces) write_fully(fd, piece.data, piece.size, tmp);
  } catch (const UserError&) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail_user("flushing", tmp, "to disk failed:", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    fail_user("renaming", tmp, "to", path, "failed:", std::strerror(errno));
  }
  sync_directory(dir.string());
}

void write_fully(int fd, const void* data, size_t n, const std::string& path) {
  const char* bytes = static_cast<const char*>(data);
  size_t done = 0;
  while (done < n) {
    // At most 1 GiB per call: Linux writes no more than about 2 GiB at once anyway.
    const size_t chunk = std::min<size_t>(n - done, size_t{1} << 30);
    const ssize_t wrote = ::write(fd, bytes + done, chunk);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) fail_user("writing", path, "failed:", wrote < 0 ? std::strerror(errno) : "no progress (disk full?)");
    done += static_cast<size_t>(wrote);
  }
}

void sync_directory(const std::string& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace loom
