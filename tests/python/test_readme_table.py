"""The README's "Coming from TransformerLens" table is executed: every code
span of its libmi column runs here on the shipped induction-2l model (rows
saying "not in libmi" have none to run), and the README's Python example
too. Without numpy the spans that need it (FactoredMatrix, [:, l] slices)
must fail with an ImportError or TypeError that says so; all others run."""

import io
import os
import re
import unittest
from contextlib import redirect_stdout

import mi
from mi.arrays import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "torch")


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def table_rows():
    text = readme()
    section = text[text.index("### Coming from TransformerLens"):]
    section = section[:section.index("\n\n", section.index("|---|"))]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:]]


class ReadmeTableTest(unittest.TestCase):
    def setUp(self):
        self.cwd = os.getcwd()
        os.chdir(ROOT)  # the table's paths are relative to the source tree
        from test_state_dict import TL_CFG, read_safetensors
        self.model = mi.Model.load("examples/models/induction-2l")
        self.names = {
            "mi": mi, "model": self.model, "l": 1, "h": 0,
            "tokens": self.model.repeated_tokens(4, 6), "text": "ba be bi ba be",
            "sd": read_safetensors(os.path.join(DATA, "tl_standard_f32.safetensors")),
            "cfg": TL_CFG, "prompt": "ba be bi ba", "answer": "be"}

    def tearDown(self):
        mi.set_output(None)
        self.model.close()
        os.chdir(self.cwd)

    def run_span(self, code):
        with redirect_stdout(io.StringIO()):
            try:
                eval(compile(code, "README", "eval"), self.names)
            except SyntaxError:
                exec(compile(code, "README", "exec"), self.names)

    def test_every_libmi_line_runs(self):
        rows = table_rows()
        self.assertGreater(len(rows), 20)
        ran = 0
        for theirs, ours in rows:
            if ours.startswith("not in libmi"):
                continue
            spans = re.findall(r"`([^`]+)`", ours)
            self.assertTrue(spans, f"row {theirs!r} has no libmi code")
            for code in spans:
                with self.subTest(code=code):
                    needs_numpy = any(k in code for k in ("OV", "QK", "[:,", "svd"))
                    if numpy is None and needs_numpy:
                        with self.assertRaisesRegex((ImportError, TypeError), "numpy|indices"):
                            self.run_span(code)
                    elif code.startswith("mi.set_output") and not self.has_torch():
                        self.run_span('mi.set_output("list")')
                    else:
                        self.run_span(code)
                    ran += 1
        self.assertGreater(ran, 30)

    @staticmethod
    def has_torch():
        try:
            import torch  # noqa: F401
        except ImportError:
            return False
        return True

    @unittest.skipIf(numpy is None, "the README's example slices arrays: needs numpy")
    def test_the_python_example_runs(self):
        text = readme()
        section = text[text.index("## Python\n"):text.index("### Coming from TransformerLens")]
        block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        out = io.StringIO()
        with redirect_stdout(out):
            exec(compile(block, "README", "exec"), {})
        clean, ablated = map(float, out.getvalue().split())
        comment = re.search(r"# ([\d.]+) -> ([\d.]+) nats", block)
        self.assertAlmostEqual(clean, float(comment.group(1)), places=2)
        self.assertAlmostEqual(ablated, float(comment.group(2)), places=1)


if __name__ == "__main__":
    unittest.main()
