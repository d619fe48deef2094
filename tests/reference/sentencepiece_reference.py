"""The Python `sentencepiece` library (what transformers' LlamaTokenizer runs) as the reference
for Loom's SentencePiece tokenizer on a model set up as Llama 2's and TinyLlama's are: BPE, byte
fallback, a dummy prefix space, identity normalisation, digits split, <unk> 0, <s> 1, </s> 2.
No model file is downloaded: the model is trained here on the machine's own text.

  make OUT   trains OUT/llama2.model, writes OUT/texts (records "<byte length>\\n<bytes>\\n", the
             texts of hf_tokenizers_reference.py), OUT/ids (one line of ids per text, no <s>),
             OUT/decoded (the hex of decode(ids)) and OUT/meta ("bos ID", "eos ID",
             "template ID ..." for encode("Hello", add_bos=True)).
"""
import io
import os
import sys

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_tokenizers_reference import corpus_files, test_texts  # noqa: E402


def make(out):
    os.makedirs(out, exist_ok=True)
    lines = []
    for path in corpus_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            lines += [line for line in f.read().splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=4000, byte_fallback=True,
        add_dummy_prefix=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=0.99995, minloglevel=2)
    with open(os.path.join(out, "llama2.model"), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    texts = test_texts()
    with open(os.path.join(out, "texts"), "wb") as f:
        for t in texts:
            data = t.encode("utf-8")
            f.write(f"{len(data)}\n".encode() + data + b"\n")
    with open(os.path.join(out, "ids"), "w") as f, open(os.path.join(out, "decoded"), "w") as g:
        for t in texts:
            ids = sp.encode(t, out_type=int)
            f.write(" ".join(map(str, ids)) + "\n")
            g.write(sp.decode(ids).encode("utf-8").hex() + "\n")
    with open(os.path.join(out, "meta"), "w") as f:
        f.write(f"bos {sp.bos_id()}\neos {sp.eos_id()}\n")
        f.write("template " + " ".join(map(str, sp.encode("Hello", add_bos=True))) + "\n")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        sys.exit("usage: sentencepiece_reference.py make OUT")


if __name__ == "__main__":
    main()
