"""Hugging Face `tokenizers` as the reference for Loom's tokenizer.json reader.

No model files are downloaded: byte-level BPE tokenizers are trained here, with `tokenizers`
itself, on the machine's own text (/usr/share/common-licenses, on every Debian), in the styles
that real models use:

  gpt2     ByteLevel pre-tokenizer (GPT-2's pattern), merges written as "a b" strings, also saved
           as vocab.json + merges.txt
  llama3   Split by Llama 3's pattern (Isolated) + ByteLevel without its pattern, ignore_merges,
           special tokens, a <|begin_of_text|> template, tokenizer_config.json naming eos and bos
  smollm   Digits (one per piece) + ByteLevel
  qwen2    NFC + Split by Qwen2's pattern + ByteLevel, ChatML special tokens
  prefix   ByteLevel with add_prefix_space, an added token with lstrip and rstrip

  make OUT    trains the five into OUT/<style>/, writes OUT/texts (records "<byte length>\\n<bytes>\\n")
              and for each style OUT/<style>/ids (one line of ids per text), OUT/<style>/decoded
              (the hex of decode(ids) per text) and OUT/<style>/meta ("eos ID", "bos ID",
              "vocab N", "template ID ID ..." for encode("Hello", add_special_tokens=True)).

The C++ test (tests/data/hf_tokenizer_reference_test.cpp) loads each with Loom and compares.
"""

import glob
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 4000


def corpus_files():
    files = sorted(f for f in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(f))
    if not files:
        sys.exit("no text in /usr/share/common-licenses to train on")
    return files


def byte_level_trainer(specials):
    return trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


def build(style):
    """(tokenizer, tokenizer_config or None), trained."""
    config = None
    if style == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials = ["<|endoftext|>"]
    elif style == "llama3":
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = LLAMA3_SPECIALS
        config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
    elif style == "smollm":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
        specials = CHATML_SPECIALS
    elif style == "qwen2":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = CHATML_SPECIALS
        config = {"bos_token": None, "eos_token": "<|im_end|>"}
    elif style == "prefix":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        specials = ["</s>"]
    else:
        sys.exit(f"unknown style {style}")
    tok.decoder = decoders.ByteLevel()
    tok.train(corpus_files(), byte_level_trainer(specials))
    if style == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                          special_tokens=[("<|begin_of_text|>", bos)])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if style == "prefix":
        tok.add_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False)])
    if style == "smollm":
        tok.add_tokens([AddedToken(" lic", normalized=True), AddedToken("Copyright", single_word=True)])
    return tok, config


def write_merges_as_strings(path):
    """Older tokenizer.json files spell each merge "a b"; newer ones ["a", "b"]. Loom reads both."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    data["model"]["merges"] = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in data["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)


def test_texts():
    texts = []
    for path in corpus_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    parts = ["a", "the", " the", "Hello", " world", "caf\u00e9", "cafe\u0301", "\u00c5", "A\u030a", "\u212b",
             "\u4e2d\u6587", "\u65e5\u672c\u8a9e\u306e\u6587", "\ud55c\uad6d\uc5b4", "\u0416\u0438\u0437\u043d\u044c",
             "\U0001F600", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\u2764\ufe0f", "0", "7", "42", "2024",
             "3.14159", "1,000,000", "\u0663\u0664", "\u00bd", " ", "  ", "     ", "\t", "\n", "\n\n", "\r\n",
             "\r\n\r\n", " \n ", "\u00a0", "\u3000", "\u2028", "'s", "'S", "'ll", "'RE", "don't", "!", "...",
             "(", "``", "#", "__init__", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
             "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<mask>", " <mask> ", "<|endoftext",
             "</s>", " lic", "Copyright", "xCopyright", "Copyright_", "license", "GNU", "\u00e9\u00e9\u00e9"]
    rng = random.Random(5)
    for _ in range(1500):
        texts.append("".join(rng.choice(parts) for _ in range(rng.randint(1, 30))))
    texts += [" " * 300, "\n" * 50, "x" + " " * 100 + "y", "\r\n" * 20 + "end", "9" * 200,
              "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
              "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "", "a"]
    return texts


def make(out):
    os.makedirs(out, exist_ok=True)
    texts = test_texts()
    with open(os.path.join(out, "texts"), "wb") as f:
        for t in texts:
            data = t.encode("utf-8")
            f.write(f"{len(data)}\n".encode() + data + b"\n")
    for style in ("gpt2", "llama3", "smollm", "qwen2", "prefix"):
        d = os.path.join(out, style)
        os.makedirs(d, exist_ok=True)
        tok, config = build(style)
        tok.save(os.path.join(d, "tokenizer.json"))
        if style == "gpt2":
            write_merges_as_strings(os.path.join(d, "tokenizer.json"))
            os.makedirs(os.path.join(out, "gpt2_pair"), exist_ok=True)
            tok.model.save(os.path.join(out, "gpt2_pair"))  # vocab.json + merges.txt
        if config is not None:
            with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(config, f)
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        encodings = tok.encode_batch(texts, add_special_tokens=False)
        with open(os.path.join(d, "ids"), "w") as f, open(os.path.join(d, "decoded"), "w") as g:
            for e in encodings:
                f.write(" ".join(map(str, e.ids)) + "\n")
                g.write(tok.decode(e.ids, skip_special_tokens=False).encode("utf-8").hex() + "\n")
        eos = (config or {}).get("eos_token") or next(
            n for n in ("<|endoftext|>", "<|end_of_text|>", "</s>", "<|im_end|>") if tok.token_to_id(n) is not None)
        bos = (config or {}).get("bos_token")
        with open(os.path.join(d, "meta"), "w") as f:
            f.write(f"eos {tok.token_to_id(eos)}\n")
            f.write(f"bos {tok.token_to_id(bos) if bos else -1}\n")
            f.write(f"vocab {tok.get_vocab_size(with_added_tokens=True)}\n")
            f.write("template " + " ".join(map(str, tok.encode("Hello", add_special_tokens=True).ids)) + "\n")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        sys.exit("usage: hf_tokenizers_reference.py make OUT")


if __name__ == "__main__":
    main()
