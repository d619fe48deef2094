#include "data/sentencepiece_bpe.h"

#include <cstdio>
#include <queue>
#include <string>

#include "core/base/check.h"
#include "data/utf8.h"

namespace loom {

namespace {

using Spec = SentencePieceModelSpec;

constexpr char32_t kSpaceSymbol = 0x2581;  // '▁', SentencePiece's sign for a space

}  // namespace

const SentencePieceBpe::Merge* SentencePieceBpe::find(int32_t left, int32_t right) const {
  const uint64_t k = key(left, right);
  for (size_t i = static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_);; i = (i + 1) & (table_.size() - 1)) {
    if (table_[i].key == k) return &table_[i];
    if (table_[i].key == kEmpty) return nullptr;
  }
}

void SentencePieceBpe::add(int32_t left, int32_t right, int32_t merged, float score) {
  if (2 * (merges_ + 1) > table_.size()) {
    std::vector<Merge> old = std::move(table_);
    table_.assign(old.empty() ? 64 : 2 * old.size(), Merge{});
    shift_ = 64;
    for (size_t n = table_.size(); n > 1; n >>= 1) --shift_;
    merges_ = 0;
    for (const Merge& m : old) {
      if (m.key != kEmpty) add(static_cast<int32_t>(m.key >> 32), static_cast<int32_t>(m.key & 0xFFFFFFFF), m.merged, m.score);
    }
  }
  const uint64_t k = key(left, right);
  size_t i = static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_);
  while (table_[i].key != kEmpty) i = (i + 1) & (table_.size() - 1);
  table_[i] = {k, merged, score};
  ++merges_;
}

int32_t SentencePieceBpe::char_id(char32_t c) const {
  if (c < 128) return ascii_ids_[c];
  const auto it = other_ids_.find(c);
  return it == other_ids_.end() ? -1 : it->second;
}

std::unique_ptr<SentencePieceBpe> SentencePieceBpe::create(const Spec& spec) {
  if (spec.model_type != Spec::ModelType::kBpe || !spec.byte_fallback || !spec.identity_normalizer()) return nullptr;
  std::unique_ptr<SentencePieceBpe> bpe(new SentencePieceBpe());
  bpe->escape_spaces_ = spec.escape_whitespaces;
  bpe->ascii_ids_.fill(-1);
  bpe->byte_ids_.fill(-1);
  std::unordered_map<std::string_view, int32_t> normal;  // the pieces a merge can make
  for (size_t i = 0; i < spec.pieces.size(); ++i) {
    const Spec::Piece& piece = spec.pieces[i];
    const auto id = static_cast<int32_t>(i);
    switch (piece.type) {
      case Spec::PieceType::kNormal:
        if (piece.text.empty() || utf8_find_invalid(piece.text) != std::string_view::npos) return nullptr;
        if (!normal.emplace(piece.text, id).second) return nullptr;
        break;
      case Spec::PieceType::kByte: {
        unsigned value = 0;
        char end = 0;
        if (std::sscanf(piece.text.c_str(), "<0x%2X%c", &value, &end) != 2 || end != '>' || value > 255) return nullptr;
        bpe->byte_ids_[value] = id;
        break;
      }
      case Spec::PieceType::kUnknown:
      case Spec::PieceType::kControl:
        break;
      default:  // user-defined or unused pieces: the library treats them apart
        return nullptr;
    }
  }
  for (const int32_t id : bpe->byte_ids_) {
    if (id < 0) return nullptr;
  }
  for (const auto& [text, id] : normal) {
    size_t pos = 0;
    const char32_t c = utf8_decode_valid(text, pos);
    if (pos != text.size()) continue;
    if (c < 128) {
      bpe->ascii_ids_[c] = id;
    } else {
      bpe->other_ids_[c] = id;
    }
  }
  for (const auto& [text, id] : normal) {
    const float score = spec.pieces[static_cast<size_t>(id)].score;
    for (size_t cut = 0; cut < text.size();) {
      const size_t start = cut;
      cut += static_cast<size_t>(utf8_sequence_length(static_cast<unsigned char>(text[cut])));
      if (normal.count(text.substr(start, cut - start)) == 0) return nullptr;  // a character that is no piece
      if (cut == text.size()) break;
      const auto left = normal.find(text.substr(0, cut)), right = normal.find(text.substr(cut));
      if (left != normal.end() && right != normal.end()) bpe->add(left->second, right->second, id, score);
    }
  }
  return bpe;
}

void SentencePieceBpe::encode(std::string_view text, std::vector<int32_t>& out) const {
  // Symbol i: a piece id, or -1 - c for a character c that is no piece. A merge keeps the left
  // symbol's slot, so slot 0 lives to the end and next[] walks the symbols in text order.
  std::vector<int32_t> id;
  id.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    char32_t c = utf8_decode_valid(text, pos);
    if (c == U' ' && escape_spaces_) c = kSpaceSymbol;
    const int32_t piece = char_id(c);
    id.push_back(piece >= 0 ? piece : -1 - static_cast<int32_t>(c));
  }
  const auto n = static_cast<int32_t>(id.size());
  std::vector<int32_t> next(id.size());
  for (int32_t i = 0; i < n; ++i) next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
  if (n >= 2) {
    std::vector<int32_t> prev(id.size());
    for (int32_t i = 0; i < n; ++i) prev[static_cast<size_t>(i)] = i - 1;
    struct Candidate {
      float score;
      int32_t left, right;  // slots
      int32_t left_id, right_id;
    };
    // The library's order: highest score first, then the leftmost.
    auto lower = [](const Candidate& a, const Candidate& b) {
      return a.score != b.score ? a.score < b.score : a.left > b.left;
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower)> agenda(lower);
    const auto push = [&](int32_t left) {
      if (left < 0) return;
      const int32_t right = next[static_cast<size_t>(left)];
      if (right < 0) return;
      const int32_t l = id[static_cast<size_t>(left)], r = id[static_cast<size_t>(right)];
      if (l < 0 || r < 0) return;
      if (const Merge* m = find(l, r)) agenda.push({m->score, left, right, l, r});
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    while (!agenda.empty()) {
      const Candidate c = agenda.top();
      agenda.pop();
      // Stale when either symbol has merged since: the right one is then gone or the left one
      // has another id (a merge never gives back a symbol's id).
      const auto l = static_cast<size_t>(c.left), r = static_cast<size_t>(c.right);
      if (next[l] != c.right || id[l] != c.left_id || id[r] != c.right_id) continue;
      id[l] = find(c.left_id, c.right_id)->merged;
      next[l] = next[r];
      id[r] = -1;  // gone: no candidate names it with a live left neighbour
      if (next[l] >= 0) prev[static_cast<size_t>(next[l])] = c.left;
      push(prev[l]);
      push(c.left);
    }
  }
  for (int32_t i = 0; i >= 0 && i < n; i = next[static_cast<size_t>(i)]) {
    const int32_t piece = id[static_cast<size_t>(i)];
    if (piece >= 0) {
      out.push_back(piece);
      continue;
    }
    std::string bytes;  // byte fallback: the character's UTF-8 bytes
    utf8_append(bytes, static_cast<char32_t>(-1 - piece));
    for (const char b : bytes) out.push_back(byte_ids_[static_cast<unsigned char>(b)]);
  }
}

}  // namespace loom
