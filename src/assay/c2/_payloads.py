"""Payload files agents download (``/file/download``) and files agents upload (``/file/upload``).

A name from a request is a single file name, never a path: no separator, no ``..``, no NUL, no leading dot,
at most 255 bytes. A file is served only if, with every symbolic link resolved, it lies inside a payload
directory. Uploads go to ``<uploads>/<paw>/<name>`` and nowhere else: Caldera's ``Directory:`` header (which
let an unauthenticated agent write into the payload store) is refused, and so is an existing name (no
overwrite). Every write goes to a temporary file in the target directory and is then renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from assay.c2._model import Refused
from assay.errors import Source

MAX_PAYLOAD_BYTES = 256 * 1024 * 1024
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


def safe_name(name: str | None, where: str = "file") -> str:
    """``name`` if it is a plain file name; a 400 saying what is wrong otherwise."""
    if not name:
        raise Refused(f"header '{where}' is missing or empty (expected a payload name)", Source(field=where))
    problem = None
    if "\x00" in name:
        problem = "contains a NUL byte"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator (path traversal is refused)"
    elif name in (".", "..") or name.startswith("."):
        problem = "starts with a dot (path traversal and hidden files are refused)"
    elif len(name.encode("utf-8", "surrogatepass")) > 255:
        problem = "is longer than 255 bytes"
    elif ":" in name:
        problem = "names a packer ('packer:name'), which Assay does not support"
    elif any(ord(c) < 32 for c in name):
        problem = "contains a control character"
    if problem:
        raise Refused(f"payload name {name[:80]!r} {problem}", Source(field=where))
    return name


@dataclass(frozen=True, slots=True)
class Payload:
    name: str
    path: Path
    size: int
    sha256: str


class PayloadStore:
    """Payload directories (searched in order; the first is where uploads by an operator go) and the
    agents' upload directory. The sha256 of each file is computed once per (size, mtime)."""

    def __init__(self, roots: list[Path], uploads: Path) -> None:
        if not roots:
            raise ValueError("at least one payload directory is needed")
        self.roots = [r.resolve() for r in roots]
        self.uploads = uploads.resolve()
        _private_dir(self.roots[0])
        self._digests: dict[Path, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def _inside(self, path: Path, root: Path) -> bool:
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        return resolved.parent == root and resolved.is_file()

    def find(self, name: str) -> Payload | None:
        name = safe_name(name)
        for root in self.roots:
            candidate = root / name
            if self._inside(candidate, root):
                return self._describe(name, candidate.resolve())
        return None

    def _describe(self, name: str, path: Path) -> Payload:
        stat = path.stat()
        with self._lock:
            known = self._digests.get(path)
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return Payload(name, path, stat.st_size, known[2])
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        with self._lock:
            self._digests[path] = (stat.st_size, stat.st_mtime_ns, h.hexdigest())
        return Payload(name, path, stat.st_size, h.hexdigest())

    def list(self) -> list[Payload]:
        seen: dict[str, Payload] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for entry in sorted(root.iterdir()):
                if entry.name not in seen and not entry.name.startswith(".") and self._inside(entry, root):
                    seen[entry.name] = self._describe(entry.name, entry.resolve())
        return list(seen.values())

    def add(self, name: str, data: bytes, *, replace: bool = False) -> Payload:
        """Store an operator's payload in the first payload directory."""
        name = safe_name(name, "name")
        if len(data) > MAX_PAYLOAD_BYTES:
            raise Refused(
                f"payload is larger than {MAX_PAYLOAD_BYTES} bytes", Source(field="file"), status=413
            )
        target = self.roots[0] / name
        if target.exists() and not replace:
            raise Refused(f"payload {name!r} exists already", Source(field="name"), status=409)
        _write_new(self.roots[0], name, data, replace=replace)
        return self._describe(name, target)

    def remove(self, name: str) -> None:
        name = safe_name(name, "name")
        target = self.roots[0] / name
        if not self._inside(target, self.roots[0]):
            raise Refused(f"no payload {name!r}", Source(field="name"), status=404)
        target.unlink()

    def save_upload(self, paw: str, name: str, data: bytes) -> Path:
        """An agent's upload: ``<uploads>/<paw>/<name>``, never overwriting."""
        name = safe_name(name, "filename")
        directory = self.uploads / safe_name(paw, "paw")
        misplaced = Refused("upload directory is not where it should be", Source(agent=paw), status=403)
        if directory.is_symlink():  # planted, dangling or not: mkdir on a dangling link raised (a 500)
            raise misplaced
        try:
            _private_dir(self.uploads)
            _private_dir(directory)
        except FileExistsError as exc:  # a file, not a directory, has the agent's name
            raise misplaced from exc
        if directory.resolve().parent != self.uploads:
            raise misplaced
        if (directory / name).exists():
            raise Refused(f"{name!r} was uploaded already by this agent", Source(agent=paw), status=409)
        _write_new(directory, name, data, replace=False)
        return directory / name


def _private_dir(path: Path) -> None:
    """Payload and upload directories are the server's alone: 0700 when created here, whatever the umask
    (mkdir's mode goes through it). Files in them come from ``mkstemp``: 0600."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)


def _write_new(directory: Path, name: str, data: bytes, *, replace: bool) -> None:
    fd, raw = tempfile.mkstemp(dir=directory, prefix=".incoming-")
    tmp = Path(raw)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if replace:
            tmp.replace(directory / name)
        else:
            (directory / name).hardlink_to(tmp)  # fails if the name exists: no overwrite race
    except FileExistsError as exc:
        raise Refused(f"{name!r} exists already", Source(field="name"), status=409) from exc
    finally:
        tmp.unlink(missing_ok=True)
