"""C2: the transport-agnostic beacon core and the contacts that carry it.

- :class:`BeaconCore`: agents (found by paw and key in O(1)), their timing and trust, the hand-over of work,
  de-duplicated results, the audit trail of dispatched commands.
- :class:`NativeContact`: Assay's own held-request contact (``/agent/*``), for ``assay.agent``.
- :class:`CalderaContact`: Caldera's ``/beacon`` protocol, exactly (served with ``--caldera-compat``).
- :class:`FileContact` and :class:`PayloadStore`: ``/file/download`` and ``/file/upload``.
- :class:`KeyRing`: hashed secrets verified once off the event loop, then from a keyed cache.
"""

from assay.c2._auth import KeyRing, Principal, Role, digest, matches, new_secret, slow_hash
from assay.c2._caldera import (
    Beacon,
    CalderaContact,
    decode_beacon,
    encode_instruction,
    encode_reply,
    invalid_unicode,
)
from assay.c2._core import (
    SWEEP_INTERVAL,
    BeaconCore,
    Ledger,
    MemoryLedger,
    check_timing,
    clean_paw,
)
from assay.c2._files import FileContact
from assay.c2._model import (
    MAX_SLEEP,
    MAX_WATCHDOG,
    AgentDefaults,
    AgentSettings,
    AuditEntry,
    Instruction,
    Refused,
    ResultOutcome,
    ResultState,
)
from assay.c2._native import NativeContact, Waiters
from assay.c2._payloads import Payload, PayloadStore, safe_name

__all__ = [
    "MAX_SLEEP",
    "MAX_WATCHDOG",
    "SWEEP_INTERVAL",
    "AgentDefaults",
    "AgentSettings",
    "AuditEntry",
    "Beacon",
    "BeaconCore",
    "CalderaContact",
    "FileContact",
    "Instruction",
    "KeyRing",
    "Ledger",
    "MemoryLedger",
    "NativeContact",
    "Payload",
    "PayloadStore",
    "Principal",
    "Refused",
    "ResultOutcome",
    "ResultState",
    "Role",
    "Waiters",
    "check_timing",
    "clean_paw",
    "decode_beacon",
    "digest",
    "encode_instruction",
    "encode_reply",
    "invalid_unicode",
    "matches",
    "new_secret",
    "safe_name",
    "slow_hash",
]
