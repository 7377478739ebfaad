"""Files only the user running Assay may read: the data directory (0700), the SQLite database and its
``-wal``/``-shm`` files, keys and other secrets (0600), whatever the umask.

The database holds credential hashes, agents' output and the audit trail. ``mkdir`` and SQLite take their
modes through the umask (0755 and 0644 under the usual 022), so the modes are set explicitly: a directory is
made 0700 when Assay creates it (a directory the user gave that exists already is left as it is), and a
private file is created 0600 before anything writes to it, so it is never readable by others, not even for
a moment. SQLite gives the ``-wal`` and ``-shm`` files the mode of the database file.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a directory (parents made as needed); 0700 if it is created here."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        path.chmod(PRIVATE_DIR)  # mkdir's mode goes through the umask; chmod's does not
    return path


def private_file(path: Path, *, create: bool = True) -> None:
    """``path`` 0600: created empty if missing (unless ``create`` is false), tightened if it is ours."""
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, PRIVATE_FILE)
    except FileNotFoundError:
        if create:
            raise
        return
    try:
        if os.fstat(fd).st_uid == os.geteuid():  # another user's file keeps its owner's choice
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
