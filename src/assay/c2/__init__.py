"""C2: the transport-agnostic beacon core and the contacts that carry it (native held-request HTTP now;
Caldera's ``/beacon`` joins it in issue 4 as another thin adapter over the same core)."""

from assay.c2._auth import digest, matches, new_secret
from assay.c2._core import BeaconCore, Instruction, Ledger, MemoryLedger, clean_paw
from assay.c2._native import NativeContact, Waiters

__all__ = [
    "BeaconCore",
    "Instruction",
    "Ledger",
    "MemoryLedger",
    "NativeContact",
    "Waiters",
    "clean_paw",
    "digest",
    "matches",
    "new_secret",
]
