#!/usr/bin/python3
"""Tokenizing speed of `loom prepare` against SentencePiece's own `spm_encode` tool.

Builds a corpus of the text found on this machine (the files under /usr/share/common-licenses
and /usr/share/doc, gzip'd ones unpacked, in sorted order, repeated if need be up to --mb MB),
trains an 8000-piece SentencePiece model on it with `loom tokenizer train`, and times on the
same text with the same model, one after the other in the same run:

  loom prepare --input corpus.txt --documents blank-line --tokenizer M --threads 1
  loom prepare ... --threads N          (N = every core)
  spm_encode --model M --output_format=id < corpus.txt > /dev/null     (single-threaded)

Each is run --repeats times and the fastest run counts. MB/s = corpus bytes / wall-clock
seconds of the whole command (loading the model, reading, tokenizing, and for loom writing the
shards). spm_encode encodes line by line; loom encodes each blank-line-separated paragraph as
one document, newlines included. Prints a markdown table; removes everything it made.
"""
import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["/usr/share/common-licenses", "/usr/share/doc"]


def text_files():
    for top in SOURCES:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    yield path


def read_text(path):
    """The file's text (gunzipped for .gz), or None when it is not UTF-8 text."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
        if b"\0" in data:
            return None
        data.decode("utf-8")
        return data
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return None


def build_corpus(path, target_bytes):
    pieces = []
    for p in text_files():
        data = read_text(p)
        if data and data.strip():
            pieces.append(data.rstrip(b"\n") + b"\n\n")
    if not pieces:
        sys.exit("prepare_bench.py: no text found under " + " ".join(SOURCES))
    written = 0
    with open(path, "wb") as out:
        while written < target_bytes:
            for data in pieces:
                out.write(data)
                written += len(data)
                if written >= target_bytes:
                    break
    return written


def timed(cmd, stdin=None, stdout=None):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdin=stdin, stdout=stdout if stdout else subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=64, help="corpus size in MB (default 64)")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each command; the fastest counts")
    ap.add_argument("--loom", default=os.path.join(ROOT, "build", "loom"))
    args = ap.parse_args()
    if not os.path.exists(args.loom):
        sys.exit("prepare_bench.py: %s not found; build first (scripts/build.sh)" % args.loom)
    spm_encode = shutil.which("spm_encode")
    if not spm_encode:
        sys.exit("prepare_bench.py: spm_encode not found (apt-get install sentencepiece)")
    cores = os.cpu_count() or 1

    work = tempfile.mkdtemp(prefix="loom_prepare_bench_")
    try:
        corpus = os.path.join(work, "corpus.txt")
        size = build_corpus(corpus, int(args.mb * 1e6))
        mb = size / 1e6
        model = os.path.join(work, "bench.model")
        subprocess.run([args.loom, "tokenizer", "train", "--input", corpus, "--vocab-size", str(args.vocab_size),
                        "--max-sentences", "200000", "--out", model], check=True, stdout=subprocess.DEVNULL)
        print("corpus: %.1f MB, model: %d pieces, %d cores, load average %.2f" %
              (mb, args.vocab_size, cores, os.getloadavg()[0]), file=sys.stderr)

        def loom(threads):
            out = os.path.join(work, "dataset")
            shutil.rmtree(out, ignore_errors=True)
            return timed([args.loom, "prepare", "--input", corpus, "--documents", "blank-line", "--tokenizer", model,
                          "--out", out, "--threads", str(threads)])

        def spm():
            with open(corpus, "rb") as f:
                return timed([spm_encode, "--model", model, "--output_format=id"], stdin=f)

        runs = [("loom prepare", 1, lambda: loom(1))]
        if cores > 1:
            runs.append(("loom prepare", cores, lambda: loom(cores)))
        runs.append(("spm_encode", 1, spm))
        best = {}
        for _ in range(args.repeats):
            for name, threads, run in runs:
                seconds = run()
                print("  %s, %d threads: %.2f s" % (name, threads, seconds), file=sys.stderr)
                key = (name, threads)
                best[key] = min(best.get(key, seconds), seconds)

        spm_rate = mb / best[("spm_encode", 1)]
        print("| tool | threads | seconds | MB/s | MB/s per thread | vs spm_encode per core |")
        print("|---|---|---|---|---|---|")
        for name, threads, _ in runs:
            seconds = best[(name, threads)]
            rate = mb / seconds
            print("| %s | %d | %.2f | %.2f | %.2f | %.2fx |" % (name, threads, seconds, rate, rate / threads,
                                                                rate / threads / spm_rate))
        if cores > 1:
            scaling = best[("loom prepare", 1)] / best[("loom prepare", cores)]
            print("\nloom prepare thread scaling: %.2fx on %d threads" % (scaling, cores))
        print("corpus %.1f MB, best of %d runs; load average after: %.2f" % (mb, args.repeats, os.getloadavg()[0]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
