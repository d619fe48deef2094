"""An independent GPT-2 byte-level BPE in plain Python, to hold Loom's C++ tokenizer against.

It splits text with GPT-2's own regular expression through the `regex` module (which, unlike
`re`, knows \\p{L} and \\p{N}), maps bytes to GPT-2's characters, and merges by rank the slow,
obvious way. The C++ test (tests/data/gpt2_bpe_reference_test.cpp) runs it as a subprocess:

  classes                      ranges of code points that are \\p{L}, \\p{N} and \\s
  pieces STRINGS               byte lengths of the pre-tokenizer's pieces of each string
  train CORPUS MERGES DIR      learn MERGES merges from CORPUS, write DIR/encoder.json, vocab.bpe
  encode DIR STRINGS           the token ids of each string

STRINGS files hold records "<byte length>\\n<bytes>\\n"; answers are one line per string (or
per range), integers separated by spaces, so that the C++ side needs no JSON to read them.
"""

import json
import os
import sys
from collections import Counter

import regex

PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
END_OF_TEXT = "<|endoftext|>"


def byte_characters():
    """byte -> the character GPT-2's files spell it with."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_CHAR = byte_characters()
CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}


def spell(data: bytes) -> str:
    return "".join(BYTE_CHAR[b] for b in data)


def read_strings(path):
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        length = int(data[pos:newline])
        start = newline + 1
        out.append(data[start:start + length].decode("utf-8"))
        pos = start + length + 1
    return out


def pieces(text):
    return PATTERN.findall(text)


def classes():
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    # Positions in `everything` skip the surrogates; map them back to code points.
    def code_point(i):
        return i if i < 0xD800 else i + 0x800
    for name, expression in (("L", r"\p{L}+"), ("N", r"\p{N}+"), ("S", r"\s+")):
        for m in regex.finditer(expression, everything):
            print(name, code_point(m.start()), code_point(m.end() - 1))


def merge_word(symbols, ranks):
    """GPT-2's rule: merge every occurrence of the best-ranked pair, left to right; repeat."""
    symbols = list(symbols)
    while len(symbols) > 1:
        candidates = [(ranks[p], p) for p in zip(symbols, symbols[1:]) if p in ranks]
        if not candidates:
            break
        _, (left, right) = min(candidates)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                merged.append(left + right)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def train(corpus_path, merge_count, out_dir):
    with open(corpus_path, encoding="utf-8") as f:
        text = f.read()
    words = Counter(tuple(spell(bytes([b])) for b in piece.encode("utf-8")) for piece in pieces(text))
    merges = []
    for _ in range(merge_count):
        pairs = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        for done in merges:  # a pair can form again after its merge; GPT-2's files list it once
            pairs.pop(done, None)
        if not pairs:
            break
        # Most frequent; ties to the smallest pair, so that runs are reproducible.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        words = Counter({tuple(merge_word(w, {best: 0})): c for w, c in words.items()})
    encoder = {}
    for b in range(256):
        encoder[BYTE_CHAR[b]] = len(encoder)
    for left, right in merges:
        encoder.setdefault(left + right, len(encoder))
    encoder[END_OF_TEXT] = len(encoder)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "encoder.json"), "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "vocab.bpe"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for left, right in merges:
            f.write(f"{left} {right}\n")


def encode(model_dir, strings_path):
    with open(os.path.join(model_dir, "encoder.json"), encoding="utf-8") as f:
        encoder = json.load(f)
    with open(os.path.join(model_dir, "vocab.bpe"), encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    ranks = {tuple(line.split(" ")): rank for rank, line in enumerate(lines) if line}
    for text in read_strings(strings_path):
        ids = []
        for piece in pieces(text):
            symbols = merge_word(spell(piece.encode("utf-8")), ranks)
            ids.extend(encoder[s] for s in symbols)
        print(" ".join(map(str, ids)))


def main():
    command = sys.argv[1]
    if command == "classes":
        classes()
    elif command == "pieces":
        for text in read_strings(sys.argv[2]):
            print(" ".join(str(len(p.encode("utf-8"))) for p in pieces(text)))
    elif command == "train":
        train(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif command == "encode":
        encode(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
