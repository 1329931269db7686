"""The `mi` command lines of README.md and docs/*.md run, and print what the
pages say they print. In each ```sh block a line starting
`build/tools/mi/mi ` (with its `\\` continuations) is a command; the `#   `
lines right under it are text its stdout must contain (whitespace runs
compared as one space). Commands run in a scratch directory that links
`examples/` to the source tree's, so files they write (--html) land there."""

import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile

source, mi = sys.argv[1:3]
PREFIX = "build/tools/mi/mi "


def commands(page):
    """(line number, argv, [expected text]) of each command in the page's sh blocks."""
    found = []
    for block in re.finditer(r"^```sh\n(.*?)^```", open(page, encoding="utf-8").read(), re.S | re.M):
        first = block.string.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).split("\n")
        i = 0
        while i < len(lines):
            if not lines[i].startswith(PREFIX):
                i += 1
                continue
            start, text = i, lines[i]
            while text.endswith("\\"):
                i += 1
                text = text[:-1] + lines[i]
            i += 1
            expected = []
            while i < len(lines) and lines[i].startswith("#   "):
                expected.append(" ".join(lines[i][4:].split()))
                i += 1
            found.append((first + start, shlex.split(text, comments=True), expected))
    return found


def main():
    pages = [os.path.join(source, "README.md")] + sorted(glob.glob(os.path.join(source, "docs", "*.md")))
    failures, ran, checked = [], 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(os.path.join(source, "examples"), os.path.join(tmp, "examples"))
        for page in pages:
            name = os.path.relpath(page, source)
            for line, argv, expected in commands(page):
                run = subprocess.run([mi, *argv[1:]], cwd=tmp, capture_output=True, text=True,
                                     timeout=300)
                ran += 1
                where = f"{name}:{line}: {shlex.join(argv)}"
                if run.returncode != 0:
                    failures.append(f"{where}: exit {run.returncode}: {run.stderr.strip()}")
                    continue
                out = " ".join(run.stdout.split())
                for text in expected:
                    checked += 1
                    if text not in out:
                        failures.append(f"{where}: output lacks {text!r}")
    # The pages hold more than this; fewer means the parsing above broke.
    if ran < 8 or checked < 10:
        failures.append(f"only {ran} commands and {checked} expected lines found")
    if failures:
        sys.exit("\n".join(failures))
    print(f"{ran} mi commands of the README and docs/ ran; {checked} expected lines found")


main()
