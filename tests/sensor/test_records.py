"""The record layouts: Python's struct formats against the sizes records.h asserts in C."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from assay.sensor import _records as R
from assay.sensor._syscalls import DESC

BPF_DIR = Path(__file__).resolve().parents[2] / "src" / "assay" / "sensor" / "bpf"
SOURCES = ("sensor.bpf.c", "paths.bpf.h", "records.h", "vmlinux.h")


def _c_asserts() -> dict[str, int]:
    text = (BPF_DIR / "records.h").read_text()
    out: dict[str, int] = {}
    for m in re.finditer(
        r"_Static_assert\((sizeof|__builtin_offsetof)\(struct (\w+)(?:, (\w+))?\) == (\d+)", text
    ):
        kind, struct, field, value = m.groups()
        out[f"{struct}.{field}" if kind != "sizeof" else struct] = int(value)
    return out


def test_python_formats_match_the_c_layouts() -> None:
    c = _c_asserts()
    py = R.layout_sizes()
    assert c["hdr"] == py["hdr"] == R.struct.calcsize("<" + R.HDR)
    assert c["hdr.cgroup_id"] == py["hdr.cgroup_id"] and c["hdr.comm"] == py["hdr.comm"]
    assert R.CTX.size == R.CTX_END - R.CTX_START
    assert c["exec_rec.data"] == py["exec_rec.data"]
    assert c["fork_rec"] == py["fork_rec"]
    assert c["exit_rec"] == py["exit_rec"]
    assert c["sys_rec.sk"] == py["sys_rec.sk"]
    assert c["sys_rec.data"] == py["sys_rec.data"]
    assert c["sc_desc"] == DESC.size


def test_prebuilt_object_was_built_from_these_sources() -> None:
    """The committed .bpf.o must be rebuilt (`make bpf`) whenever the C changes: it embeds their digest."""
    obj = BPF_DIR / "sensor.bpf.o"
    assert obj.is_file(), "sensor.bpf.o is missing: run `make bpf`"
    data = obj.read_bytes()
    digest = hashlib.sha256(b"".join((BPF_DIR / n).read_bytes() for n in SOURCES)).hexdigest()[:16]
    assert digest.encode() in data, "sensor.bpf.o is stale: run `make bpf` and commit the object"
    assert data[:4] == b"\x7fELF"
    assert b".BTF" in data and b".BTF.ext" in data, "the object lost its BTF: CO-RE cannot relocate it"
    for name in (b"assay_exec", b"assay_fork", b"assay_exit", b"assay_sys_enter", b"assay_sys_exit"):
        assert name in data
