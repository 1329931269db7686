"""mi/enums.py, the one place the bindings write C numbers, against mi.h:
every enum of the header is read here (values, sequential members, 1u << n
and ORs of earlier names) and each Python constant must equal its C one."""

import os
import re
import unittest

from mi import enums

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include", "mi.h")


def header_enums():
    """{C name: value} of every enum member in mi.h."""
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    values = {}
    for body in re.findall(r"\benum\b[^{;]*\{([^}]*)\}", text):
        nxt = 0
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            name, _, expr = item.partition("=")
            name = name.strip()
            if expr:
                expr = re.sub(r"(\d+)u\b", r"\1", expr)
                nxt = eval(expr, {}, dict(values))  # integers, <<, |, names: mi.h only
            values[name] = nxt
            nxt += 1
    return values


class EnumTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = header_enums()

    def check(self, mapping, prefix, spell=str.upper):
        for name, value in mapping.items():
            with self.subTest(name=name):
                self.assertEqual(self.c[prefix + spell(name)], value)

    def test_statuses(self):
        for name, value in enums.STATUS.items():
            self.assertEqual(self.c["MI_OK" if name == "ok" else "MI_ERR_" + name.upper()], value)
        # Every status of mi.h has a name here, so each gets its exception class.
        self.assertEqual(sorted(v for k, v in self.c.items() if k.startswith("MI_ERR_")),
                         sorted(v for k, v in enums.STATUS.items() if k != "ok"))

    def test_weights_in_enum_order(self):
        c_names = ["MI_W_E", "MI_W_POS", "MI_W_Q", "MI_W_K", "MI_W_V", "MI_W_O", "MI_B_Q",
                   "MI_B_K", "MI_B_V", "MI_B_O", "MI_W_U", "MI_B_U", "MI_LN1_W", "MI_LN1_B",
                   "MI_LNF_W", "MI_LNF_B"]
        self.assertEqual([self.c[n] for n in c_names], list(range(len(enums.WEIGHTS))))
        self.assertEqual(self.c["MI_WEIGHT_COUNT"], len(enums.WEIGHTS))

    def test_flags_and_kinds(self):
        self.check(enums.PARTS, "MI_PART_")
        self.check(enums.PROCESS, "MI_PROCESS_")
        self.check(enums.POSITIONAL, "MI_POSITIONAL_")
        self.check({v: k for k, v in enums.LAYOUTS.items()}, "MI_LAYOUT_")
        self.check(enums.EMBEDDINGS, "MI_EMBED_")
        self.check({v: k for k, v in enums.SOURCES.items()}, "MI_SOURCE_")
        roles = ["MI_ROLE_NONE", "MI_ROLE_PREV_TOKEN", "MI_ROLE_DUPLICATE_TOKEN",
                 "MI_ROLE_INDUCTION", "MI_ROLE_COPYING"]
        self.assertEqual([self.c[n] for n in roles], list(range(len(enums.ROLES))))
        self.assertEqual(self.c["MI_ROLE_COUNT"], len(enums.ROLES))
        for name, value in enums.COMPOSITIONS.items():
            self.assertEqual(self.c["MI_COMPOSE_" + name], value)
        pairs = {"DTYPE_F32": "MI_DTYPE_F32", "DTYPE_F64": "MI_DTYPE_F64",
                 "DTYPE_F16": "MI_DTYPE_F16", "DTYPE_BF16": "MI_DTYPE_BF16",
                 "LOAD_NO_CONFIG": "MI_LOAD_NO_CONFIG", "LOAD_NO_VOCAB": "MI_LOAD_NO_VOCAB",
                 "QK_BIAS": "MI_QK_BIAS", "QK_SCALE": "MI_QK_SCALE",
                 "TOPK_COLUMNS": "MI_TOPK_COLUMNS", "TOPK_SMALLEST": "MI_TOPK_SMALLEST",
                 "ATTRIBUTE_FULL_LOGITS": "MI_ATTRIBUTE_FULL_LOGITS",
                 "TOKENIZE_PREPEND_BOS": "MI_TOKENIZE_PREPEND_BOS"}
        for py, c in pairs.items():
            self.assertEqual(getattr(enums, py), self.c[c], py)


if __name__ == "__main__":
    unittest.main()
