// Logits of a GPT-2 safetensors file computed by PyTorch (tests/reference/safetensors_logits.py,
// which reads the file with the `safetensors` package), and Loom's logits of a model, to compare.
// A missing `safetensors` package is a test failure with a message saying how to install it,
// never a skip: interoperability that is not checked is not there.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/gpt.h"
#include "test_util.h"

namespace loom::testing {

// Empty (after recording a failure) when Python or the package fails.
inline std::vector<float> torch_logits_of(const std::string& safetensors_path, const std::vector<int32_t>& tokens,
                                          int B, int T, int V, const TempDir& dir) {
  const std::string check = std::string(LOOM_PYTHON) + " -c 'import safetensors.torch' 2>/dev/null";
  if (std::system(check.c_str()) != 0) {
    ADD_FAILURE() << "the Python package `safetensors` is not installed for " << LOOM_PYTHON
                  << ": run scripts/setup.sh, or " << LOOM_PYTHON
                  << " -m pip install --break-system-packages safetensors==0.8.0";
    return {};
  }
  const std::string tokens_path = dir / "tokens.bin", out_path = dir / "torch_logits.bin";
  {
    std::ofstream out(tokens_path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 4));
  }
  const std::string command = std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR + "/tests/reference/safetensors_logits.py " +
                              safetensors_path + " " + tokens_path + " " + std::to_string(B) + " " +
                              std::to_string(T) + " " + out_path;
  if (std::system(command.c_str()) != 0) {
    ADD_FAILURE() << "the PyTorch reference failed: " << command;
    return {};
  }
  std::vector<float> logits(static_cast<size_t>(B) * T * V);
  std::ifstream in(out_path, std::ios::binary);
  in.read(reinterpret_cast<char*>(logits.data()), static_cast<std::streamsize>(logits.size() * 4));
  if (in.gcount() != static_cast<std::streamsize>(logits.size() * 4)) {
    ADD_FAILURE() << out_path << " is short: " << in.gcount() << " bytes, expected " << logits.size() * 4;
    return {};
  }
  return logits;
}

// (B, T, V) logits of a one-rank model.
inline std::vector<float> loom_logits_of(GPT& model, const std::vector<int32_t>& tokens, int B, int T) {
  model.forward(tokens.data(), nullptr, B, T);
  const size_t n = static_cast<size_t>(B) * T * model.config().vocab_size;
  return std::vector<float>(model.logits(), model.logits() + n);
}

}  // namespace loom::testing
