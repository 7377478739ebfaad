"""Which paths this host wrote recently: so a rule can tell a process clearing away what was just made (a
build tree, a test's scratch directory, an unpacked package) from one destroying data that was there.

The engine notes every file write and rename target it sees, with the directories above it, and marks a
later ``file_delete`` of such a path with ``file.recently_created``. Memory is bounded: the oldest entries
go first, and an entry older than the window no longer counts.
"""

from __future__ import annotations

from collections import OrderedDict

WINDOW = 3600.0  # seconds a write keeps its path "recently created"
MAX_PATHS = 200_000
MIN_DEPTH = 3  # directories at least this deep are marked with what they hold (/usr/local/src, not /usr)


class RecentFiles:
    def __init__(self, window: float = WINDOW, max_paths: int = MAX_PATHS) -> None:
        self.window = window
        self.max_paths = max_paths
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def wrote(self, path: str, ts: float) -> None:
        """``path`` was written (or renamed into place) at ``ts``; so were the directories holding it."""
        seen = self._seen
        while path and path != "/":
            if path in seen:
                seen.move_to_end(path)
            seen[path] = ts
            path = path.rsplit("/", 1)[0]
            if path.count("/") < MIN_DEPTH:
                break
        while len(seen) > self.max_paths:
            seen.popitem(last=False)

    def made(self, path: str, ts: float) -> bool:
        """Whether ``path`` was written within the window before ``ts``."""
        when = self._seen.get(path)
        return when is not None and ts - when <= self.window
