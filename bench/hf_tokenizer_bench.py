#!/usr/bin/python3
"""Encode speed per core: Loom's tokenizer.json reader against Hugging Face `tokenizers`.

Trains byte-level BPE tokenizers in the GPT-2 and Llama 3 styles with `tokenizers` on the text of
this machine (as tests/reference/hf_tokenizers_reference.py does; nothing downloaded), builds a
corpus of up to --mb MB from /usr/share/common-licenses and /usr/share/doc (plain text files, in
sorted order), cuts it into documents at blank lines, and times encoding every document, one
document at a time, on one core:

  Loom:        build/bench/bench_tokenizer DIR corpus.txt   (Tokenizer::encode_into per document)
  tokenizers:  Tokenizer.encode_batch(documents, add_special_tokens=False) with
               TOKENIZERS_PARALLELISM=false and RAYON_NUM_THREADS=1 (one thread)

The two alternate, --repeats times each; only the encoding is timed (not loading or reading), in
CPU time of the process (on a shared machine wall-clock time measures the neighbours as much as
the tokenizer). MB/s = corpus bytes / CPU seconds. Both must give the same ids (a checksum is
compared). Prints a markdown table of medians with the spread (min .. max).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import hf_tokenizers_reference as reference  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def corpus(limit_bytes):
    parts, size = [], 0
    for top in ("/usr/share/common-licenses", "/usr/share/doc"):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if not os.path.isfile(path) or os.path.islink(path) or name.endswith(".gz"):
                    continue
                try:
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                except (UnicodeDecodeError, OSError):
                    continue
                parts.append(text)
                size += len(text.encode("utf-8"))
                if size >= limit_bytes:
                    return "\n\n".join(parts)
    return "\n\n".join(parts)


def checksum(encodings):
    total = 0
    for e in encodings:
        for i, t in enumerate(e.ids):
            total += t * (i + 1)
    return total % (1 << 64)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-cpu"), help="Loom build directory")
    ap.add_argument("--mb", type=float, default=8.0, help="corpus size in MB (default 8)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    bench = os.path.join(args.build, "bench", "bench_tokenizer")
    with tempfile.TemporaryDirectory(prefix="loom_tok_bench_") as tmp:
        text = corpus(int(args.mb * 1e6))
        path = os.path.join(tmp, "corpus.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        nbytes = len(text.encode("utf-8"))
        documents = [d for d in text.split("\n\n") if d]
        print(f"corpus: {nbytes / 1e6:.1f} MB, {len(documents)} documents; {args.repeats} interleaved repeats; "
              "MB per CPU second\n")
        print("| tokenizer | tokens | Loom MB/s (median, min .. max) | tokenizers MB/s (median, min .. max) | Loom / tokenizers |")
        print("|---|---|---|---|---|")
        for style in ("gpt2", "llama3"):
            d = os.path.join(tmp, style)
            os.makedirs(d)
            tok, config = reference.build(style)
            tok.save(os.path.join(d, "tokenizer.json"))
            if config is not None:
                import json
                with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                    json.dump(config, f)
            tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            loom_rates, hf_rates = [], []
            for _ in range(args.repeats):
                out = subprocess.run([bench, d, path], check=True, capture_output=True, text=True).stdout.split()
                fields = dict(zip(out[0::2], out[1::2]))
                loom_rates.append(nbytes / 1e6 / float(fields["cpu_seconds"]))
                start = time.process_time()
                encodings = tok.encode_batch(documents, add_special_tokens=False)
                hf_rates.append(nbytes / 1e6 / (time.process_time() - start))
                tokens = sum(len(e.ids) for e in encodings)
                if int(fields["tokens"]) != tokens or int(fields["checksum"]) != checksum(encodings):
                    sys.exit(f"{style}: Loom and tokenizers gave different ids ({fields['tokens']} vs {tokens} tokens)")
            lm, hm = statistics.median(loom_rates), statistics.median(hf_rates)
            print(f"| {style} style, {tok.get_vocab_size()} tokens | {tokens} | {lm:.2f} ({min(loom_rates):.2f} .. "
                  f"{max(loom_rates):.2f}) | {hm:.2f} ({min(hf_rates):.2f} .. {max(hf_rates):.2f}) | {lm / hm:.2f} |")


if __name__ == "__main__":
    main()
