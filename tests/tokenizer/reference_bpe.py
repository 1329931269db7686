"""A reference byte-level BPE in plain Python, written for the tests and
sharing nothing with libmi: GPT-2's encoder.py (bytes_to_unicode, bpe(),
its pre-tokenizer pattern) plus the parts of Hugging Face's tokenizer.json
that libmi implements (added tokens, add_prefix_space, use_regex,
ignore_merges).

Text is bytes; it is decoded with 'surrogateescape', so each byte that is not
valid UTF-8 becomes a lone surrogate (category Cs: neither letter, number nor
space) and goes back to that byte when the piece is encoded again.

The pattern's classes: \\p{L} and \\p{N} from unicodedata's categories, \\s as
ECMAScript defines it (the reference encoder runs on node), spelled out
because Python's own \\s differs (it has U+001C..U+001F and U+0085, not U+FEFF).
"""

import json
import re
import sys
import unicodedata

JS_SPACE = "\t\n\u000b\u000c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


def _class_ranges(prefix):
    out, start = [], None
    for cp in range(sys.maxunicode + 2):
        inside = cp <= sys.maxunicode and unicodedata.category(chr(cp)).startswith(prefix)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            out.append(f"\\U{start:08x}-\\U{cp - 1:08x}" if cp - 1 > start else f"\\U{start:08x}")
            start = None
    return "".join(out)


_PATTERN = None


def pattern():
    global _PATTERN
    if _PATTERN is None:
        L, N, S = _class_ranges("L"), _class_ranges("N"), JS_SPACE
        _PATTERN = re.compile(
            f"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")
    return _PATTERN


def bytes_to_unicode():
    """GPT-2's table, as encoder.py writes it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def get_pairs(word):
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


class Encoder:
    """encoder: byte-level spelling -> id; merges: [(a, b)] in rank order."""

    def __init__(self, encoder, merges, added=(), add_prefix_space=False, use_regex=True,
                 ignore_merges=False):
        self.encoder = encoder
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        # added: (content, normalized); unnormalized ones are split out first
        self.added = [sorted(((c.encode(), i) for c, i, n in added if n == normalized),
                             key=lambda x: -len(x[0])) for normalized in (False, True)]
        self.add_prefix_space = add_prefix_space
        self.use_regex = use_regex
        self.ignore_merges = ignore_merges
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        if self.ignore_merges and token in self.encoder:
            return [token]
        word = tuple(token)
        pairs = get_pairs(word)
        while pairs:
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        self.cache[token] = list(word)
        return self.cache[token]

    def _segment(self, data):
        if self.add_prefix_space and not data.startswith(b" "):
            data = b" " + data
        text = data.decode("utf-8", "surrogateescape")
        pieces = pattern().findall(text) if self.use_regex else [text]
        ids = []
        for piece in pieces:
            token = "".join(self.byte_encoder[b] for b in piece.encode("utf-8", "surrogateescape"))
            ids.extend(self.encoder[t] for t in self.bpe(token))
        return ids

    def _split(self, data, level):
        if level == 2:
            return self._segment(data) if data else []
        ids, gap, i = [], 0, 0
        while i < len(data):
            hit = next(((c, t) for c, t in self.added[level] if data.startswith(c, i)), None)
            if hit is None:
                i += 1
                continue
            ids += self._split(data[gap:i], level + 1) + [hit[1]]
            i += len(hit[0])
            gap = i
        return ids + self._split(data[gap:], level + 1)

    def encode(self, data):
        return self._split(data, 0)


def from_files(encoder_json, merges_txt):
    """GPT-2's pair: encoder.json and vocab.bpe (first line '#version')."""
    with open(encoder_json, encoding="utf-8") as f:
        encoder = json.load(f)
    with open(merges_txt, encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    return Encoder(encoder, merges)


def from_tokenizer_json(obj):
    """A tokenizer.json object (only what libmi implements)."""
    model = obj["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    pre = obj["pre_tokenizer"]
    if pre["type"] == "Sequence":
        pre = pre["pretokenizers"][0]
    added = [(a["content"], a["id"], a.get("normalized", not a.get("special", False)))
             for a in obj.get("added_tokens") or []]
    return Encoder(model["vocab"], merges, added, pre.get("add_prefix_space", False),
                   pre.get("use_regex", True), model.get("ignore_merges", False))
