"""policies/ imports neither torch nor ray, nor any other package of the repo."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import policies

FORBIDDEN = ("torch", "ray", "triton", "engine", "models", "kernels", "actors", "cluster")


def test_policies_import_without_torch_or_ray():
    names = [f"policies.{m.name}" for m in pkgutil.iter_modules(policies.__path__)]
    code = (f"import sys\nfor n in {names!r}: __import__(n)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(policies.__file__).parent.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_policies_source_names_no_forbidden_import():
    for path in Path(policies.__file__).parent.glob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in FORBIDDEN, f"{path.name}: {line}"
