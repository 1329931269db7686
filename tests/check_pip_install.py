"""`pip install --no-build-isolation ./bindings/python` works: install a copy
of the package (so the build leaves nothing in the source tree) into a
temporary target, then import it from there, away from the source tree."""

import os
import shutil
import subprocess
import sys
import tempfile

source = os.path.join(sys.argv[1], "bindings", "python")
with tempfile.TemporaryDirectory() as tmp:
    copy = os.path.join(tmp, "src")
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info",
                                                                "build"))
    target = os.path.join(tmp, "target")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation",
                    "--no-deps", "--no-index", "--disable-pip-version-check", "--root-user-action=ignore", "--target", target,
                    copy], check=True)
    env = dict(os.environ, PYTHONPATH=target)
    code = ("import mi, mi.plot, os; assert os.path.dirname(mi.__file__).startswith(%r); "
            "print('installed', mi.version(), mi.__file__)" % target)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp)
