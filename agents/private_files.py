"""Files Counterpoint keeps on disk are its owner's alone: 0600, in folders made 0700.

`memory.db`, `business.db`, the local span files and the agents' logs hold what tickets and
alerts said and what customers are. Whatever the umask, what is created here is readable by
the user who runs Counterpoint only. A file or folder that already exists keeps its mode:
it may be someone's deliberate choice (a shared volume, a folder given in a setting).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """`path` as a folder, creating it and any missing parents 0700."""
    missing: list[Path] = []
    at = path
    while not at.exists() and at != at.parent:
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """`path`, created empty and 0600 (in a 0700 folder) if it does not exist yet."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    return path


def open_private_append(path: Path) -> IO[bytes]:
    """`path` opened for appending bytes; created 0600 (in a 0700 folder) when missing."""
    private_dir(path.parent)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE), "ab")
