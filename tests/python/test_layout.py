"""Every ctypes structure in the bindings has mi.h's exact layout: a C
program compiled here against the header prints sizeof, and each field's
offsetof and size, and they must equal what ctypes lays out."""

import ctypes
import os
import shutil
import subprocess
import tempfile
import unittest

from mi import _native

HEADER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include")
STRUCTS = {
    "mi_config": _native.Config, "mi_load_options": _native.LoadOptions,
    "mi_eigen_summary": _native.EigenSummary, "mi_head_report": _native.HeadReport,
    "mi_report_options": _native.ReportOptions, "mi_forward_extras": _native.ForwardExtras,
    "mi_attribution_part": _native.AttributionPart,
    "mi_attribution_options": _native.AttributionOptions, "mi_path": _native.Path,
    "mi_skip_trigram": _native.SkipTrigram,
    "mi_skip_trigram_options": _native.SkipTrigramOptions,
    "mi_role_options": _native.RoleOptions, "mi_head_roles": _native.HeadRoles,
    "mi_role_partner": _native.RolePartner, "mi_html_options": _native.HtmlOptions,
}


class LayoutTest(unittest.TestCase):
    def test_structs_match_the_header(self):
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        self.assertIsNotNone(cc, "a C compiler is needed to read mi.h's layouts")
        lines, want = [], []
        for cname, struct in STRUCTS.items():
            lines.append(f'printf("%zu\\n", sizeof({cname}));')
            want.append(ctypes.sizeof(struct))
            for field, _ in struct._fields_:
                lines.append(f'printf("%zu\\n", offsetof({cname}, {field}));')
                lines.append(f'printf("%zu\\n", sizeof((({cname} *)0)->{field}));')
                want += [getattr(struct, field).offset, getattr(struct, field).size]
        source = ("#include <stddef.h>\n#include <stdio.h>\n#include <mi.h>\n"
                  "int main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n")
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "layout.c"), "w") as f:
                f.write(source)
            exe = os.path.join(tmp, "layout")
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            subprocess.run([cc, "-std=c11", "-I", HEADER_DIR, "-o", exe,
                            os.path.join(tmp, "layout.c")], check=True, env=env)
            out = subprocess.run([exe], check=True, capture_output=True, text=True, env=env)
        self.assertEqual([int(x) for x in out.stdout.split()], want)


if __name__ == "__main__":
    unittest.main()
