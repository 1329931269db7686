"""The mi command takes ordinary text on a model with GPT-2's vocabulary
(CTest: tokenizer_cli). A tiny random model with d_vocab 50257 is written as
safetensors beside copies of encoder.json (as vocab.json) and vocab.bpe (as
merges.txt); the ids `mi attribute --json` reports must be the Python
reference encoder's (reference_bpe.py), and `mi topk --token` must find a
token by its string with or without its leading space.

Usage: check_cli.py MI_PROGRAM DATA_DIR
"""

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_bpe  # noqa: E402

V, D, H, DH = 50257, 4, 1, 2


def write_model(path):
    rng = random.Random(3)
    tensors = {"embed.W_E": [V, D], "blocks.0.attn.W_Q": [H, D, DH],
               "blocks.0.attn.W_K": [H, D, DH], "blocks.0.attn.W_V": [H, D, DH],
               "blocks.0.attn.W_O": [H, DH, D], "unembed.W_U": [D, V]}
    header, blobs, offset = {}, [], 0
    for name, shape in tensors.items():
        n = 1
        for s in shape:
            n *= s
        blob = struct.pack(f"<{n}f", *(rng.uniform(-1, 1) for _ in range(n)))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def run(mi, *args):
    r = subprocess.run([mi, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"mi {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def main():
    mi, data = sys.argv[1], sys.argv[2]
    encoder, merges = os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")
    for p in (encoder, merges):
        if not os.path.exists(p):
            sys.exit(f"{p} is missing: run tools/fetch-test-data.sh")
    ref = reference_bpe.from_files(encoder, merges)
    with open(encoder, encoding="utf-8") as f:
        ids = json.load(f)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model.safetensors")
        write_model(model)
        shutil.copy(encoder, os.path.join(tmp, "vocab.json"))
        shutil.copy(merges, os.path.join(tmp, "merges.txt"))
        for text in ["When Mary and John went to the store, John gave a drink to",
                     "The quick brown fox jumps over the lazy dog.\nHello world"]:
            for bos in (False, True):
                args = ["attribute", model, text, "--json"] + (["--prepend-bos"] if bos else [])
                got = [t["id"] for t in json.loads(run(mi, *args))["tokens"]]
                want = ([50256] if bos else []) + ref.encode(text.encode())
                if got != want:
                    failures.append(f"attribute {text!r} bos={bos}: {got} != {want}")
            human = run(mi, "attribute", model, text)
            if f"input: {len(ref.encode(text.encode()))} tokens:" not in human:
                failures.append(f"attribute {text!r} does not print the tokens it used")
        for given, token in [(" Mary", "ĠMary"), ("Mary", "Mary"), ("jumps", "Ġjumps"),
                             (" jumps", "Ġjumps"), ("ĠJohn", "ĠJohn"), ("world", "world")]:
            out = json.loads(run(mi, "topk", model, "--circuit", "direct", "--token", given,
                                 "-k", "1", "--json"))
            if [line["line"] for line in out["lines"]] != [ids[token]]:
                failures.append(f"topk --token {given!r} does not pick {token} ({ids[token]})")
    for f in failures:
        print("FAIL:", f)
    if failures:
        sys.exit(1)
    print("tokenizer_cli: mi attribute takes ordinary text; topk --token finds tokens")


if __name__ == "__main__":
    main()
