"""Writes a Megatron-LM indexed dataset (PREFIX.bin + PREFIX.idx) for the tests of
data/megatron_dataset.h: an independent writer, from the format as Megatron documents and writes
it (megatron/core/datasets/indexed_dataset.py, index version 1), not from Loom's reader.

    megatron_indexed_writer.py SPEC.json PREFIX

SPEC.json: {"dtype": "uint16", "documents": [[[ids of sequence 0], [ids of sequence 1]], ...],
            "multimodal": false}
Each document is a list of sequences (Megatron's sentences; one per document unless the text was
split into sentences). The .bin holds every sequence's ids back to back; the .idx holds

    b"MMIDIDX\\x00\\x00" | u64 version 1 | u8 dtype code | u64 sequence count S |
    u64 document index count D | int32 lengths[S] | int64 byte pointers[S] |
    int64 document index[D] (0, then the sequence count after each document)
    [| int8 modes[S] when multimodal]

all little-endian. (Megatron-Core itself needs torch >= 2.6; Debian's python3-torch is older, so
the tests use this writer.)
"""
import json
import struct
import sys

import numpy as np

DTYPE_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6, "float32": 7,
               "uint16": 8}


def write(spec, prefix):
    dtype = np.dtype(spec["dtype"]).newbyteorder("<")
    lengths, pointers, document_index = [], [], [0]
    position = 0
    with open(prefix + ".bin", "wb") as data:
        for document in spec["documents"]:
            for sequence in document:
                array = np.asarray(sequence, dtype=dtype)
                data.write(array.tobytes(order="C"))
                lengths.append(array.size)
                pointers.append(position)
                position += array.size * dtype.itemsize
            document_index.append(len(lengths))
    with open(prefix + ".idx", "wb") as index:
        index.write(b"MMIDIDX\x00\x00")
        index.write(struct.pack("<Q", 1))
        index.write(struct.pack("<B", DTYPE_CODES[spec["dtype"]]))
        index.write(struct.pack("<Q", len(lengths)))
        index.write(struct.pack("<Q", len(document_index)))
        index.write(np.asarray(lengths, dtype="<i4").tobytes())
        index.write(np.asarray(pointers, dtype="<i8").tobytes())
        index.write(np.asarray(document_index, dtype="<i8").tobytes())
        if spec.get("multimodal", False):
            index.write(np.zeros(len(lengths), dtype="i1").tobytes())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: megatron_indexed_writer.py SPEC.json PREFIX")
    with open(sys.argv[1]) as f:
        write(json.load(f), sys.argv[2])
