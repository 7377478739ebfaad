"""Choosing a source: ``open_source("auto")`` takes the best one that works here, and says which and why.

Order for ``auto``: ``ebpf`` (complete argv in the kernel, every hook, exact loss), then ``audit`` (complete
argv, syscall coverage, loss counted by kauditd), then ``proc_connector`` (process lineage only; argv read
from /proc afterwards and flagged). Each candidate is *prepared* (loaded, or its kernel interface opened)
before it is chosen, so a source that cannot work here is skipped with its reason, and ``start()`` only has
to attach.
"""

from __future__ import annotations

import socket
from typing import Any

from assay.errors import SensorError
from assay.sensor._noise import SelfNoise
from assay.sensor._source import Source


def _registry() -> dict[str, type[Source]]:
    from assay.sensor._audit import AuditSource
    from assay.sensor._authlog import AuthlogSource
    from assay.sensor._ebpf import EbpfSource
    from assay.sensor._proc_connector import ProcConnectorSource
    from assay.sensor._replay import ReplaySource

    return {
        "ebpf": EbpfSource,
        "audit": AuditSource,
        "proc_connector": ProcConnectorSource,
        "replay": ReplaySource,
        "authlog": AuthlogSource,
    }


AUTO_ORDER: tuple[str, ...] = ("ebpf", "audit", "proc_connector")
SOURCE_NAMES: tuple[str, ...] = ("auto", "ebpf", "audit", "proc_connector", "replay", "authlog")


def open_source(
    kind: str = "auto",
    host: str | None = None,
    self_noise: SelfNoise | None = None,
    **options: Any,
) -> Source:
    """A prepared, not yet started source. Raises :class:`SensorError` naming every reason when none works.

    ``options`` go to the source's constructor (``path=`` for replay, ``ring_bytes=``, ``sensitive_paths=``
    for ebpf...); options a candidate does not take are not passed to it.
    """
    host = host or socket.gethostname()
    registry = _registry()
    if kind != "auto":
        if kind not in registry:
            raise SensorError(f"unknown source {kind!r}; choose one of {', '.join(SOURCE_NAMES)}")
        src = registry[kind](host, self_noise, f"{kind} requested", **_accepted(registry[kind], options))
        _prepare(src)
        return src
    reasons: list[str] = []
    for name in AUTO_ORDER:
        cls = registry[name]
        try:
            src = cls(host, self_noise, "", **_accepted(cls, options))
            _prepare(src)
        except SensorError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        src.reason = f"auto: {name} is the best available" + (
            f" (skipped {'; '.join(reasons)})" if reasons else ""
        )
        return src
    raise SensorError("no telemetry source works on this host: " + "; ".join(reasons))


def _prepare(src: Source) -> None:
    prepare = getattr(src, "prepare", None)
    if callable(prepare):
        prepare()


def _accepted(cls: type[Source], options: dict[str, Any]) -> dict[str, Any]:
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in params}
