"""Shared test setup: markers that skip with a clear reason when the machine cannot run a test."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


# -- PostgreSQL: a throwaway cluster from Debian's postgresql, on a unix socket only (no TCP port to clash) --
def _postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server started for this session in a temp dir (skips, with why, if it cannot)."""
    import pwd
    import shutil
    import subprocess
    import tempfile

    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql (apt install postgresql)")
    run_as: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="assay-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root: use Debian's postgres account
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(base, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, log = base / "data", base / "server.log"
    port = 50000 + os.getpid() % 10000  # names the socket file only: listen_addresses='' opens no TCP port
    try:
        subprocess.run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "assay",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-k {base} -p {port} -c listen_addresses='' -c fsync=off"
        subprocess.run(
            [
                *run_as,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not start: {exc} {detail.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql+psycopg://assay@/postgres?host={base}&port={port}"
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    conninfo = postgres_server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.replace("/postgres?", f"/{name}?")
