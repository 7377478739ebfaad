"""What identifies a round beside its outcomes: the hashes of the rules and the content it ran with, and the
alert → link attribution a stored round keeps (so it can be re-scored, and two rounds compared, knowing
whether the rules or the procedures changed in between).

Hashes are over file *contents* (each file's SHA-256, sorted), not paths: the same rule set checked out in
another directory hashes the same, and any edit to a rule or an ability changes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from assay.errors import AttributionError
from assay.validation._report import RoundReport


def digest_files(paths: Iterable[str | Path]) -> str:
    """SHA-256 over the sorted SHA-256s of the files' contents (a file named twice counts once)."""
    digests: set[str] = set()
    for path in dict.fromkeys(Path(p) for p in paths):
        try:
            digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError as exc:
            raise AttributionError(f"cannot hash {path} for the round's record: {exc}") from exc
    whole = hashlib.sha256()
    for d in sorted(digests):
        whole.update(d.encode())
    return whole.hexdigest()


def alert_links(report: RoundReport) -> list[tuple[str, str]]:
    """(alert id, link id) for every alert attributed to a link of the round, cleanup links included. A
    correlation alert whose events came from several links appears once per link."""
    out: dict[tuple[str, str], None] = {}
    for result in [*report.links, *report.cleanup_links]:
        for alert in result.alerts:
            out[(alert.id, result.link.link_id)] = None
    return list(out)
