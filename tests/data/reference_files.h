// Reading what a Python reference under tests/reference/ wrote for the tokenizer tests: texts as
// records "<byte length>\n<bytes>\n", ids as one line of integers per text, bytes as hex.
#pragma once

#include <cstdint>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace loom::testing {

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline std::vector<std::string> read_records(const std::string& path) {
  const std::string data = read_all(path);
  std::vector<std::string> out;
  for (size_t pos = 0; pos < data.size();) {
    const size_t newline = data.find('\n', pos);
    const size_t length = std::stoul(data.substr(pos, newline - pos));
    out.push_back(data.substr(newline + 1, length));
    pos = newline + 1 + length + 1;
  }
  return out;
}

inline std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> lines;
  std::istringstream in(read_all(path));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

inline std::vector<int32_t> ints_of(const std::string& line) {
  std::vector<int32_t> v;
  std::istringstream in(line);
  for (int32_t x; in >> x;) v.push_back(x);
  return v;
}

inline std::string hex_of(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

}  // namespace loom::testing
