"""Shared test setup: markers that skip with a clear reason when the machine cannot run a test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _find_shared() -> Path:
    """`../shared` beside the checkout; worktrees may sit deeper, so look upward (or use ASSAY_SHARED)."""
    if env := os.environ.get("ASSAY_SHARED"):
        return Path(env)
    for parent in ROOT.parents:
        if (parent / "shared" / "corpora").is_dir():
            return parent / "shared"
    return ROOT.parent / "shared"


SHARED = _find_shared()
SIGMA_CORPUS = SHARED / "corpora" / "sigma"
ATOMIC_CORPUS = SHARED / "corpora" / "atomic-red-team"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    kernel_reason: str | None = None
    if any("kernel" in item.keywords for item in items):
        kernel_reason = _ebpf_unavailable()
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (CAP_BPF, CAP_NET_ADMIN)"))
        elif "kernel" in item.keywords and kernel_reason:
            item.add_marker(pytest.mark.skip(reason=kernel_reason))


def _ebpf_unavailable() -> str | None:
    """Why the sensor's eBPF object cannot load here (None when it can). Tried once per session."""
    from assay.sensor import probe_ebpf

    return probe_ebpf()


@pytest.fixture(scope="session")
def sigma_corpus() -> Path:
    if not SIGMA_CORPUS.is_dir():
        pytest.skip(f"SigmaHQ corpus not found at {SIGMA_CORPUS}")
    return SIGMA_CORPUS


@pytest.fixture(scope="session")
def atomic_corpus() -> Path:
    if not ATOMIC_CORPUS.is_dir():
        pytest.skip(f"Atomic Red Team corpus not found at {ATOMIC_CORPUS}")
    return ATOMIC_CORPUS
