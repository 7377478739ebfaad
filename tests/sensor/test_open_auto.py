"""open_source("auto"): the best source that works, and why; the next one when the first cannot load."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.sensor import open_source, probe_ebpf

pytestmark = pytest.mark.root


def test_auto_prefers_ebpf_when_it_loads() -> None:
    if probe_ebpf() is not None:
        pytest.skip("the eBPF object cannot load here")
    src = open_source("auto", host="h")
    try:
        assert src.name == "ebpf" and src.reason.startswith("auto: ebpf")
    finally:
        src.stop()


def test_auto_falls_back_and_says_why(tmp_path: Path) -> None:
    broken = tmp_path / "not-an-object.bpf.o"
    broken.write_bytes(b"\x7fELF garbage")
    src = open_source("auto", host="h", bpf_object=broken)
    try:
        assert src.name in ("audit", "proc_connector")
        assert "ebpf:" in src.reason and str(broken) in src.reason  # what failed, and where
        src.start()
        src.poll(0.05)  # a working fallback, not just a name
    finally:
        src.stop()
