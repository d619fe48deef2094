// Sizes for people: "512 B", "3.0 KiB", "1.5 GiB" (powers of 1024, one decimal).
#pragma once

#include <cstdint>
#include <string>

namespace loom {

std::string format_bytes(uint64_t bytes);

}  // namespace loom
