"""The training corpus: the Python standard library source of the running interpreter,
split 95/5 by file (a stable hash of the relative path), with a manifest of file hashes."""

from __future__ import annotations

import hashlib
import json
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

HELD_OUT_PERCENT = 5


@dataclass(frozen=True)
class SourceFile:
    relpath: str
    sha256: str
    split: str  # "train" | "heldout"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relpath: str) -> str:
    bucket = int(hashlib.sha256(relpath.encode()).hexdigest()[:8], 16) % 100
    return "heldout" if bucket < HELD_OUT_PERCENT else "train"


def list_sources(root: Path | None = None) -> list[SourceFile]:
    root = root or stdlib_root()
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("site-packages/", "dist-packages/")):
            continue
        data = path.read_bytes()
        files.append(SourceFile(rel, hashlib.sha256(data).hexdigest(), split_of(rel)))
    return files


def read_text(relpath: str, root: Path | None = None) -> str:
    return ((root or stdlib_root()) / relpath).read_text(encoding="utf-8", errors="replace")


def write_manifest(files: list[SourceFile], path: Path) -> None:
    manifest = {
        "python": platform.python_version(),
        "root": str(stdlib_root()),
        "held_out_percent": HELD_OUT_PERCENT,
        "files": [f.__dict__ for f in files],
    }
    path.write_text(json.dumps(manifest, indent=1) + "\n")


def read_manifest(path: Path) -> list[SourceFile]:
    return [SourceFile(**f) for f in json.loads(path.read_text())["files"]]
