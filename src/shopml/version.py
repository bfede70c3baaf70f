"""Which version of shopml's code produced a result: for training keys and pipeline caches."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import shopml

# Packages whose code does not change what the pipeline computes.
NOT_PIPELINE_CODE = ("serving", "monitoring")


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and a hash of the code a trained model or pipeline result depends on.

    A hash of the source rather than the git commit: it changes exactly when that code does
    (committed or not), it works in an installed package without git, and edits to code the
    pipeline does not run (the CLI, the serving app) do not throw away finished work.
    ``SHOPML_CODE_VERSION``, when set, is used instead (a build that names itself).
    """
    pinned = os.environ.get("SHOPML_CODE_VERSION")
    if pinned:
        return pinned
    root = Path(shopml.__file__).resolve().parent
    h = hashlib.sha256(shopml.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in NOT_PIPELINE_CODE or rel.name == "cli.py":
            continue
        h.update(str(rel).encode())
        h.update(path.read_bytes())
    return f"{shopml.__version__}+{h.hexdigest()[:16]}"
