"""Text in through the Python bindings: Tokenizer, Model.tokenize and
to_str_tokens, and text accepted wherever tokens are (forward, attribute,
attention_scores). Expected ids come from GPT-2 itself (the ids the issue
quotes) or from the vocabulary file's lines, never from libmi's output."""

import json
import os
import unittest

import mi
from reference import tolist

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
GPT2 = os.path.join(ROOT, "tests", "data", "gpt2")
MODELS = os.path.join(ROOT, "examples", "models")


def gpt2_pair():
    paths = [os.path.join(GPT2, n) for n in ("encoder.json", "vocab.bpe")]
    for p in paths:
        if not os.path.exists(p):
            raise AssertionError(f"{p} is missing: run tools/fetch-test-data.sh")
    return paths


def shipped(name):
    model = mi.Model.load(os.path.join(MODELS, name, "model.safetensors"))
    with open(os.path.join(MODELS, name, "vocab.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    return model, lines


class TokenizerTest(unittest.TestCase):
    def test_gpt2_sentences(self):
        with mi.Tokenizer.load(*gpt2_pair()) as tok:
            self.assertEqual(tok.encode("Hello world"), [15496, 995])
            self.assertEqual(tok.encode(b"Hello world", prepend_bos=True), [50256, 15496, 995])
            self.assertEqual(tok.bos, 50256)
            self.assertEqual(tok.vocab_size, 50257)
            self.assertEqual(tok.token_bytes(995), b" world")
            for text in ["When Mary and John went to the store, John gave a drink to",
                         "tabs\tand\nnewlines  ", "日本語 😀 café"]:
                self.assertEqual(tok.decode(tok.encode(text)), text.encode())
            # bytes that are not UTF-8, as bytes or as surrogateescape'd str
            bad = b"a\xff\xc3(b\xed\xa0\x80"
            self.assertEqual(tok.decode(tok.encode(bad)), bad)
            self.assertEqual(tok.encode(bad.decode("utf-8", "surrogateescape")), tok.encode(bad))
            with self.assertRaises(TypeError):
                tok.encode(42)
        with self.assertRaises(ValueError):
            tok.encode("closed")

    def test_model_tokenize_and_to_str_tokens(self):
        with mi.Model.create(n_layers=1, n_heads=1, d_model=2, d_head=1, d_vocab=50257) as m:
            with self.assertRaises(mi.MiError) as e:
                m.tokenize("no vocabulary")
            self.assertEqual(e.exception.status, -11)  # MI_ERR_STATE
            m.load_tokenizer(*gpt2_pair())
            self.assertEqual(m.tokenize("Hello world"), [15496, 995])
            self.assertEqual(m.tokenize("Hello world", prepend_bos=True), [50256, 15496, 995])
            self.assertEqual(m.to_str_tokens("Hello world"), ["Hello", " world"])
            self.assertEqual(m.to_str_tokens([15496, 995]), ["Hello", " world"])
            self.assertEqual(m.to_str_tokens("Hi", prepend_bos=True), ["<|endoftext|>", "Hi"])
            # a vocab.json alone has strings, not a tokenizer
            m.load_vocab(gpt2_pair()[0])
            with self.assertRaises(mi.MiError) as e:
                m.tokenize("Hello")
            self.assertIn("merges", str(e.exception))

    def test_refused_tokenizers_name_what_they_are(self):
        unigram = json.dumps({"model": {"type": "Unigram", "vocab": [["a", -1.0]]}}).encode()
        with self.assertRaises(mi.MiError) as e:
            mi.Tokenizer.from_bytes(unigram)
        self.assertEqual(e.exception.status, -6)  # MI_ERR_UNSUPPORTED
        self.assertIn("Unigram", str(e.exception))

    def test_text_wherever_tokens_go(self):
        model, lines = shipped("induction-2l")
        with model:
            words = [w for w in lines[1:] if w][:4]
            text = " ".join(words + words)
            ids = [lines.index(w) for w in words + words]
            self.assertEqual(model.tokenize(text), ids)
            self.assertEqual(model.tokenize(text, prepend_bos=True), [lines.index("<bos>")] + ids)
            self.assertEqual(model.to_str_tokens(text), words + words)
            self.assertEqual(tolist(model.forward(text)), tolist(model.forward(ids)))
            full = model.forward(text, patterns=True, prepend_bos=True)
            self.assertEqual(tolist(full.logits), tolist(model.forward([0] + ids)))
            by_text = model.attribute(text, positions=[len(ids) - 1], token=words[1])
            by_ids = model.attribute(ids, positions=[len(ids) - 1], token=lines.index(words[1]))
            self.assertEqual([p.token_logit for p in by_text], [p.token_logit for p in by_ids])
            self.assertEqual(tolist(model.attention_scores([text])),
                             tolist(model.attention_scores([ids])))
            with self.assertRaises(mi.MiError) as e:
                model.tokenize("zzzq")
            self.assertIn("'zzzq'", str(e.exception))
            with self.assertRaises(ValueError):
                model.attribute(ids, token=" ".join(words[:2]))


if __name__ == "__main__":
    unittest.main()
