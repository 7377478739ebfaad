"""One exception root for Assay, with errors that say *where*.

Every error carries an optional :class:`Source`: the file and line of bad content, the field that was wrong,
the agent (paw) or link involved. ``str(error)`` always starts with the location so that a user reading a
terminal can jump straight to it.

Loaders of whole corpora (abilities, Sigma rules) do not stop at the first bad file: they use
:class:`ErrorCollector` to keep going and report every error at the end, so one broken file never hides
the rest of the content.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Source:
    """Where something went wrong. Every part is optional; render only what is known."""

    file: str | None = None
    line: int | None = None
    field: str | None = None
    agent: str | None = None
    link: str | None = None
    rule: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.rule:
            parts.append(f"rule {self.rule}")
        if self.field:
            parts.append(f"field '{self.field}'")
        if self.agent:
            parts.append(f"agent {self.agent}")
        if self.link:
            parts.append(f"link {self.link}")
        return ", ".join(parts)

    def with_(self, **changes: object) -> Source:
        return replace(self, **changes)  # type: ignore[arg-type]


class AssayError(Exception):
    """Root of every error Assay raises on purpose."""

    def __init__(self, message: str, source: Source | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source

    def __str__(self) -> str:
        where = str(self.source) if self.source else ""
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict[str, object]:
        """The JSON shape used by `--json` outputs and the API: ``{"file", "line", "message", ...}``."""
        src = self.source or Source()
        out: dict[str, object] = {"file": src.file, "line": src.line, "message": self.message}
        for key in ("field", "agent", "link", "rule"):
            value = getattr(src, key)
            if value is not None:
                out[key] = value
        out["kind"] = type(self).__name__
        return out


# One base per bounded context (DESIGN §2). Catch these, never bare Exception.
class ConfigError(AssayError):
    """Bad settings: command-line options, environment, configuration files."""


class AttackError(AssayError):
    """Unknown or malformed ATT&CK identifiers."""


class EventError(AssayError):
    """Malformed telemetry: a JSON Lines record that is not an event."""


class ContentError(AssayError):
    """Abilities, adversaries, fact sources, Atomic Red Team tests that cannot be loaded."""


class EmulationError(AssayError):
    """Operations, planners, facts and link generation."""


class C2Error(AssayError):
    """Agent contacts and the wire protocol."""


class AgentError(AssayError):
    """Problems reported by or about an agent process."""


class SensorError(AssayError):
    """Telemetry sources: eBPF load failures, audit, proc connector, replay."""


class DetectionError(AssayError):
    """Sigma rules, pipelines, correlation, allowlists."""


class RuleUnsupported(DetectionError):
    """A Sigma rule uses a construct the engine does not implement. Never silently approximated."""


class AttributionError(AssayError):
    """Validation: joining alerts to links and classifying outcomes."""


class StorageError(AssayError):
    """Database access and migrations."""


class StorageFull(StorageError):
    """The database's disk (or its quota) is full: nothing of the write was stored; reads still work."""


@dataclass
class ErrorCollector:
    """Collects errors from a loader so that one bad file does not stop a whole corpus.

    Use :meth:`capture` around the work for one item::

        errors = ErrorCollector()
        for path in paths:
            with errors.capture():
                items.extend(load(path))
    """

    errors: list[AssayError] = field(default_factory=list)
    warnings: list[AssayError] = field(default_factory=list)

    def add(self, error: AssayError) -> None:
        self.errors.append(error)

    def warn(self, warning: AssayError) -> None:
        self.warnings.append(warning)

    def capture(self) -> _Capture:
        return _Capture(self)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def __iter__(self) -> Iterator[AssayError]:
        return iter(self.errors)

    def __len__(self) -> int:
        return len(self.errors)


class _Capture:
    def __init__(self, collector: ErrorCollector) -> None:
        self._collector = collector

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, AssayError):
            self._collector.add(exc)
            return True  # recorded; the loader goes on with the next item
        return False
