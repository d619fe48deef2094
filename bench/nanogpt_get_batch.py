#!/usr/bin/python3
"""The peer of build/bench/bench_loader: nanoGPT's get_batch on the same token shards.

nanoGPT (train.py) draws each batch from a fresh np.memmap of the uint16 token file: B random
offsets, then x and y stacked from int64 copies of the T-token slices. This script does exactly
that on the token bytes of each shard of a split written by bench_loader (--keep), with the same
T = 1024, B = 8 and a consumer that sums x, for about two seconds, and prints tokens/s.
Usage: bench/nanogpt_get_batch.py /tmp/loom_bench_loader_200000000
"""
import glob
import os
import sys
import time

import numpy as np
import torch

T, B = 1024, 8


def shard_tokens(path):
    # Header: 64 bytes, token count (u64) at byte 24; uint16 tokens from byte 64 (docs/formats.md).
    with open(path, "rb") as f:
        header = f.read(64)
    assert header[:8] == b"LOOMTOKS" and int.from_bytes(header[12:16], "little") == 2, path
    return int.from_bytes(header[24:32], "little")


def get_batch(path, count):
    data = np.memmap(path, dtype=np.uint16, mode="r", offset=64, shape=(count,))
    ix = torch.randint(count - T, (B,))
    x = torch.stack([torch.from_numpy((data[i:i + T]).astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + T]).astype(np.int64)) for i in ix])
    return x, y


def main():
    shards = sorted(glob.glob(os.path.join(sys.argv[1], "train-*.tok")))
    counts = [shard_tokens(p) for p in shards]
    torch.manual_seed(1337)
    for _ in range(10):
        get_batch(shards[0], counts[0])
    tokens, checksum, start = 0, 0, time.perf_counter()
    step = 0
    while time.perf_counter() - start < 2.0:
        i = step % len(shards)
        x, y = get_batch(shards[i], counts[i])
        checksum += int(x.sum())
        tokens += x.numel()
        step += 1
    seconds = time.perf_counter() - start
    print(f"nanoGPT get_batch (np.memmap, torch {torch.__version__}): {tokens / seconds / 1e6:.1f} M tokens/s, "
          f"{step} steps (checksum {checksum})")


if __name__ == "__main__":
    main()
