"""Every MI_API declaration in mi.h has a doc comment right above it."""

import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
missing = []
for match in re.finditer(r"^MI_API [^;]*?\b(mi_\w+)\s*\(", text, re.M):
    before = text[: match.start()].rstrip()
    if not before.endswith("*/"):
        missing.append(match.group(1))
if missing:
    print("undocumented in mi.h:", ", ".join(missing))
    sys.exit(1)
print("every public function in mi.h has a doc comment")
