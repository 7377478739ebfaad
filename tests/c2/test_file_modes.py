"""File modes under a permissive umask: the data directory 0700, the SQLite database and its -wal/-shm
0600, payload and upload directories 0700 and uploaded files 0600: a real server, a real database."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from c2_helpers import ENROL, serving

from assay.storage import Store, sqlite_url


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_a_new_database_and_its_directory_are_private(tmp_path: Path, mask: int) -> None:
    data = tmp_path / "nested" / "data"
    with umask(mask):
        store = Store.open(sqlite_url(data))
        try:
            store.set_credential("probe", "hash")  # a write: SQLite creates -wal and -shm
            db = data / "assay.db"
            assert mode(data) == 0o700
            files = [db, db.with_name("assay.db-wal"), db.with_name("assay.db-shm")]
            assert all(f.exists() for f in files), sorted(p.name for p in data.iterdir())
            assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
        finally:
            store.close()


def test_an_existing_database_left_readable_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with umask(0o022):
        Store.open(sqlite_url(data)).close()
        db = data / "assay.db"
        db.chmod(0o644)
        wal = db.with_name("assay.db-wal")
        wal.touch(mode=0o644)
        wal.chmod(0o644)
        Store.open(sqlite_url(data)).close()
    assert oct(mode(db)) == "0o600" and (not wal.exists() or oct(mode(wal)) == "0o600")


def test_a_data_directory_the_user_made_keeps_its_mode(tmp_path: Path) -> None:
    data = tmp_path / "mine"
    data.mkdir(mode=0o750)
    data.chmod(0o750)
    with umask(0o022):
        Store.open(sqlite_url(data)).close()
    assert mode(data) == 0o750 and mode(data / "assay.db") == 0o600


def test_a_server_under_umask_022_keeps_its_files_private(tmp_path: Path) -> None:
    boundary = "modes"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="loot.txt"\r\n\r\nloot'
        f"\r\n--{boundary}--\r\n"
    ).encode()
    with umask(0o022), serving(tmp_path, "--caldera-compat") as server:
        profile = base64.b64encode(json.dumps({"paw": "moder", "platform": "linux"}).encode())
        status, _ = server.call("POST", f"/enrol/{ENROL}/beacon", raw=profile, key=None)
        assert status == 200
        status, reply = server.call(
            "POST",
            "/file/upload",
            raw=body,
            key=None,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "X-Paw": "moder"},
        )
        assert status == 200, reply
        data = server.data_dir
        db = data / "assay.db"
        modes = {
            str(p.relative_to(tmp_path)): oct(mode(p))
            for p in (
                data,
                db,
                db.with_name("assay.db-wal"),
                db.with_name("assay.db-shm"),
                data / "payloads",
                data / "uploads",
                data / "uploads" / "moder",
                data / "uploads" / "moder" / "loot.txt",
            )
        }
    assert modes == {
        "data": "0o700",
        "data/assay.db": "0o600",
        "data/assay.db-wal": "0o600",
        "data/assay.db-shm": "0o600",
        "data/payloads": "0o700",
        "data/uploads": "0o700",
        "data/uploads/moder": "0o700",
        "data/uploads/moder/loot.txt": "0o600",
    }
