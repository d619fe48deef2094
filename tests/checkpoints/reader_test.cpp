// The checkpoint reader's own checks of a manifest: its checksum trailer (a byte changed after the
// save), format 1 manifests without one, and its consistency (step, step count, Adam moments,
// every tensor stored whole), plus check_model_tensors against the manifest's model. Each damaged
// manifest below but the first is re-sealed with a correct checksum, so that only the
// consistency check can refuse it.
#include "checkpoints/reader.h"

#include <xxhash.h>

#include <filesystem>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "checkpoints/checkpoint.h"
#include "core/base/file_io.h"
#include "core/optimizer.h"
#include "parallel/solo_communicator.h"
#include "test_util.h"

namespace loom::checkpoint {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kStep = 77;  // one varint byte, as is kStep + 1

// A checkpoint of a small GPT at step 77 with AdamW moments and 77 updates.
class CheckpointReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_.mutable_model()->set_n_layer(1);
    cfg_.mutable_model()->set_n_head(2);
    cfg_.mutable_model()->set_n_embd(8);
    cfg_.mutable_model()->set_vocab_size(7);
    cfg_.mutable_model()->set_seq_len(4);
    GPT model(GPTConfig{1, 2, 8, 7, 4});
    model.init_weights(3);
    AdamW opt(model, AdamWSettings{});
    opt.set_step_count(kStep);
    parallel::SoloCommunicator world("world");
    Checkpointer c(Policy{dir_.str(), 0, 0, false, 30}, world);
    GPT* chunk = &model;
    AdamW* o = &opt;
    Progress p;
    p.step = kStep;
    c.save(cfg_, p, {&chunk, 1}, {&o, 1});
    ckpt_ = c.last_committed();
    path_ = ckpt_ + "/" + kManifestName;
  }

  Manifest manifest() const {
    Manifest m;
    EXPECT_TRUE(m.ParseFromString(read_file(path_, "manifest")));
    return m;
  }
  // Edits the manifest and writes it back with a correct checksum.
  void reseal(const std::function<void(Manifest&)>& edit) const {
    Manifest m = manifest();
    edit(m);
    write_file_durably(path_, serialize_manifest(m));
  }
  // The error opening the checkpoint and checking its tensors against its model ("" if none).
  std::string error() const {
    try {
      const CheckpointReader reader(ckpt_);
      check_model_tensors(reader);
    } catch (const UserError& e) {
      return e.what();
    }
    return "";
  }

  testing::TempDir dir_{"ckpt_reader"};
  config::RunConfig cfg_;
  std::string ckpt_, path_;
};

TEST_F(CheckpointReaderTest, TheChecksumIsATrailingProtobufFieldOverEveryByteBeforeIt) {
  const std::string bytes = read_file(path_, "manifest");
  ASSERT_GT(bytes.size(), 9u);
  EXPECT_EQ(static_cast<uint8_t>(bytes[bytes.size() - 9]), 0x69);  // field 13, fixed64
  const Manifest m = manifest();
  EXPECT_EQ(m.format_version(), 2u);
  EXPECT_EQ(m.manifest_xxh64(), XXH64(bytes.data(), bytes.size() - 9, 0));
  EXPECT_EQ(m.save_serial(), 1u);
  EXPECT_EQ(error(), "");
  EXPECT_TRUE(CheckpointReader(ckpt_).manifest_checksummed());
}

TEST_F(CheckpointReaderTest, AByteChangedInTheStepIsRefusedNamingTheManifest) {
  // The position of the step's varint: the only byte where step 77 and step 78 differ.
  Manifest m = manifest();
  m.clear_manifest_xxh64();
  const std::string a = m.SerializeAsString();
  m.set_step(kStep + 1);
  const std::string b = m.SerializeAsString();
  ASSERT_EQ(a.size(), b.size());
  size_t at = 0;
  while (at < a.size() && a[at] == b[at]) ++at;
  ASSERT_LT(at, a.size());
  std::string bytes = read_file(path_, "manifest");
  ASSERT_EQ(bytes.compare(0, a.size(), a), 0);
  bytes[at] = b[at];
  write_file_durably(path_, bytes);
  const std::string e = error();
  EXPECT_NE(e.find("checkpoint manifest " + path_ + " is corrupt: its checksum does not match"), std::string::npos) << e;
}

TEST_F(CheckpointReaderTest, AFormat2ManifestWithoutItsChecksumIsRefused) {
  Manifest m = manifest();
  m.clear_manifest_xxh64();
  write_file_durably(path_, m.SerializeAsString());
  const std::string e = error();
  EXPECT_NE(e.find(path_ + " is corrupt: it does not end with its checksum"), std::string::npos) << e;
  // Its version byte turned to 1 while the checksum stayed: the checksum still catches it.
  m = manifest();
  m.set_format_version(1);
  std::string bytes = m.SerializeAsString();
  const std::string sealed = serialize_manifest(manifest());
  bytes.append(sealed, sealed.size() - 9, 9);
  write_file_durably(path_, bytes);
  EXPECT_NE(error().find("its checksum does not match"), std::string::npos) << error();
}

TEST_F(CheckpointReaderTest, AFormat1ManifestHasNoChecksumAndIsStillRead) {
  Manifest m = manifest();
  m.set_format_version(1);
  m.clear_manifest_xxh64();
  m.clear_save_serial();
  write_file_durably(path_, m.SerializeAsString());
  EXPECT_EQ(error(), "");
  EXPECT_FALSE(CheckpointReader(ckpt_).manifest_checksummed());
}

TEST_F(CheckpointReaderTest, ANegativeStepIsRefused) {
  reseal([](Manifest& m) { m.set_step(-3); });
  EXPECT_NE(error().find(path_ + " is inconsistent: its step is -3"), std::string::npos) << error();
}

TEST_F(CheckpointReaderTest, MoreOptimizerUpdatesThanStepsAreRefused) {
  reseal([](Manifest& m) { m.mutable_optimizer()->set_step_count(kStep + 1); });
  EXPECT_NE(error().find("optimizer.step_count is 78 but must lie in [0, step = 77]"), std::string::npos) << error();
  reseal([](Manifest& m) { m.mutable_optimizer()->set_step_count(-1); });
  EXPECT_NE(error().find("optimizer.step_count is -1"), std::string::npos) << error();
  reseal([](Manifest& m) { m.mutable_optimizer()->set_step_count(kStep - 5); });  // skipped steps
  EXPECT_EQ(error(), "");
}

TEST_F(CheckpointReaderTest, MomentsStoredWhileHasMomentsIsFalseAreRefused) {
  reseal([](Manifest& m) { m.mutable_optimizer()->set_has_moments(false); });
  const std::string e = error();
  EXPECT_NE(e.find("(Adam m) is stored but optimizer.has_moments is false"), std::string::npos) << e;
}

TEST_F(CheckpointReaderTest, HasMomentsWithAMomentMissingIsRefusedNamingTheTensor) {
  reseal([](Manifest& m) {
    for (int i = 0; i < m.tensors_size(); ++i) {
      if (m.tensors(i).name() == "wpe" && m.tensors(i).state() == STATE_ADAM_V) {
        m.mutable_tensors()->DeleteSubrange(i, 1);
        return;
      }
    }
    FAIL() << "no Adam v of wpe";
  });
  EXPECT_NE(error().find("tensor \"wpe\" (Adam v) is missing, but optimizer.has_moments is true"), std::string::npos)
      << error();
}

TEST_F(CheckpointReaderTest, ASliceThatDoesNotCoverItsTensorIsRefused) {
  // wte's single slice, one row short: every other check passes.
  reseal([](Manifest& m) {
    for (TensorShard& t : *m.mutable_tensors()) {
      if (t.name() != "wte" || t.state() != STATE_PARAMETER) continue;
      t.mutable_slice()->set_extent(0, t.slice().extent(0) - 1);
      t.set_nbytes(t.nbytes() - 8 * 4);
    }
  });
  EXPECT_NE(error().find("tensor \"wte\" is incomplete: its slices hold 48 of its 56 elements"), std::string::npos)
      << error();
}

TEST_F(CheckpointReaderTest, ATensorMissingOrExtraOrMisshapenForItsModelIsRefused) {
  const std::string original = read_file(path_, "manifest");
  auto rename = [](Manifest& m, const std::string& from, const std::string& to) {
    for (TensorShard& t : *m.mutable_tensors()) {
      if (t.name() == from) t.set_name(to);
    }
  };
  reseal([&](Manifest& m) { rename(m, "ln_f.bias", "ln_f.offset"); });
  EXPECT_NE(error().find("does not store tensor \"ln_f.bias\" of its model"), std::string::npos) << error();

  write_file_durably(path_, original);
  reseal([&](Manifest& m) {  // a copy of wpe, values and moments, under another name
    const int n = m.tensors_size();
    for (int i = 0; i < n; ++i) {
      if (m.tensors(i).name() != "wpe") continue;
      TensorShard copy = m.tensors(i);
      copy.set_name("wpe2");
      *m.add_tensors() = copy;
    }
  });
  EXPECT_NE(error().find("stores tensor \"wpe2\" which its model (the manifest's config) does not have"),
            std::string::npos)
      << error();

  write_file_durably(path_, original);
  reseal([](Manifest& m) { m.mutable_config()->mutable_model()->set_seq_len(5); });
  EXPECT_NE(error().find("tensor \"wpe\" has shape (4, 8) but its model (the manifest's config) has (5, 8)"),
            std::string::npos)
      << error();

  reseal([](Manifest& m) { m.mutable_config()->mutable_model()->set_n_layer(1 << 30); });
  EXPECT_NE(error().find("records a model of 1073741824 blocks"), std::string::npos) << error();
  write_file_durably(path_, original);
  reseal([](Manifest& m) { m.mutable_config()->mutable_model()->set_n_head(3); });
  EXPECT_NE(error().find("records an invalid model"), std::string::npos) << error();
}

}  // namespace
}  // namespace loom::checkpoint
