"""The sensor: kernel telemetry → normalized :class:`assay.events.Event`\\ s, with loss accounted.

::

    from assay.sensor import open_source, SelfNoise

    noise = SelfNoise(ignore_pids={server_pid}, agent_pids={agent_pid},
                      server_endpoints={("127.0.0.1", 8888)})
    source = open_source("auto", host=socket.gethostname(), self_noise=noise)   # SensorError if none works
    source.name, source.reason        # which source was chosen, and why
    with source:                      # start(): attach (< 1 s); stop(): detach, leave nothing behind
        batch = source.poll(timeout=0.05)   # list[Event], loss events included
        source.stats()                # {"events": n, "dropped": n, ...}

Sources: ``ebpf`` (libbpf CO-RE through ctypes), ``audit`` (the sensor as audit daemon), ``proc_connector``
(process lineage only), ``authlog`` (ssh/sudo/su outcomes), ``replay`` (JSON Lines). ``auto`` tries ebpf,
audit, proc_connector in that order.
"""

from assay.sensor._audit import AuditSource
from assay.sensor._authlog import AuthlogSource
from assay.sensor._ebpf import EbpfSource, object_path, probe_ebpf
from assay.sensor._noise import SelfNoise
from assay.sensor._open import AUTO_ORDER, SOURCE_NAMES, open_source
from assay.sensor._proc_connector import ProcConnectorSource
from assay.sensor._replay import ReplaySource
from assay.sensor._sensitive import DEFAULT_SENSITIVE_PATHS, SensitiveSet, compile_paths
from assay.sensor._source import Source, loss_event
from assay.sensor._tree import ProcessInfo, ProcessTree

__all__ = [
    "AUTO_ORDER",
    "DEFAULT_SENSITIVE_PATHS",
    "SOURCE_NAMES",
    "AuditSource",
    "AuthlogSource",
    "EbpfSource",
    "ProcConnectorSource",
    "ProcessInfo",
    "ProcessTree",
    "ReplaySource",
    "SelfNoise",
    "SensitiveSet",
    "Source",
    "compile_paths",
    "loss_event",
    "object_path",
    "open_source",
    "probe_ebpf",
]
