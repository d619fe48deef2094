#include "data/hf_tokenizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <algorithm>
#include <array>
#include <functional>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "data/bpe_merges.h"
#include "data/gpt2_bpe.h"
#include "data/hf_added_tokens.h"
#include "data/hf_pretokenizer.h"
#include "data/json.h"
#include "data/utf8.h"

namespace loom {

namespace {

using Kind = JsonValue::Kind;

constexpr const char* kSupported =
    "Loom reads byte-level BPE tokenizer.json files (as GPT-2, Llama 3, Qwen2 and SmolLM ship), SentencePiece "
    ".model files and vocab.json + merges.txt";

const JsonValue* member(const JsonValue& object, std::string_view key) {
  return object.kind == Kind::kObject ? object.find(key) : nullptr;
}

bool is_null(const JsonValue* v) { return !v || v->kind == Kind::kNull; }

std::string string_of(const JsonValue* v) { return v && v->kind == Kind::kString ? v->text : ""; }

bool flag(const JsonValue& object, std::string_view key) {
  const JsonValue* v = member(object, key);
  return v && v->kind == Kind::kBool && v->boolean;
}

// The bytes a token spelled in GPT-2's byte characters stands for, or nullopt when some character
// stands for no byte (such a token can only be an added token, written as it is).
std::optional<std::string> spelled_bytes(std::string_view spelled) {
  std::string bytes;
  for (size_t pos = 0; pos < spelled.size();) {
    const int byte = gpt2_char_to_byte(utf8_decode_valid(spelled, pos));
    if (byte < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(byte));
  }
  return bytes;
}

// A hash that lets an unordered_map<std::string, ...> be searched by string_view, allocating nothing.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using IdOfBytes = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// NFC (the only normalizer Loom reads), or none.
class Normalizer {
 public:
  Normalizer(const JsonValue& config, const std::string& file) { read(config, file); }

  bool active() const { return nfc_ != nullptr; }
  std::string name() const { return nfc_ ? "NFC" : "none"; }

  // `text` in NFC.
  std::string apply(std::string_view text) const {
    std::string out;
    return apply(text, out) ? out : std::string(text);
  }
  // Whether `text` changes under NFC; if so, its NFC form goes to `out`.
  bool apply(std::string_view text, std::string& out) const {
    UErrorCode status = U_ZERO_ERROR;
    const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
    if (nfc_->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return false;
    status = U_ZERO_ERROR;
    out.clear();
    icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
    nfc_->normalizeUTF8(0, piece, sink, nullptr, status);
    LOOM_CHECK(U_SUCCESS(status), "ICU NFC normalization failed:", u_errorName(status));
    return true;
  }

 private:
  void read(const JsonValue& config, const std::string& file) {
    if (config.kind == Kind::kNull) return;
    const std::string type = string_of(member(config, "type"));
    if (type == "Sequence") {
      const JsonValue* list = member(config, "normalizers");
      if (list && list->kind == Kind::kArray) {
        for (const JsonValue& step : list->array) read(step, file);
        return;
      }
    }
    if (type == "NFC") {
      UErrorCode status = U_ZERO_ERROR;
      nfc_ = icu::Normalizer2::getNFCInstance(status);
      LOOM_CHECK(U_SUCCESS(status), "ICU has no NFC normalizer:", u_errorName(status));
      return;
    }
    fail_user(file + ": normalizer", type.empty() ? "(no type)" : type,
              "is not supported (Loom reads none, or NFC)");
  }

  const icu::Normalizer2* nfc_ = nullptr;
};

// What tokenizer.json gives, read and checked.
struct HfModel {
  std::vector<std::string> token_bytes;  // (V) id -> what it decodes to
  std::unordered_map<std::string, int32_t> id_of_spelled;  // the model's vocab as written
  IdOfBytes id_of_bytes;                                   // ignore_merges: a piece's bytes -> id
  std::array<int32_t, 256> byte_ids{};
  BpeMerges merges;
  bool ignore_merges = false;
  std::vector<AddedToken> raw_tokens, normalized_tokens;
  std::vector<int32_t> prefix, suffix;  // the post_processor's template around one text
};

class HfBpeTokenizer final : public Tokenizer {
 public:
  HfBpeTokenizer(HfModel model, Normalizer normalizer, HfPreTokenizer pretokenizer, int eos, int bos,
                 std::string eos_name, std::string source)
      : model_(std::move(model)),
        raw_tokens_(std::move(model_.raw_tokens)),
        normalized_tokens_(std::move(model_.normalized_tokens)),
        normalizer_(std::move(normalizer)),
        pretokenizer_(std::move(pretokenizer)),
        eos_(eos),
        bos_(bos),
        eos_name_(std::move(eos_name)),
        source_(std::move(source)) {
    cuts_ = pretokenizer_.cuts_after_newlines();
    for (const auto* group : {&raw_tokens_, &normalized_tokens_}) {
      for (const AddedToken& t : group->tokens()) {
        if (t.lstrip || t.content.find('\n') != std::string::npos) cuts_ = false;
      }
    }
  }

  int vocab_size() const override { return static_cast<int>(model_.token_bytes.size()); }
  int eos_id() const override { return eos_; }
  int bos_id() const override { return bos_; }
  std::vector<int32_t> template_prefix() const override { return model_.prefix; }
  std::vector<int32_t> template_suffix() const override { return model_.suffix; }

  std::string description() const override {
    return str_cat("Hugging Face byte-level BPE,", vocab_size(), "tokens (" + std::to_string(model_.merges.size()),
                   "merges,", raw_tokens_.tokens().size() + normalized_tokens_.tokens().size(), "added tokens;",
                   "normalizer", normalizer_.name() + ", pre-tokenizer", pretokenizer_.summary() + "), eos",
                   eos_name_, "=", eos_, "from", source_);
  }

 protected:
  void encode_valid(std::string_view text, std::vector<int32_t>& out) const override {
    std::vector<TextSpan> spans, inner;
    std::vector<std::string_view> pieces;
    std::string normalized;
    raw_tokens_.split(text, spans);
    for (const TextSpan& span : spans) {
      if (span.id >= 0) {
        out.push_back(span.id);
        continue;
      }
      const std::string_view segment = text.substr(span.begin, span.end - span.begin);
      const bool changed = normalizer_.active() && normalizer_.apply(segment, normalized);
      const std::string_view s = changed ? std::string_view(normalized) : segment;
      inner.clear();
      normalized_tokens_.split(s, inner);
      for (const TextSpan& part : inner) {
        if (part.id >= 0) {
          out.push_back(part.id);
        } else {
          encode_text(s.substr(part.begin, part.end - part.begin), pieces, out);
        }
      }
    }
  }

  std::string decode_valid(std::span<const int32_t> ids) const override {
    std::string text;
    for (int32_t id : ids) text += model_.token_bytes[static_cast<size_t>(id)];
    return text;
  }

  bool cuts_after_newlines() const override { return cuts_; }

 private:
  void encode_text(std::string_view text, std::vector<std::string_view>& pieces, std::vector<int32_t>& out) const {
    std::string spaced;
    if (pretokenizer_.adds_prefix_space() && text.front() != ' ') {
      spaced = " " + std::string(text);
      text = spaced;
    }
    pieces.clear();
    pretokenizer_.split(text, pieces);
    std::vector<int32_t> symbols;
    for (std::string_view piece : pieces) {
      if (model_.ignore_merges) {
        if (auto it = model_.id_of_bytes.find(piece); it != model_.id_of_bytes.end()) {
          out.push_back(it->second);
          continue;
        }
      }
      symbols.clear();
      for (char byte : piece) symbols.push_back(model_.byte_ids[static_cast<unsigned char>(byte)]);
      model_.merges.apply(symbols);
      out.insert(out.end(), symbols.begin(), symbols.end());
    }
  }

  HfModel model_;
  AddedTokenMatcher raw_tokens_, normalized_tokens_;
  Normalizer normalizer_;
  HfPreTokenizer pretokenizer_;
  int eos_, bos_;
  std::string eos_name_;
  std::string source_;
  bool cuts_ = false;
};

// --- reading tokenizer.json ------------------------------------------------------------------

void check_model_options(const JsonValue& model, const std::string& file, bool byte_level) {
  const std::string type = string_of(member(model, "type"));
  if (type != "BPE" && !(type.empty() && member(model, "merges"))) {
    fail_user(file + ": model type", type.empty() ? "(none)" : type, "is not supported;", kSupported);
  }
  if (!byte_level) {
    fail_user(file + ": this BPE tokenizer is not byte-level (its pre_tokenizer has no ByteLevel step, as with",
              "SentencePiece-style models);", std::string(kSupported) + "; for such a model give its tokenizer.model");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!string_of(member(model, key)).empty()) {
      fail_user(file + ": BPE with a", key, "is not supported;", kSupported);
    }
  }
  if (const JsonValue* dropout = member(model, "dropout"); !is_null(dropout) && dropout->text != "0" && dropout->text != "0.0") {
    fail_user(file + ": BPE dropout", dropout->text, "is not supported (encoding would be random)");
  }
}

void read_vocab(const JsonValue& model, const std::string& file, HfModel& out) {
  const JsonValue* vocab = member(model, "vocab");
  if (!vocab || vocab->kind != Kind::kObject) fail_user(file + ": model has no \"vocab\" object");
  std::vector<std::pair<int64_t, const std::string*>> entries;
  int64_t max_id = -1;
  for (const auto& [spelled, value] : vocab->members) {
    const std::optional<int64_t> id = value.as_int64();
    if (!id || *id < 0 || *id >= (int64_t{1} << 31) - 1) {
      fail_user(file + ": vocab token '" + spelled + "' at byte offset", value.offset,
                "has no valid id (expected an integer >= 0)");
    }
    max_id = std::max(max_id, *id);
    entries.emplace_back(*id, &spelled);
  }
  out.token_bytes.resize(static_cast<size_t>(max_id + 1));
  out.id_of_spelled.reserve(entries.size());
  for (const auto& [id, spelled] : entries) {
    const auto i = static_cast<int32_t>(id);
    out.id_of_spelled[*spelled] = i;
    std::optional<std::string> bytes = spelled_bytes(*spelled);
    out.token_bytes[static_cast<size_t>(i)] = bytes ? *bytes : *spelled;
    if (bytes && out.ignore_merges) out.id_of_bytes.emplace(std::move(*bytes), i);
  }
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    utf8_append(spelled, gpt2_byte_to_char(static_cast<uint8_t>(b)));
    auto it = out.id_of_spelled.find(spelled);
    if (it == out.id_of_spelled.end()) {
      fail_user(file + ": no token for byte", b, "(spelled '" + spelled + "');",
                "a byte-level BPE vocabulary holds all 256 single bytes");
    }
    out.byte_ids[static_cast<size_t>(b)] = it->second;
  }
}

void read_merges(const JsonValue& model, const std::string& file, HfModel& out) {
  const JsonValue* merges = member(model, "merges");
  if (!merges || merges->kind != Kind::kArray) fail_user(file + ": model has no \"merges\" list");
  for (size_t rank = 0; rank < merges->array.size(); ++rank) {
    const JsonValue& m = merges->array[rank];
    std::string parts[2];
    if (m.kind == Kind::kString) {
      const size_t space = m.text.find(' ');
      if (space == std::string::npos || m.text.find(' ', space + 1) != std::string::npos) {
        fail_user(file + ": merge", rank, "at byte offset", m.offset, "is '" + m.text + "';",
                  "expected two tokens separated by one space");
      }
      parts[0] = m.text.substr(0, space);
      parts[1] = m.text.substr(space + 1);
    } else if (m.kind == Kind::kArray && m.array.size() == 2 && m.array[0].kind == Kind::kString &&
               m.array[1].kind == Kind::kString) {
      parts[0] = m.array[0].text;
      parts[1] = m.array[1].text;
    } else {
      fail_user(file + ": merge", rank, "at byte offset", m.offset, "is", std::string(json_kind_name(m.kind)) + ";",
                "expected \"a b\" or [\"a\", \"b\"]");
    }
    int32_t ids[3];
    const std::string names[3] = {parts[0], parts[1], parts[0] + parts[1]};
    for (int k = 0; k < 3; ++k) {
      auto it = out.id_of_spelled.find(names[k]);
      if (it == out.id_of_spelled.end()) {
        fail_user(file + ": merge", rank, "at byte offset", m.offset, "needs '" + names[k] + "',",
                  "which is not in the vocab");
      }
      ids[k] = it->second;
    }
    if (ids[2] == ids[0] || ids[2] == ids[1]) {
      fail_user(file + ": merge", rank, "at byte offset", m.offset, "makes one of its own parts");
    }
    out.merges.add(ids[0], ids[1], ids[2]);  // a repeated pair keeps its first (best) rank
  }
}

void read_added_tokens(const JsonValue& root, const std::string& file, const Normalizer& normalizer, HfModel& out) {
  const JsonValue* list = member(root, "added_tokens");
  if (is_null(list)) return;
  if (list->kind != Kind::kArray) fail_user(file + ": \"added_tokens\" is not a list");
  for (const JsonValue& entry : list->array) {
    AddedToken t;
    t.content = string_of(member(entry, "content"));
    const JsonValue* id = member(entry, "id");
    if (t.content.empty() || !id || !id->as_int64() || *id->as_int64() < 0 || *id->as_int64() >= (int64_t{1} << 31) - 1) {
      fail_user(file + ": added token at byte offset", entry.offset, "needs a non-empty \"content\" and an \"id\" >= 0");
    }
    t.id = static_cast<int32_t>(*id->as_int64());
    t.lstrip = flag(entry, "lstrip");
    t.rstrip = flag(entry, "rstrip");
    t.single_word = flag(entry, "single_word");
    if (static_cast<size_t>(t.id) >= out.token_bytes.size()) out.token_bytes.resize(static_cast<size_t>(t.id) + 1);
    out.token_bytes[static_cast<size_t>(t.id)] = t.content;
    // Hugging Face's default: special tokens are found in the raw text, others after the normalizer.
    const JsonValue* normalized_flag = member(entry, "normalized");
    const bool normalized = normalized_flag && normalized_flag->kind == Kind::kBool ? normalized_flag->boolean
                                                                                     : !flag(entry, "special");
    if (normalized) {
      if (normalizer.active()) t.content = normalizer.apply(t.content);
      out.normalized_tokens.push_back(std::move(t));
    } else {
      out.raw_tokens.push_back(std::move(t));
    }
  }
}

// The ids the post-processor puts before and after one text.
void read_post_processor(const JsonValue& config, const std::string& file, HfModel& out) {
  if (config.kind == Kind::kNull) return;
  const std::string type = string_of(member(config, "type"));
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const JsonValue* list = member(config, "processors");
    if (list && list->kind == Kind::kArray) {
      for (const JsonValue& p : list->array) read_post_processor(p, file, out);
    }
    return;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto id_of = [&](const char* key) -> int32_t {
      const JsonValue* pair = member(config, key);
      if (!pair || pair->kind != Kind::kArray || pair->array.size() != 2 || !pair->array[1].as_int64()) {
        fail_user(file + ": post_processor", type, "has no [token, id] pair", key);
      }
      return static_cast<int32_t>(*pair->array[1].as_int64());
    };
    out.prefix = {id_of("cls")};
    out.suffix = {id_of("sep")};
    return;
  }
  if (type != "TemplateProcessing") {
    fail_user(file + ": post_processor", type.empty() ? "(no type)" : type,
              "is not supported (Loom reads TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel)");
  }
  const JsonValue* single = member(config, "single");
  const JsonValue* specials = member(config, "special_tokens");
  if (!single || single->kind != Kind::kArray) fail_user(file + ": post_processor TemplateProcessing has no \"single\" template");
  out.prefix.clear();
  out.suffix.clear();
  bool after_text = false;
  for (const JsonValue& piece : single->array) {
    if (member(piece, "Sequence")) {
      after_text = true;
      continue;
    }
    const JsonValue* special_token = member(piece, "SpecialToken");
    const std::string name = string_of(member(special_token ? *special_token : piece, "id"));
    const JsonValue* special = specials ? member(*specials, name) : nullptr;
    const JsonValue* ids = special ? member(*special, "ids") : nullptr;
    if (name.empty() || !ids || ids->kind != Kind::kArray) {
      fail_user(file + ": post_processor template names special token '" + name + "', which its special_tokens lack");
    }
    for (const JsonValue& id : ids->array) {
      if (!id.as_int64()) fail_user(file + ": post_processor special token '" + name + "' has an id that is not an integer");
      (after_text ? out.suffix : out.prefix).push_back(static_cast<int32_t>(*id.as_int64()));
    }
  }
}

JsonValue parse_json_file(const std::string& path, const char* what) {
  try {
    return json_parse(read_file(path, what));
  } catch (const JsonError& e) {
    fail_user(path + ":", e.what());
  }
}

// The id of a token named in tokenizer_config.json: an added token's content or a vocab token.
int32_t id_of_token(const std::string& name, const HfModel& model) {
  for (const auto* group : {&model.raw_tokens, &model.normalized_tokens}) {
    for (const AddedToken& t : *group) {
      if (t.content == name) return t.id;
    }
  }
  auto it = model.id_of_spelled.find(name);
  return it == model.id_of_spelled.end() ? -1 : it->second;
}

// tokenizer_config.json's `key` ("eos_token": "<|endoftext|>" or {"content": "<|endoftext|>", ...}).
std::string config_token(const JsonValue& config, const char* key) {
  const JsonValue* v = member(config, key);
  if (is_null(v)) return "";
  return v->kind == Kind::kString ? v->text : string_of(member(*v, "content"));
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& tokenizer_json,
                                             const std::string& tokenizer_config_json) {
  const std::string& file = tokenizer_json;
  const JsonValue root = parse_json_file(file, "tokenizer.json");
  const JsonValue* model_json = member(root, "model");
  if (root.kind != Kind::kObject || !model_json || model_json->kind != Kind::kObject) {
    fail_user(file + ": expected a Hugging Face tokenizer.json (a JSON object with a \"model\");", kSupported);
  }
  static const JsonValue kNull;
  auto value_or_null = [&](const char* key) -> const JsonValue& {
    const JsonValue* v = member(root, key);
    return v ? *v : kNull;
  };
  HfPreTokenizer pretokenizer(value_or_null("pre_tokenizer"), file);
  check_model_options(*model_json, file, pretokenizer.byte_level());
  if (const JsonValue& decoder = value_or_null("decoder"); decoder.kind != Kind::kNull) {
    const std::string type = string_of(member(decoder, "type"));
    if (type != "ByteLevel") {
      fail_user(file + ": decoder", type.empty() ? "(no type)" : type, "is not supported (byte-level BPE decodes with ByteLevel)");
    }
  }
  Normalizer normalizer(value_or_null("normalizer"), file);

  HfModel model;
  model.ignore_merges = flag(*model_json, "ignore_merges");
  read_vocab(*model_json, file, model);
  read_merges(*model_json, file, model);
  read_added_tokens(root, file, normalizer, model);
  read_post_processor(value_or_null("post_processor"), file, model);

  JsonValue config;
  if (!tokenizer_config_json.empty()) config = parse_json_file(tokenizer_config_json, "tokenizer_config.json");
  std::string eos_name = config_token(config, "eos_token");
  int32_t eos = -1;
  if (!eos_name.empty()) {
    eos = id_of_token(eos_name, model);
    if (eos < 0) fail_user(tokenizer_config_json + ": eos_token '" + eos_name + "' is not a token of", file);
  } else {
    for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<|im_end|>", "<eos>"}) {
      if ((eos = id_of_token(name, model)) >= 0) {
        eos_name = name;
        break;
      }
    }
    if (eos < 0) {
      fail_user(file + ": no end-of-document token: none of <|endoftext|>, <|end_of_text|>, </s>, <|im_end|>, <eos>",
                "is a token, and no tokenizer_config.json next to it names an eos_token");
    }
  }
  int32_t bos = -1;
  if (const std::string bos_name = config_token(config, "bos_token"); !bos_name.empty()) {
    bos = id_of_token(bos_name, model);
    if (bos < 0) fail_user(tokenizer_config_json + ": bos_token '" + bos_name + "' is not a token of", file);
  } else if (!model.prefix.empty()) {
    bos = model.prefix.front();
  }
  for (const auto* ids : {&model.prefix, &model.suffix}) {
    for (int32_t id : *ids) {
      if (id < 0 || static_cast<size_t>(id) >= model.token_bytes.size()) {
        fail_user(file + ": post_processor names id", id, "which no token has");
      }
    }
  }
  return std::make_unique<HfBpeTokenizer>(std::move(model), std::move(normalizer), std::move(pretokenizer), eos, bos,
                                          eos_name, file);
}

}  // namespace loom
