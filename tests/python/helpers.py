"""Plain-Python helpers (no libmi, no numpy) shared by the bindings' tests
here and the `mi` command's tests (tools/mi/test_mi.py puts this folder on
sys.path), so both write test files and reference statistics one way."""

import json
import math
import struct


def write_safetensors(path, tensors, metadata=None):
    """A minimal float32 safetensors writer: {name: (shape, flat values)}."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def z_rows(matrix):
    """Each row as z-scores (population sd), or None for a row with no spread."""
    out = []
    for row in matrix:
        mean = sum(row) / len(row)
        var = sum((x - mean) ** 2 for x in row) / len(row)
        out.append([(x - mean) / math.sqrt(var) for x in row] if var > 0 else None)
    return out
