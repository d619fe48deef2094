// TensorBoard event files, written natively (no TensorFlow, no Python): the scalars of a training
// run as `tensorboard --logdir` reads them. An event file is a sequence of TFRecords, each
//   uint64 length | uint32 masked CRC32C of the length | length bytes of data | uint32 masked CRC32C of the data
// (little-endian), whose data is one serialized `Event` protobuf message. The messages are
// encoded here by hand with the field numbers of TensorBoard's event.proto and summary.proto:
//   Event      { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
//                SessionLog session_log = 7; }
//   Summary    { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
//   SessionLog { SessionStatus status = 1; }   (START = 1)
// The first record of a file is the version event "brain.Event:2".
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace loom {

// CRC-32C (Castagnoli: the reflected polynomial 0x82F63B78, initial value and final xor ~0):
// crc32c("123456789") = 0xE3069283.
uint32_t crc32c(std::string_view bytes);

// The checksum a TFRecord stores: the CRC rotated right by 15 bits plus 0xa282ead8, so that a
// CRC of data that holds CRCs is not itself trivially related to them.
uint32_t masked_crc32c(std::string_view bytes);

// `data` as one TFRecord: length, masked CRC of the length's 8 bytes, data, masked CRC of data.
std::string tfrecord_frame(std::string_view data);

struct TensorBoardScalar {
  std::string tag;  // e.g. "train/loss"; TensorBoard groups the tags by what precedes the '/'
  float value;
};

// Serialized Event messages.
std::string event_file_version(double wall_time);
std::string event_scalars(double wall_time, int64_t step, const std::vector<TensorBoardScalar>& values);
// A SessionLog START at `step`: TensorBoard drops the records it holds at `step` and later,
// which the run is about to write again (a resumed or rolled-back run redoes those steps).
std::string event_restart(double wall_time, int64_t step);

// One event file, `<dir>/events.out.tfevents.<unix seconds>.<host name>.<process id>` (".1",
// ".2", ... appended while such a file exists), created with the directory. Every event is
// written as one record and flushed, so a killed run leaves every record before the last whole.
class TensorBoardWriter {
 public:
  // Writes the version event. Throws UserError when the directory or the file cannot be made.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // Appends `event` (a serialized Event) as a record. False, with the reason in error(), when
  // it cannot be written (a full disk); the file is closed then and later writes do nothing.
  bool write(const std::string& event);
  bool ok() const { return file_ != nullptr; }
  const std::string& path() const { return path_; }
  const std::string& error() const { return error_; }

 private:
  std::string path_;
  std::string error_;
  FILE* file_ = nullptr;
};

}  // namespace loom
