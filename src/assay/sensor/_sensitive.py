"""Which files count as sensitive, so that merely *reading* them is an event (``file_read_sensitive``).

The list is set in userspace. Each entry is one of:

- an absolute path, possibly with glob characters (``/etc/shadow``, ``/etc/ssh/ssh_host_*_key``): resolved
  to inodes at start, so a relative path, a symlink or a hard link to the file still matches;
- an absolute directory ending in ``/`` (``/root/.ssh/``): any file directly inside it;
- ``*/DIR/NAME`` (``*/.aws/credentials``): a file NAME in any directory called DIR, matched by name in the
  kernel, so it also covers homes created after the sensor started (a sandbox's, a test's);
- ``*/DIR/`` (``*/.ssh/``): any file in any directory called DIR;
- ``*/NAME``: a file called NAME anywhere.

Names are matched up to 31 bytes (the kernel map's key); longer ones are refused with an error.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from assay.errors import SensorError, Source

DEFAULT_SENSITIVE_PATHS: tuple[str, ...] = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d/",
    "/etc/security/opasswd",
    "/etc/krb5.keytab",
    "/etc/ssh/ssh_host_*_key",
    "*/.ssh/",
    "*/.aws/credentials",
    "*/.azure/accessTokens.json",
    "*/gcloud/credentials.db",
    "*/.docker/config.json",
    "*/.kube/config",
    "*/.git-credentials",
    "*/.netrc",
    "*/.pgpass",
    "*/.gnupg/",
    "*/.password-store/",
    # another process's environment and memory (/proc/<pid>/environ, /proc/<pid>/mem; also /dev/mem)
    "*/environ",
    "*/mem",
)

NAME_CAP = 32
SENS_FILE = 1
SENS_DIR = 2


@dataclass
class SensitiveSet:
    """The list, compiled: inode keys (dev, ino) and name keys (dir, name; '' = any)."""

    inodes: dict[tuple[int, int], int] = field(default_factory=dict)  # (st_dev, st_ino) -> SENS_*
    names: set[tuple[str, str]] = field(default_factory=set)
    paths: list[str] = field(default_factory=list)  # the absolute files and directories (for audit watches)

    def __bool__(self) -> bool:
        return bool(self.inodes or self.names)

    def matches(self, path: str) -> bool:
        """Userspace check of one path (sources without in-kernel matching, and tests)."""
        p = Path(path)
        try:
            st = p.stat()
            if (st.st_dev, st.st_ino) in self.inodes:
                return True
            pst = p.parent.stat()
            if self.inodes.get((pst.st_dev, pst.st_ino), 0) & SENS_DIR:
                return True
        except OSError:
            pass  # gone or unreadable: the names can still match
        parent = p.parent.name
        name = p.name
        return (parent, name) in self.names or (parent, "") in self.names or ("", name) in self.names


def _name(part: str, entry: str) -> str:
    if len(part.encode()) >= NAME_CAP:
        raise SensorError(
            f"sensitive path entry {entry!r}: name {part!r} is longer than {NAME_CAP - 1} bytes"
        )
    if any(c in part for c in "*?[") or not part:
        raise SensorError(f"sensitive path entry {entry!r}: only the leading '*/' may be a wildcard")
    return part


def compile_paths(entries: Iterable[str]) -> SensitiveSet:
    out = SensitiveSet()
    for raw in entries:
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith("*/"):
            parts = entry[2:].split("/")
            if len(parts) == 1:  # */NAME
                out.names.add(("", _name(parts[0], entry)))
            elif len(parts) == 2 and parts[1] == "":  # */DIR/
                out.names.add((_name(parts[0], entry), ""))
            elif len(parts) == 2:  # */DIR/NAME
                out.names.add((_name(parts[0], entry), _name(parts[1], entry)))
            else:
                raise SensorError(f"sensitive path entry {entry!r}: '*/' patterns take at most DIR/NAME")
            continue
        if not entry.startswith("/"):
            raise SensorError(f"sensitive path entry {entry!r} is neither absolute nor a '*/' pattern")
        is_dir = entry.endswith("/")
        pattern = entry.rstrip("/") or "/"
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]  # noqa: PTH207
        for path in found:
            try:
                st = Path(path).stat()
            except OSError:
                continue  # absent here: nothing to read, nothing to watch
            kind = SENS_DIR if is_dir else SENS_FILE
            key = (st.st_dev, st.st_ino)
            out.inodes[key] = out.inodes.get(key, 0) | kind
            out.paths.append(path + ("/" if is_dir else ""))
    return out


def load_path_list(path: str) -> list[str]:
    """A path list file: one entry per line, '#' comments."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise SensorError(f"cannot read sensitive path list: {exc.strerror}", Source(file=path)) from exc
    out = []
    for i, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            compile_paths([text])
        except SensorError as exc:
            raise SensorError(exc.message, Source(file=path, line=i)) from exc
        out.append(text)
    return out
