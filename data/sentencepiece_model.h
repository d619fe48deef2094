// The parts of a SentencePiece model file that Loom reads itself: the pieces (text, score, type)
// and the normaliser and trainer settings that decide how text is encoded.
//
// A model file is a serialised `sentencepiece.ModelProto`. Debian's libsentencepiece-dev installs
// no header for it and links its own private protobuf, so the few fields needed are read straight
// from protobuf's wire format (field numbers from sentencepiece_model.proto, noted below).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loom {

struct SentencePieceModelSpec {
  // ModelProto.SentencePiece.Type
  enum class PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  // TrainerSpec.ModelType
  enum class ModelType { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

  struct Piece {
    std::string text;  // spaces written as U+2581
    float score = 0;
    PieceType type = PieceType::kNormal;
  };

  std::vector<Piece> pieces;  // in id order (ModelProto field 1)
  // TrainerSpec (ModelProto field 2)
  ModelType model_type = ModelType::kUnigram;  // field 3
  bool byte_fallback = false;                  // field 35
  // NormalizerSpec (ModelProto field 3); the defaults are the proto's
  bool has_normalizer = false;
  bool has_charsmap = false;              // field 2, precompiled_charsmap, non-empty
  bool add_dummy_prefix = true;           // field 3
  bool remove_extra_whitespaces = true;   // field 4
  bool escape_whitespaces = true;         // field 5: ' ' becomes U+2581

  // The normaliser changes nothing but spaces (shown as U+2581): no character map (the
  // "identity" rule), no space put in front, no whitespace removed.
  bool identity_normalizer() const {
    return has_normalizer && !has_charsmap && !add_dummy_prefix && !remove_extra_whitespaces;
  }
};

// The spec of a serialised model; nullopt when the bytes are not well-formed protobuf.
std::optional<SentencePieceModelSpec> parse_sentencepiece_model(std::string_view serialized);

}  // namespace loom
