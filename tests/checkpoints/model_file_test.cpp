#include "checkpoints/model_file.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

class ModelFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("loom_model_file_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    path_ = (dir_ / "model.loom").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string read_all() {
    std::ifstream in(path_, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  void write_all(const std::string& bytes) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  std::string error_of_load() {
    try {
      load_model_file(path_);
    } catch (const UserError& e) {
      return e.what();
    }
    return "(no error)";
  }
  fs::path dir_;
  std::string path_;
};

TEST_F(ModelFileTest, RoundTripRestoresEveryWeightBitForBit) {
  GPT model(GPTConfig{1, 2, 8, 13, 5});
  model.init_weights(3);
  save_model_file(path_, "model { n_layer: 1 }", model.parameters());
  EXPECT_FALSE(fs::exists(path_ + ".tmp." + std::to_string(::getpid())));
  ModelFile file = load_model_file(path_);
  EXPECT_EQ(file.config_text, "model { n_layer: 1 }");
  GPT other(GPTConfig{1, 2, 8, 13, 5});
  copy_into_model(file, path_, other);
  Tensor a = model.parameter_arena(), b = other.parameter_arena();
  EXPECT_EQ(0, std::memcmp(a.raw(), b.raw(), a.nbytes()));
  GPT wider(GPTConfig{1, 2, 16, 13, 5});
  EXPECT_THROW(copy_into_model(file, path_, wider), UserError);
}

TEST_F(ModelFileTest, DamagedFilesNameTheFileAndTheProblem) {
  GPT model(GPTConfig{1, 2, 8, 13, 5});
  model.init_weights(3);
  save_model_file(path_, "cfg", model.parameters());
  const std::string good = read_all();

  write_all(good.substr(0, good.size() - 7));
  std::string e = error_of_load();
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  EXPECT_NE(e.find(path_), std::string::npos) << e;

  write_all(good.substr(0, 30));
  e = error_of_load();
  EXPECT_NE(e.find("truncated or corrupt"), std::string::npos) << e;

  std::string flipped = good;
  flipped[flipped.size() - 3] ^= 0x40;  // inside ln_f.bias, the last tensor
  write_all(flipped);
  e = error_of_load();
  EXPECT_NE(e.find("ln_f.bias"), std::string::npos) << e;
  EXPECT_NE(e.find("checksum"), std::string::npos) << e;

  std::string foreign = good;
  foreign[0] = 'X';
  write_all(foreign);
  EXPECT_NE(error_of_load().find("not a Loom model file"), std::string::npos);

  fs::remove(path_);
  EXPECT_NE(error_of_load().find("cannot read model file"), std::string::npos);
}

}  // namespace
}  // namespace loom
