"""Rounds read back from the database: a report to compare with (by round id, operation id, ``last``, or a
report file), and a stored round re-scored from its links, events, alerts and alert → link attribution
without running anything again."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.detection import Engine
from assay.errors import ConfigError, StorageError
from assay.storage import RoundRecord, Store
from assay.validation import RoundReport, alert_links, digest_files, round_inputs, validate


def previous_report(
    ref: str, db_url: str, *, adversary_id: str | None = None, before: str | None = None
) -> dict[str, Any]:
    """The report ``ref`` names: a report file (a path that exists), ``last`` (the newest stored round of
    ``adversary_id`` other than ``before``), or a stored round's id or operation id."""
    path = Path(ref)
    if ref != "last" and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--compare {ref}: not a readable report: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("techniques"), list):
            raise ConfigError(f"--compare {ref}: not an Assay report (no 'techniques' list)")
        return data
    store = Store.open(db_url)
    try:
        if ref == "last":
            found = [
                r
                for r in store.rounds()
                if r.id != before and (adversary_id is None or r.adversary_id == adversary_id)
            ]
            record = store.round(found[-1].id) if found else None
            if record is None:
                raise ConfigError(f"--compare last: no earlier round of adversary {adversary_id} in {db_url}")
        else:
            record = store.round(ref)
            if record is None:
                raise ConfigError(f"--compare {ref}: no such round (nor report file) in {db_url}")
        return record.report
    finally:
        store.close()


@dataclass
class Rescored:
    original: RoundRecord
    report: RoundReport
    round_id: str


def rescore(
    db_url: str, ref: str, rule_paths: Sequence[Path] = (), allowlist_paths: Sequence[Path] = ()
) -> Rescored:
    """Classify a stored round again with today's rules (mapped techniques, consumed actions) from what
    storage holds, alerts attributed as the round stored them; store the result as a new round."""
    store = Store.open(db_url)
    try:
        original = store.round(ref)
        if original is None:
            raise ConfigError(f"--rescore {ref}: no such round in {db_url}")
        op_id = original.operation_id
        if not op_id or store.operation(op_id) is None:
            raise StorageError(f"round {original.id} has no stored operation: nothing to re-score")
        engine = Engine.load(
            rule_paths=list(rule_paths), allowlist_paths=list(allowlist_paths), include_builtin=True
        )
        links, events, alerts = round_inputs(store, op_id)
        meta = dict(original.report.get("meta") or {})
        profile = meta.get("profile")
        round_id = str(uuid.uuid4())
        meta.update(
            {
                "round_id": round_id,
                "kind": "rescore",
                "rescored_from": original.id,
                "rules": len([r for r in engine.rules if r.supported]),
                "rules_hash": digest_files(r.file for r in engine.rules if r.file),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        report = validate(
            links,
            events,
            alerts,
            mapped_techniques=engine.mapped_techniques,
            consumed_actions=engine.consumed_actions,
            profile_techniques=profile if isinstance(profile, list) else None,
            meta=meta,
            alert_links=store.alert_links(op_id),
        )
        data = report.to_dict()
        store.save_round(
            RoundRecord(
                id=round_id,
                kind="rescore",
                started_at=time.time(),
                finished_at=time.time(),
                summary=data["summary"],
                report=data,
                operation_id=op_id,
                name=original.name,
                adversary_id=original.adversary_id,
                sandbox=original.sandbox,
                rules_hash=str(meta["rules_hash"]),
                content_hash=original.content_hash,
                rescored_from=original.id,
            ),
            alert_links(report),
        )
        return Rescored(original, report, round_id)
    finally:
        store.close()
