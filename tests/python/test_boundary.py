"""Wrong input at every public entry point: each call below must raise the
named exception (never succeed, never crash, never read past a buffer: the
sanitizer build runs this file with AddressSanitizer preloaded, so a read
past a numpy or ctypes buffer fails the run). A table maps every public
method of Model, Circuit and Tokenizer to its bad calls, and a test fails
when a public method has none, so a new method needs its own cases.

Inputs that must be converted rather than refused (non-contiguous,
negative strides, float16, big-endian, nested lists) are checked to give
exactly the weights their contiguous float32 twin gives."""

import array
import os
import unittest

import mi
from mi.arrays import numpy
from reference import tolist

SHAPE = dict(n_layers=2, n_heads=2, d_model=4, d_head=3, d_vocab=10, n_ctx=6)
HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = b"\n".join(b"t%d" % i for i in range(10)) + b"\n"


def model():
    m = mi.Model.create(parts=["ln", "qkv_bias", "pos_embed"], **SHAPE)
    m.load_vocab_bytes(VOCAB)
    return m


def rows(r, c, v=1.0):
    return [[v] * c for _ in range(r)]


# (method, call, exception, text the message must contain)
def model_cases(m):
    W_E = rows(10, 4)
    return {
        "set_weight": [
            (lambda: m.set_weight("W_E", rows(5, 4)), ValueError, "expected shape [10, 4]"),
            (lambda: m.set_weight("W_E", rows(2, 768)), ValueError, "got [2, 768]"),
            (lambda: m.set_weight("W_E", rows(4, 10)), ValueError, "[10, 4]"),  # transposed
            (lambda: m.set_weight("W_Q", [rows(4, 3)] * 2), ValueError, "[4, 3]"),
            (lambda: m.set_weight("W_E", [[[[1.0]]]]), ValueError, "got [1, 1, 1, 1]"),
            (lambda: m.set_weight("b_Q", rows(1, 3)), ValueError, "expected shape [3]"),
            (lambda: m.set_weight("W_E", [[1.0] * 4] * 9 + [[1.0] * 3]), ValueError, "ragged"),
            (lambda: m.set_weight("W_E", "abc"), TypeError, "W_E"),
            (lambda: m.set_weight("W_E", None), TypeError, "W_E"),
            (lambda: m.set_weight("W_E", [["a"] * 4] * 10), TypeError, "W_E"),
            (lambda: m.set_weight("W_E", [[True] * 4] * 10), TypeError, "bool"),
            (lambda: m.set_weight("W_E", array.array("b", [1] * 40)), ValueError, "[40]"),
            (lambda: m.set_weight("W_nope", W_E), ValueError, "unknown weight"),
            (lambda: m.set_weight("W_Q", rows(4, 3), layer=2), IndexError, "layer 2"),
            (lambda: m.set_weight("W_Q", rows(4, 3), head=-3), IndexError, "head -3"),
            (lambda: m.set_weight("W_E", W_E, layer=1), IndexError, "global"),
            (lambda: m.set_weight("W_Q", rows(4, 3), layer=1.0), TypeError, "integer"),
            (lambda: m.set_weight("W_Q", rows(4, 3), layer=2 ** 64), IndexError, "layer"),
            (lambda: m.set_weight("b_U", [1.0] * 10), mi.MiUnsupportedError, "b_U"),
        ],
        "weight": [
            (lambda: m.weight("W_Q", 2), IndexError, "layer 2"),
            (lambda: m.weight("W_Q", 0, "0"), TypeError, "integer"),
            (lambda: m.weight("b_U"), mi.MiUnsupportedError, "b_U"),
            (lambda: m.weight(3), ValueError, "unknown weight"),
        ],
        "stacked": [(lambda: m.stacked("W_x"), ValueError, "unknown weight")],
        "forward": [
            (lambda: m.forward([0, 10]), IndexError, "10 out of range"),
            (lambda: m.forward([2 ** 64 + 5]), IndexError, "out of range"),
            (lambda: m.forward([-1]), IndexError, "out of range"),
            (lambda: m.forward([1.5, 2]), TypeError, "integers"),
            (lambda: m.forward([True]), TypeError, "bool"),
            (lambda: m.forward([]), ValueError, "no tokens"),
            (lambda: m.forward(None), TypeError, "tokens"),
            (lambda: m.forward(5), TypeError, "sequence"),
            (lambda: m.forward([[[1]]]), ValueError, "2-D"),
            (lambda: m.forward([[1, 2], [3]]), ValueError, "ragged"),
            (lambda: m.forward(list(range(7))), mi.MiShapeError, "context"),
            (lambda: m.forward([1], ablate=[(0, 2)]), IndexError, "head 2"),
            (lambda: m.forward([1], ablate=[0]), TypeError, "pairs"),
            (lambda: m.forward([1], ablate={(0, 0): "x"}), TypeError, "number"),
            (lambda: m.forward([1], ablate={(0, 0): float("nan")}), mi.MiInvalidArgumentError,
             "finite"),
            (lambda: m.forward(["t1 t2", "t1"]), ValueError, "one length"),
        ],
        "__call__": [(lambda: m([11]), IndexError, "11")],
        "head_outputs": [(lambda: m.head_outputs([10]), IndexError, "10")],
        "loss": [(lambda: m.loss([1]), ValueError, "at least 2"),
                 (lambda: m.loss([1, 99]), IndexError, "99")],
        "test_prompt": [(lambda: m.test_prompt([1, 2], "zz", print_details=False),
                         mi.MiError, ""),
                        (lambda: m.test_prompt([1, 2], 10, print_details=False), IndexError,
                         "10"),
                        (lambda: m.test_prompt([[1, 2], [1, 2]], 1, print_details=False),
                         ValueError, "one prompt")],
        "attribute": [
            (lambda: m.attribute([1, 2], positions=[2]), IndexError, "2 out of range"),
            (lambda: m.attribute([1, 2], positions=[0.5]), TypeError, "integers"),
            (lambda: m.attribute([1, 2], token=[1]), ValueError, "1 tokens for 2"),
            (lambda: m.attribute([1, 2], token=10), IndexError, "token id"),
            (lambda: m.attribute([1, 2], max_order=-1), ValueError, "max_order"),
            (lambda: m.attribute([1, 2], positions=[]), ValueError, "empty"),
        ],
        "attention_scores": [(lambda: m.attention_scores([[1, 2], [3]]), ValueError, "ragged")],
        "qk": [(lambda: m.qk(0, 2), IndexError, "head 2"),
               (lambda: m.qk(0, 0, query="word"), ValueError, "unknown embedding")],
        "ov": [(lambda: m.ov(-3, 0), IndexError, "layer -3"),
               (lambda: m.ov(0, None), TypeError, "integer")],
        "path": [(lambda: m.path([(0, 5)]), IndexError, "head 5"),
                 (lambda: m.path([0]), TypeError, "pairs"),
                 (lambda: m.path([(1, 0), (0, 0)]), mi.MiError, "")],
        "k_composition_circuit": [(lambda: m.k_composition_circuit(0, 0, 2, 0), IndexError,
                                   "layer 2")],
        "composition_scores": [(lambda: m.composition_scores("X"), ValueError, "composition")],
        "composition_tables": [(lambda: m.composition_tables("QX"), ValueError, "composition")],
        "repeated_tokens": [(lambda: m.repeated_tokens(-1, 2), ValueError, "n_sequences"),
                            (lambda: m.repeated_tokens(1, 2 ** 64), OverflowError, "half")],
        "path_count": [(lambda: m.path_count(-1), ValueError, "max_order")],
        "paths": [(lambda: m.paths(top=-5), ValueError, "top"),
                  (lambda: m.paths(top=1, callback=print), ValueError, "callback")],
        "head_report": [(lambda: m.head_report(behaviour_sequences=-1), ValueError,
                         "behaviour_sequences")],
        "skip_trigrams": [(lambda: m.skip_trigrams(count=-1), ValueError, "count"),
                          (lambda: m.skip_trigrams(outputs_per_source=2 ** 64), OverflowError,
                           "outputs_per_source")],
        "token_str": [(lambda: m.token_str(10), IndexError, "token id 10"),
                      (lambda: m.token_str(2 ** 64 + 1), IndexError, "token id")],
        "token_text": [(lambda: m.token_text("1"), TypeError, "integer")],
        "token_id": [(lambda: m.token_id("zzz"), KeyError, "zzz"),
                     (lambda: m.token_id(3), TypeError, "str"),
                     (lambda: m.token_id("t\0"), KeyError, "t")],
        "tokenize": [(lambda: m.tokenize(5), TypeError, "text")],
        "to_tokens": [(lambda: m.to_tokens(["t1 t2", "t1"]), ValueError, "one length")],
        "to_str_tokens": [(lambda: m.to_str_tokens([10]), IndexError, "10")],
        "tokens": [(lambda: m.forward(m.tokens(object())), TypeError, "")],
        "load_vocab": [(lambda: m.load_vocab(os.path.join(HERE, "nope.txt")), mi.MiIOError,
                        "nope"),
                       (lambda: m.load_vocab(5), TypeError, "")],
        "load_vocab_bytes": [(lambda: m.load_vocab_bytes(5), TypeError, "")],
        "load_tokenizer": [(lambda: m.load_tokenizer(os.path.join(HERE, "nope.json")),
                            mi.MiIOError, "nope")],
        "load_tokenizer_bytes": [(lambda: m.load_tokenizer_bytes(b"{"), mi.MiFormatError, "")],
        "process": [(lambda: m.copy().process("fold"), ValueError, "unknown processing step"),
                    (lambda: m.copy().process(1 << 9), ValueError, "bits")],
        "head_roles": [(lambda: m.head_roles(no_such=1), TypeError, "unknown threshold"),
                       (lambda: m.head_roles(min_attention="x"), TypeError, "number"),
                       (lambda: m.head_roles(report={"behaviour_sequences": -1}), ValueError,
                        "behaviour_sequences"),
                       (lambda: m.head_roles(report=[1]), TypeError, "dict")],
        "html_report": [(lambda: m.html_report([10]), IndexError, "10"),
                        (lambda: m.html_report([[1]]), ValueError, "1-D"),
                        (lambda: m.html_report(trigrams=-1), ValueError, "trigrams"),
                        (lambda: m.html_report(title=5), TypeError, "title")],
        "skip_trigram_floor": [],
        "copy": [],  # no arguments
        "close": [],
        "composition_baseline": [],
        "direct": [],
        "create": [
            (lambda: mi.Model.create(1, 2, 4, 2, 0), mi.MiInvalidArgumentError, "d_vocab"),
            (lambda: mi.Model.create(1, 2, 4, 2, -1), ValueError, "d_vocab"),
            (lambda: mi.Model.create(1, 2, 4, 2, 2 ** 64), OverflowError, "d_vocab"),
            (lambda: mi.Model.create(1, 2, 4, 2, 5, parts=["lm"]), ValueError, "unknown part"),
            (lambda: mi.Model.create(1, 2, 4, 2, 5, positional="rotary"), ValueError, "rotary"),
        ],
        "from_arrays": [
            (lambda: mi.Model.from_arrays({"W_E": W_E}), ValueError, "missing"),
            (lambda: mi.Model.from_arrays([1]), TypeError, "dict"),
            (lambda: mi.Model.from_arrays({"W_Z": W_E}), ValueError, "unknown weights"),
            (lambda: mi.Model.from_arrays(full(W_Q=[rows(4, 3)] * 2)), ValueError,
             "4 dimensions"),
            (lambda: mi.Model.from_arrays(full(W_O=[[rows(3, 3)] * 2] * 2)), ValueError,
             "W_O: expected shape [2, 2, 3, 4]"),
            (lambda: mi.Model.from_arrays(full(b_Q=[[[0.0] * 3] * 2] * 2)), ValueError,
             "without"),
            (lambda: mi.Model.from_arrays(full(), n_layers=3), ValueError, "n_layers"),
            (lambda: mi.Model.from_arrays(full(W_U=rows(10, 4))), ValueError, "W_U"),
        ],
        "from_state_dict": [
            (lambda: mi.Model.from_state_dict([1]), TypeError, "mapping"),
            (lambda: mi.Model.from_state_dict({1: W_E}), TypeError, "str"),
            (lambda: mi.Model.from_state_dict({"embed.W_E": W_E}), mi.MiMissingTensorError,
             ""),
            (lambda: mi.Model.from_state_dict({"embed.W_E": "x"}), TypeError, "embed.W_E"),
            (lambda: mi.Model.from_state_dict({"embed.W_E": W_E}, cfg=5), TypeError, "cfg"),
        ],
        "load": [(lambda: mi.Model.load(5), TypeError, "path"),
                 (lambda: mi.Model.load(b""), mi.MiTruncatedError, ""),
                 (lambda: mi.Model.load(b"{}" * 8), mi.MiError, ""),
                 (lambda: mi.Model.load(os.path.join(HERE, "nope")), mi.MiIOError, "nope"),
                 (lambda: mi.Model.load(b"x" * 16, n_heads=-1), ValueError, "n_heads")],
    }


def full(**replace):
    """A complete from_arrays dict for SHAPE, with entries replaced."""
    L, H, D, d, V = 2, 2, 4, 3, 10
    w = {"W_E": rows(V, D), "W_Q": [[rows(D, d)] * H] * L, "W_K": [[rows(D, d)] * H] * L,
         "W_V": [[rows(D, d)] * H] * L, "W_O": [[rows(d, D)] * H] * L, "W_U": rows(D, V)}
    w.update(replace)
    return w


def circuit_cases(c):
    return {
        "entry": [(lambda: c.entry(10, 0), IndexError, "row 10"),
                  (lambda: c.entry(0, "1"), TypeError, "integer")],
        "rows": [(lambda: c.rows(3, 2), IndexError, "empty"),
                 (lambda: c.rows(0, 11), IndexError, "outside"),
                 (lambda: c.rows(0.0), TypeError, "integer")],
        "cols": [(lambda: c.cols(10), IndexError, "column 10")],
        "topk": [(lambda: c.topk(0), ValueError, "k = 0"),
                 (lambda: c.topk(11), ValueError, "k = 11"),
                 (lambda: c.topk(2, axis=2), ValueError, "axis"),
                 (lambda: c.topk(2, start=5, stop=5), IndexError, "empty")],
        "row_stats": [(lambda: c.row_stats(axis=2), ValueError, "axis"),
                      (lambda: c.row_stats(start=5, stop=5), IndexError, "empty"),
                      (lambda: c.row_stats(stop=11), IndexError, "outside"),
                      (lambda: c.row_stats(start=-2 ** 64), IndexError, "outside")],
        "singular_values": [(lambda: c.singular_values(-1), ValueError, "count"),
                            (lambda: c.singular_values(11), mi.MiInvalidArgumentError,
                             "count")],
        "eigenvalues": [(lambda: c.eigenvalues(2 ** 64), OverflowError, "count")],
        "diag_rank": [(lambda: c.diag_rank(4, 2), IndexError, "empty")],
        "compose": [(lambda: c.compose(rows(2, 2)), TypeError, "Circuit")],
        "from_factors": [(lambda: mi.Circuit.from_factors(rows(3, 2), rows(3, 2)), ValueError,
                          "columns"),
                         (lambda: mi.Circuit.from_factors([1.0, 2.0], rows(2, 2)), ValueError,
                          "matrix"),
                         (lambda: mi.Circuit.from_factors("a", rows(2, 2)), TypeError, "A")],
        "transpose": [], "dense": [], "frobenius_norm": [], "eigen_summary": [],
        "copying_score": [], "prev_token_share": [], "copying_accuracy": [], "close": [],
    }


def tokenizer_cases(t):
    return {
        "encode": [(lambda: t.encode(5), TypeError, "text")],
        "token_bytes": [(lambda: t.token_bytes(t.vocab_size), IndexError, "token id"),
                        (lambda: t.token_bytes(-t.vocab_size - 1), IndexError, "token id")],
        "decode": [(lambda: t.decode([99]), IndexError, "token id")],
        "load": [(lambda: mi.Tokenizer.load(os.path.join(HERE, "nope.json")), mi.MiIOError,
                  "nope")],
        "from_bytes": [(lambda: mi.Tokenizer.from_bytes(b"{"), mi.MiFormatError, "")],
        "close": [],
    }


def public_methods(cls):
    return {name for name in dir(cls) if not name.startswith("_") and
            callable(getattr(cls, name)) and not isinstance(getattr(cls, name), property)} | \
           ({"__call__"} if "__call__" in cls.__dict__ else set())


class BoundaryTest(unittest.TestCase):
    def run_cases(self, cases):
        for method, calls in cases.items():
            for i, (call, exc, text) in enumerate(calls):
                with self.subTest(method=method, case=i):
                    with self.assertRaises(exc) as caught:
                        call()
                    self.assertIn(text, str(caught.exception))

    def test_every_model_entry_point(self):
        with model() as m:
            cases = model_cases(m)
            missing = public_methods(mi.Model) - set(cases)
            self.assertEqual(missing, set(), "public Model methods without bad-input cases")
            self.run_cases(cases)
            # After all that the model is intact.
            self.assertEqual(tolist(m.weight("W_E")), [[0.0] * 4] * 10)

    def test_every_circuit_entry_point(self):
        with model() as m, m.ov(0, 0) as c:
            cases = circuit_cases(c)
            missing = public_methods(mi.Circuit) - set(cases)
            self.assertEqual(missing, set(), "public Circuit methods without bad-input cases")
            self.run_cases(cases)

    def test_every_tokenizer_entry_point(self):
        with mi.Tokenizer.from_bytes(VOCAB) as t:
            cases = tokenizer_cases(t)
            missing = public_methods(mi.Tokenizer) - set(cases)
            self.assertEqual(missing, set(), "public Tokenizer methods without bad-input cases")
            self.run_cases(cases)

    def test_module_functions(self):
        self.run_cases({
            "set_num_threads": [(lambda: mi.set_num_threads(-1), ValueError, "threads"),
                                (lambda: mi.set_num_threads(2 ** 64), OverflowError, "")],
            "set_output": [(lambda: mi.set_output("pandas"), ValueError, "pandas")],
        })

    def test_closed_handles_refuse_every_call(self):
        m = model()
        c = m.ov(0, 0)
        m.close()
        self.assertEqual(c.shape, (10, 10))  # the circuit keeps the model alive in libmi
        for call in (lambda: m.forward([1]), lambda: m.weight("W_E"), lambda: m.ov(0, 0),
                     lambda: m.copy(), lambda: m.set_weight("W_E", rows(10, 4)),
                     lambda: m.token_str(0)):
            with self.assertRaisesRegex(ValueError, "closed"):
                call()
        c.close()
        with self.assertRaisesRegex(ValueError, "closed"):
            c.entry(0, 0)


@unittest.skipIf(numpy is None, "needs numpy")
class ConversionTest(unittest.TestCase):
    """Layouts libmi cannot read in place are converted, to exactly the
    values their contiguous float32 twin gives."""

    def setUp(self):
        self.m = model()
        self.base = numpy.arange(40, dtype=numpy.float32).reshape(10, 4) / 8

    def tearDown(self):
        self.m.close()

    def assertSets(self, arr, want):
        self.m.set_weight("W_E", arr)
        self.assertTrue(numpy.array_equal(self.m.weight("W_E"), want))

    def test_layouts(self):
        big = numpy.zeros((10, 12), dtype=numpy.float32)
        big[:, ::3] = self.base
        self.assertSets(big[:, ::3], self.base)                        # column stride 3
        self.assertSets(self.base[::-1].copy()[::-1], self.base)       # negative row stride
        self.assertSets(self.base[:, ::-1][:, ::-1], self.base)
        self.assertSets(numpy.asfortranarray(self.base), self.base)    # column-major
        self.assertSets(self.base.astype(numpy.float16), self.base)    # eighths are exact
        self.assertSets(self.base.astype(">f4"), self.base)            # big-endian
        self.assertSets(self.base.astype(">f8"), self.base)
        self.assertSets(self.base.astype(numpy.int64) * 1, numpy.floor(self.base))
        self.assertSets(numpy.broadcast_to(self.base[0], (10, 4)),
                        numpy.broadcast_to(self.base[0], (10, 4)))  # stride 0
        self.assertSets(self.base.tolist(), self.base)
        self.assertSets(memoryview(self.base.copy()), self.base)

    def test_refused_dtypes(self):
        for bad, text in ((self.base.astype(object), "object"),
                          (self.base.astype(numpy.complex64), "complex"),
                          (self.base > 0, "bool"),
                          (numpy.zeros(10, dtype="U3"), "<U3")):
            with self.subTest(dtype=str(bad.dtype)):
                with self.assertRaisesRegex(TypeError, "W_E"):
                    self.m.set_weight("W_E", bad)
        with self.assertRaisesRegex(TypeError, "tokens"):
            self.m.forward(numpy.array([1.0, 2.0]))
        with self.assertRaisesRegex(IndexError, "out of range"):
            self.m.forward(numpy.array([2 ** 63], dtype=numpy.uint64))
        with self.assertRaisesRegex(IndexError, "out of range"):
            self.m.forward(numpy.array([-1], dtype=numpy.int8))

    def test_asarray_of_a_circuit(self):
        with self.m.ov(0, 0) as c:
            self.assertTrue(numpy.array_equal(numpy.asarray(c), c.dense()))
            self.assertEqual(numpy.asarray(c).shape, (10, 10))
            limit, mi.arrays.MATERIALISE_LIMIT = mi.arrays.MATERIALISE_LIMIT, 99
            try:
                with self.assertRaisesRegex(ValueError, "10 x 10 has 100 entries"):
                    numpy.asarray(c)
            finally:
                mi.arrays.MATERIALISE_LIMIT = limit


class PlainBufferTest(unittest.TestCase):
    """Without numpy too: buffers of other formats and byte orders."""

    def test_buffers(self):
        with model() as m:
            want = [[float(i * 4 + j) for j in range(4)] for i in range(10)]
            flat = array.array("d", [x for r in want for x in r])
            m.set_weight("W_E", memoryview(flat).cast("B").cast("d", (10, 4)))
            self.assertEqual(tolist(m.weight("W_E")), want)
            ints = array.array("q", [i for r in want for i in map(int, r)])
            m.set_weight("b_Q", array.array("q", [1, 2, 3]), 0, 0)
            self.assertEqual(tolist(m.weight("b_Q", 0, 0)), [1.0, 2.0, 3.0])
            with self.assertRaisesRegex(ValueError, "expected shape"):
                m.set_weight("W_E", ints)  # 1-D: the shape is checked, not guessed
            with self.assertRaisesRegex(TypeError, "format"):
                m.set_weight("b_Q", memoryview(b"abc").cast("c"), 0, 0)


if __name__ == "__main__":
    unittest.main()
