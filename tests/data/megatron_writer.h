// Megatron-LM indexed datasets for the tests, written by the independent Python writer
// tests/reference/megatron_indexed_writer.py (for the tests of the loom_tests binary, which
// knows LOOM_PYTHON and LOOM_SOURCE_DIR).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace loom::testing {

// A Megatron document: its sequences (Megatron's sentences; usually one).
using MegatronDocuments = std::vector<std::vector<std::vector<int64_t>>>;

// Writes PREFIX.bin and PREFIX.idx with the independent Python writer
// (tests/reference/megatron_indexed_writer.py) in Megatron dtype `dtype` ("uint16", ...).
inline void write_megatron_dataset(const std::string& prefix, const std::string& dtype, const MegatronDocuments& docs,
                                   bool multimodal = false) {
  std::string spec = "{\"dtype\": \"" + dtype + "\", \"multimodal\": " + (multimodal ? "true" : "false") +
                     ", \"documents\": [";
  for (size_t d = 0; d < docs.size(); ++d) {
    spec += d ? ", [" : "[";
    for (size_t s = 0; s < docs[d].size(); ++s) {
      spec += s ? ", [" : "[";
      for (size_t i = 0; i < docs[d][s].size(); ++i) spec += (i ? ", " : "") + std::to_string(docs[d][s][i]);
      spec += "]";
    }
    spec += "]";
  }
  spec += "]}";
  const std::string spec_path = prefix + ".spec.json";
  {
    std::ofstream out(spec_path);
    out << spec;
  }
  const std::string command = std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR +
                              "/tests/reference/megatron_indexed_writer.py " + spec_path + " " + prefix;
  ASSERT_EQ(std::system(command.c_str()), 0) << "the Python writer failed (it needs numpy: scripts/setup.sh): "
                                              << command;
  std::filesystem::remove(spec_path);
}

}  // namespace loom::testing
