#include "data/sentencepiece_model.h"

#include <bit>
#include <cstdint>
#include <cstring>

namespace loom {

namespace {

static_assert(std::endian::native == std::endian::little, "protobuf's fixed32 floats are read as they lie");

// One varint of protobuf's wire format at s[pos]; false when malformed.
bool read_varint(std::string_view s, size_t& pos, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && pos < s.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(s[pos++]);
    value |= uint64_t{byte & 0x7Fu} << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// Calls visit(field, wire_type, varint, bytes) for each field of the serialised message `s`:
// the value of a varint (wire type 0), and the bytes of a length-delimited field (2) or of a
// fixed-size one (1: 8 bytes, 5: 4 bytes). False when malformed.
template <typename Visit>
bool for_each_field(std::string_view s, Visit&& visit) {
  for (size_t pos = 0; pos < s.size();) {
    uint64_t key = 0, value = 0;
    if (!read_varint(s, pos, key)) return false;
    size_t length = 0;
    switch (key & 7) {
      case 0:
        if (!read_varint(s, pos, value)) return false;
        break;
      case 1:
        length = 8;
        break;
      case 2:
        if (!read_varint(s, pos, value)) return false;
        length = static_cast<size_t>(value);
        break;
      case 5:
        length = 4;
        break;
      default:
        return false;
    }
    if (length > s.size() - pos) return false;
    visit(key >> 3, key & 7, value, s.substr(pos, length));
    pos += length;
  }
  return true;
}

bool read_piece(std::string_view message, SentencePieceModelSpec::Piece& piece) {
  return for_each_field(message, [&](uint64_t field, uint64_t wire, uint64_t value, std::string_view bytes) {
    if (field == 1 && wire == 2) piece.text = std::string(bytes);
    if (field == 2 && wire == 5) std::memcpy(&piece.score, bytes.data(), 4);
    if (field == 3 && wire == 0) piece.type = static_cast<SentencePieceModelSpec::PieceType>(value);
  });
}

}  // namespace

std::optional<SentencePieceModelSpec> parse_sentencepiece_model(std::string_view serialized) {
  SentencePieceModelSpec spec;
  bool ok = true;
  const bool parsed = for_each_field(serialized, [&](uint64_t field, uint64_t wire, uint64_t, std::string_view bytes) {
    if (wire != 2) return;
    if (field == 1) {
      spec.pieces.emplace_back();
      ok = ok && read_piece(bytes, spec.pieces.back());
    } else if (field == 2) {
      ok = ok && for_each_field(bytes, [&](uint64_t f, uint64_t w, uint64_t value, std::string_view) {
        if (f == 3 && w == 0) spec.model_type = static_cast<SentencePieceModelSpec::ModelType>(value);
        if (f == 35 && w == 0) spec.byte_fallback = value != 0;
      });
    } else if (field == 3) {
      spec.has_normalizer = true;
      ok = ok && for_each_field(bytes, [&](uint64_t f, uint64_t w, uint64_t value, std::string_view b) {
        if (f == 2 && w == 2) spec.has_charsmap = !b.empty();
        if (f == 3 && w == 0) spec.add_dummy_prefix = value != 0;
        if (f == 4 && w == 0) spec.remove_extra_whitespaces = value != 0;
        if (f == 5 && w == 0) spec.escape_whitespaces = value != 0;
      });
    }
  });
  if (!parsed || !ok) return std::nullopt;
  return spec;
}

}  // namespace loom
