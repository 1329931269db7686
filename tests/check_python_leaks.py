"""Under the sanitizer build: the Python tests with LeakSanitizer on, failing
when a leaked block was allocated inside libmi (a model or circuit the
bindings never freed, whatever order they were closed in). The interpreter's
own blocks, which it does not free at exit, are not libmi's and are ignored."""

import os
import re
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=0", MI_PYTHON_NO_NUMPY="1",
           MI_EXPECT_NUMPY="0")
run = subprocess.run([sys.executable, "-m", "unittest", "discover", "-s",
                      os.path.join(here, "python")], env=env, capture_output=True, text=True)
sys.stderr.write(run.stderr[-3000:])
if run.returncode != 0 or not re.search(r"^OK", run.stderr, re.M):
    sys.exit("the Python tests failed")
# One report per leaked block: its stack up to the next blank line.
ours = [block for block in re.split(r"\n\s*\n", run.stderr)
        if "leak of" in block and re.search(r"\bin mi_\w+|libmi\.so", block)]
if ours:
    sys.exit("libmi memory leaked from Python:\n" + "\n\n".join(ours[:5]))
print("no leak allocated in libmi")
