"""The complete C programs (the blocks with a main) of README.md and the
manual in docs/ compile against this build, and run on the shipped 1-layer
model: the README's first program prints its shape, docs/circuits.md's the
planted sources of "keep ... in -> mind"."""

import glob
import os
import re
import subprocess
import sys
import tempfile

source, build, compiler = sys.argv[1:4]
model_dir = os.path.join(source, "examples", "models", "skip-trigram-1l")
model = os.path.join(model_dir, "model.safetensors")
pages = [os.path.join(source, "README.md")] + sorted(glob.glob(os.path.join(source, "docs", "*.md")))
programs = [(os.path.relpath(page, source), b) for page in pages
            for b in re.findall(r"```c\n(.*?)```", open(page, encoding="utf-8").read(), re.S)
            if "int main(" in b]
if len(programs) < 2:
    sys.exit(f"expected at least 2 complete C programs in README.md and docs/, found {len(programs)}")
env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(build, "lib"))
with tempfile.TemporaryDirectory() as tmp:
    outputs = []
    for i, (page, program) in enumerate(programs):
        c_file, exe = os.path.join(tmp, f"p{i}.c"), os.path.join(tmp, f"p{i}")
        open(c_file, "w").write(program)
        flags = os.environ.get("MI_SANITIZE_FLAGS", "").split()
        subprocess.run([compiler, "-std=c11", "-Wall", "-Wextra", "-Werror", *flags,
                        "-I", os.path.join(source, "include"), c_file,
                        "-L", os.path.join(build, "lib"), "-lmi", "-o", exe], check=True)
        args = [model] if "argc != 4" not in program else [
            model, os.path.join(model_dir, "vocab.txt"), "in"]
        run = subprocess.run([exe, *args], env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"{page}: its program failed: {run.stderr}")
        outputs.append(run.stdout)
text = "\n".join(outputs)
for expected in ["1 layers x 4 heads", "in <- put", "in <- keep", "L0H3  OV copying"]:
    if expected not in text:
        sys.exit(f"the README's and docs/' programs' output lacks {expected!r}:\n{text}")
print(f"{len(programs)} programs of the README and docs/ compile and run")
