#include "checkpoints/model_file.h"

#include <vector>

#include <xxhash.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "core/backend/host_copy.h"
#include "core/base/file_io.h"

namespace loom {

namespace {

constexpr char kMagic[8] = {'L', 'O', 'O', 'M', 'M', 'D', 'L', '1'};
constexpr uint32_t kVersion = 1;

template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// Reads fixed-size fields with bounds checks; every failure names the file and the offset.
class Reader {
 public:
  Reader(const std::string& bytes, const std::string& path) : bytes_(bytes), path_(path) {}
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string get_string(size_t n, const char* what) {
    need(n, what);
    std::string s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  size_t pos() const { return pos_; }

 private:
  void need(size_t n, const char* what) {
    if (n > bytes_.size() - pos_) {
      fail_user("model file", path_, "is truncated or corrupt: reading", what, "at byte offset",
                pos_, "needs", n, "bytes but the file has", bytes_.size());
    }
  }
  const std::string& bytes_;
  const std::string& path_;
  size_t pos_ = 0;
};

}  // namespace

void save_model_file(const std::string& path, const std::string& config_text,
                     const std::vector<Parameter>& params) {
  std::string header;
  header.append(kMagic, sizeof(kMagic));
  put<uint32_t>(header, kVersion);
  put<uint32_t>(header, static_cast<uint32_t>(config_text.size()));
  header += config_text;
  put<uint32_t>(header, static_cast<uint32_t>(params.size()));
  // Offsets depend on the header's size, which is known before the offsets are written.
  size_t header_size = header.size();
  for (const Parameter& p : params) {
    header_size += 2 + p.name.size() + 1 + 1 + 8 * p.value.shape().dims().size() + 8 * 3;
  }
  uint64_t offset = header_size;
  for (const Parameter& p : params) {
    put<uint16_t>(header, static_cast<uint16_t>(p.name.size()));
    header += p.name;
    put<uint8_t>(header, static_cast<uint8_t>(DType::kF32));
    put<uint8_t>(header, static_cast<uint8_t>(p.value.shape().rank()));
    for (int64_t d : p.value.shape().dims()) put<int64_t>(header, d);
    put<uint64_t>(header, offset);
    put<uint64_t>(header, p.value.nbytes());
    put<uint64_t>(header, XXH64(p.value.raw(), p.value.nbytes(), 0));
    offset += p.value.nbytes();
  }
  LOOM_CHECK(header.size() == header_size, "model file header size", header.size(), "!=", header_size);
  // Written piece by piece from the tensors themselves: no copy of the model in memory.
  std::vector<ByteRange> pieces{{header.data(), header.size()}};
  for (const Parameter& p : params) pieces.push_back({p.value.raw(), p.value.nbytes()});
  write_file_durably(path, pieces);
}

void save_model_file(const std::string& path, const std::string& config_text, const GPT& model) {
  const HostCopy host(model.backend(), model.parameter_arena(), /*download=*/true);
  std::vector<Parameter> params;
  for (const Parameter& p : model.parameters()) params.push_back(host_parameter(p, host.host(), model.arena_offset(p)));
  save_model_file(path, config_text, params);
}

ModelFile load_model_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_user("cannot read model file", path, "(run `loom train` first, or check the path)");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Reader r(bytes, path);
  std::string magic = r.get_string(sizeof(kMagic), "the magic");
  if (std::memcmp(magic.data(), kMagic, sizeof(kMagic)) != 0) {
    fail_user(path, "is not a Loom model file (it does not start with LOOMMDL1)");
  }
  uint32_t version = r.get<uint32_t>("the version");
  if (version != kVersion) {
    fail_user("model file", path, "has format version", version, "but this Loom reads version", kVersion);
  }
  ModelFile file;
  uint32_t config_len = r.get<uint32_t>("the config length");
  file.config_text = r.get_string(config_len, "the config");
  uint32_t n = r.get<uint32_t>("the tensor count");
  for (uint32_t i = 0; i < n; ++i) {
    StoredTensor t;
    uint16_t name_len = r.get<uint16_t>("a tensor name length");
    t.name = r.get_string(name_len, "a tensor name");
    uint8_t dtype = r.get<uint8_t>("a dtype");
    if (dtype != static_cast<uint8_t>(DType::kF32)) {
      fail_user("model file", path, "tensor", t.name, "has dtype code", int{dtype}, "but only f32 (0) is supported");
    }
    uint8_t ndim = r.get<uint8_t>("a rank");
    std::vector<int64_t> dims;
    for (uint8_t d = 0; d < ndim; ++d) {
      int64_t dim = r.get<int64_t>("a dimension");
      if (dim < 0 || dim > (int64_t{1} << 40)) fail_user("model file", path, "tensor", t.name, "has dimension", dim);
      dims.push_back(dim);
    }
    uint64_t offset = r.get<uint64_t>("a tensor offset");
    uint64_t nbytes = r.get<uint64_t>("a tensor size");
    uint64_t checksum = r.get<uint64_t>("a checksum");
    t.shape = Shape(dims);
    if (nbytes != static_cast<uint64_t>(t.shape.numel()) * 4) {
      fail_user("model file", path, "tensor", t.name, "claims", nbytes, "bytes for shape", t.shape.str());
    }
    if (offset > bytes.size() || nbytes > bytes.size() - offset) {
      fail_user("model file", path, "is truncated: tensor", t.name, "needs bytes [", offset, ",",
                offset + nbytes, ") but the file has", bytes.size());
    }
    if (XXH64(bytes.data() + offset, nbytes, 0) != checksum) {
      fail_user("model file", path, "is corrupt: tensor", t.name, "at byte offset", offset,
                "does not match its checksum");
    }
    t.values.resize(static_cast<size_t>(t.shape.numel()));
    std::memcpy(t.values.data(), bytes.data() + offset, nbytes);
    file.tensors.push_back(std::move(t));
  }
  return file;
}

void copy_into_model(const ModelFile& file, const std::string& path, GPT& model) {
  HostCopy host(model.backend(), model.parameter_arena(), /*download=*/true);
  for (const Parameter& p : model.parameters()) {
    const StoredTensor* found = nullptr;
    for (const StoredTensor& t : file.tensors) {
      if (t.name == p.name) found = &t;
    }
    if (!found) fail_user("model file", path, "has no tensor", p.name, "that the model needs");
    if (found->shape != p.value.shape()) {
      fail_user("model file", path, "tensor", p.name, "has shape", found->shape.str(),
                "but the model expects", p.value.shape().str());
    }
    std::memcpy(host.host().f32() + model.arena_offset(p), found->values.data(), p.value.nbytes());
  }
  host.upload();
}

}  // namespace loom
