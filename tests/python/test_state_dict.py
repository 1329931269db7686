"""State dicts and configs in memory (Model.from_state_dict) and the stacked
TransformerLens accessors, against the committed fixtures that torch.save
wrote (tests/data/torch): the same weights from a dict give the same logits
as from the file, bit for bit. The dicts here are built from the
safetensors twins without torch (numpy arrays, or nested lists without
numpy); test_torch_interop does the same with torch tensors."""

import json
import os
import struct
import tempfile
import types
import unittest

import mi
from mi.arrays import numpy
from reference import tolist

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                    "torch")
TOKENS = [0, 5, 3, 17, 5, 3, 9, 1]
TL_CFG = {"n_layers": 2, "n_heads": 2, "d_model": 8, "d_head": 4, "d_vocab": 20, "n_ctx": 12,
          "eps": 1e-5, "positional_embedding_type": "standard", "normalization_type": "LN",
          "attn_only": True, "act_fn": None, "device": "cpu"}


def read_safetensors(path):
    """name -> array (numpy, or nested lists) of an F32 safetensors file, by
    the format's definition (independent of libmi's reader)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        lo, hi = entry["data_offsets"]
        raw = data[8 + n + lo:8 + n + hi]
        shape = entry["shape"]
        if entry["dtype"] == "BOOL":  # TransformerLens's attention masks: buffers
            flat = [b != 0 for b in raw]
            out[name] = numpy.array(flat).reshape(shape) if numpy is not None else \
                mi.arrays.nest(flat, shape)
            continue
        assert entry["dtype"] == "F32", entry
        if numpy is not None:
            out[name] = numpy.frombuffer(raw, dtype="<f4").reshape(shape).copy()
        else:
            flat = list(struct.unpack(f"<{len(raw) // 4}f", raw))
            out[name] = mi.arrays.nest(flat, shape) if shape else flat[0]
    return out


class StateDictTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sd = read_safetensors(os.path.join(DATA, "tl_standard_f32.safetensors"))
        cls.file = mi.Model.load(os.path.join(DATA, "tl_standard_f32.safetensors"))
        cls.want = tolist(cls.file.forward(TOKENS))

    @classmethod
    def tearDownClass(cls):
        cls.file.close()

    def test_transformerlens_dict_gives_the_files_logits(self):
        sd = dict(self.sd)
        # TransformerLens's buffers ride along in a real state dict.
        sd["blocks.0.attn.IGNORE"] = -1e5
        self.assertIn("blocks.0.attn.mask", sd)
        for cfg in (TL_CFG, None, types.SimpleNamespace(**TL_CFG)):
            with mi.Model.from_state_dict(sd, cfg) as m:
                self.assertEqual(m.layout, "transformerlens")
                self.assertEqual(m.processing, {"fold_ln"})
                self.assertEqual(tolist(m.forward(TOKENS)), self.want)

    def test_config_json_path(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "config.json")
            with open(path, "w") as f:
                json.dump({k: v for k, v in TL_CFG.items() if k != "act_fn"}, f)
            with mi.Model.from_state_dict(self.sd, path) as m:
                self.assertEqual(tolist(m.forward(TOKENS)), self.want)

    def test_the_config_is_checked_against_the_tensors(self):
        with self.assertRaisesRegex(mi.MiShapeError, "d_vocab"):
            mi.Model.from_state_dict(self.sd, dict(TL_CFG, d_vocab=21))
        with self.assertRaisesRegex(mi.MiError, "n_heads"):
            mi.Model.from_state_dict(self.sd, dict(TL_CFG, n_heads=4))
        with self.assertRaisesRegex(mi.MiUnsupportedError, "rotary"):
            mi.Model.from_state_dict(self.sd, dict(TL_CFG, positional_embedding_type="rotary"))
        with mi.Model.from_state_dict(self.sd, dict(TL_CFG, eps=0.25)) as m:
            self.assertEqual(m.config["ln_eps"], 0.25)
            self.assertNotEqual(tolist(m.forward(TOKENS)), self.want)

    def test_missing_and_misshapen_tensors_are_named(self):
        sd = dict(self.sd)
        del sd["blocks.1.attn.W_O"]
        with self.assertRaisesRegex(mi.MiMissingTensorError, "blocks.1.attn.W_O"):
            mi.Model.from_state_dict(sd, TL_CFG)
        sd = dict(self.sd)
        sd["blocks.0.attn.W_Q"] = tolist(self.sd["blocks.0.attn.W_Q"])[0]  # no head axis
        with self.assertRaisesRegex(mi.MiShapeError, "blocks.0.attn.W_Q"):
            mi.Model.from_state_dict(sd, TL_CFG)

    def test_gpt2_names(self):
        sd = read_safetensors(os.path.join(DATA, "gpt2_f32.safetensors"))
        sd["h.0.attn.bias"] = [[[[1.0]]]]
        with mi.Model.load(os.path.join(DATA, "gpt2_f32.safetensors"), n_heads=2) as f, \
                mi.Model.from_state_dict(sd, {"n_head": 2, "model_type": "gpt2",
                                              "attn_only": True}) as m:
            self.assertEqual(m.layout, "gpt2")
            tokens = [1, 2, 3]
            self.assertEqual(tolist(m.forward(tokens)), tolist(f.forward(tokens)))
        with self.assertRaisesRegex(mi.MiError, "n_head"):
            mi.Model.from_state_dict(sd)

    def test_stacked_accessors_have_transformerlens_shapes(self):
        with mi.Model.from_state_dict(self.sd, TL_CFG, process=None) as m:
            for name, key in (("W_Q", "attn.W_Q"), ("W_K", "attn.W_K"), ("W_V", "attn.W_V"),
                              ("W_O", "attn.W_O"), ("b_Q", "attn.b_Q"), ("b_K", "attn.b_K"),
                              ("b_V", "attn.b_V"), ("b_O", "attn.b_O")):
                stacked = tolist(getattr(m, name))
                self.assertEqual(stacked, [tolist(self.sd[f"blocks.{l}.{key}"])
                                           for l in range(2)], name)
            self.assertEqual(tolist(m.W_E), tolist(self.sd["embed.W_E"]))
            self.assertEqual(tolist(m.W_pos), tolist(self.sd["pos_embed.W_pos"]))
            self.assertEqual(tolist(m.W_U), tolist(self.sd["unembed.W_U"]))
            self.assertEqual(tolist(m.b_U), tolist(self.sd["unembed.b_U"]))
            self.assertEqual(m.cfg.n_heads, 2)
            self.assertEqual(m.cfg.positional_embedding_type, "standard")

    def test_grouped_heads_repeat_as_transformerlens_does(self):
        with mi.Model.create(n_layers=1, n_heads=4, n_kv_heads=2, d_model=4, d_head=2,
                             d_vocab=5) as m:
            for g in range(2):
                m.set_weight("W_K", [[g + 1.0] * 2] * 4, 0, g)
            self.assertEqual([row[0][0] for row in tolist(m.W_K)[0]], [1.0, 1.0, 2.0, 2.0])
            self.assertEqual(tolist(m.b_Q), [[[0.0] * 2] * 4])  # absent bias: zeros


if __name__ == "__main__":
    unittest.main()
