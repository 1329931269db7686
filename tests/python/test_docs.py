"""Every public class, function, method and property of the package has a
docstring, the array-returning ones state their shapes ([...]), and
help(mi) lists every name of mi.__all__."""

import inspect
import pydoc
import unittest

import mi

# Methods and properties that return arrays: their docstrings give shapes.
SHAPED = {"forward", "loss", "head_outputs", "weight", "stacked", "W_E", "W_pos", "W_Q",
          "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "W_U", "b_U", "OV", "QK", "qk", "ov",
          "direct", "path", "composition_scores", "repeated_tokens", "attention_scores",
          "from_arrays", "from_state_dict", "to_tokens", "svd", "eig", "eigenvalues",
          "eigenvectors", "AB", "BA", "norm", "shape"}


def public(cls):
    for name, value in inspect.getmembers(cls):
        if not name.startswith("_") or name == "__call__":
            yield name, value


class DocsTest(unittest.TestCase):
    def test_every_public_name_is_documented(self):
        for name in mi.__all__:
            obj = getattr(mi, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                with self.subTest(name=name):
                    self.assertTrue(inspect.getdoc(obj), f"mi.{name} has no docstring")

    def test_every_method_is_documented_with_shapes(self):
        for cls in (mi.Model, mi.Circuit, mi.FactoredMatrix, mi.Tokenizer):
            for name, value in public(cls):
                if isinstance(value, (int, str, dict, list)) or name in ("count", "index"):
                    continue
                doc = inspect.getdoc(value) or ""
                with self.subTest(cls=cls.__name__, name=name):
                    self.assertTrue(doc, f"{cls.__name__}.{name} has no docstring")
                    if name in SHAPED and cls is not mi.Tokenizer:
                        self.assertRegex(doc, r"\[|×| x ", f"{cls.__name__}.{name}: no shape")

    def test_help_lists_the_public_names(self):
        text = pydoc.render_doc(mi, renderer=pydoc.plaintext)
        for name in mi.__all__:
            if inspect.isclass(getattr(mi, name)) or inspect.isfunction(getattr(mi, name)):
                self.assertIn(name, text)


if __name__ == "__main__":
    unittest.main()
