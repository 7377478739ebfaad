"""Auth log lines → login and sudo events; the file source follows appends and rotation."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.sensor import open_source
from assay.sensor._authlog import parse_line

RFC = "2026-11-24T22:39:01.123456+00:00 web1 "


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            RFC + "sshd[812]: Accepted publickey for alice from 10.0.0.5 port 50122 ssh2: ED25519 SHA256:x",
            {
                "event.action": "login_success",
                "user.name": "alice",
                "source.ip": "10.0.0.5",
                "auth.method": "publickey",
            },
        ),
        (
            "Nov 24 22:39:02 web1 sshd[813]: Failed password for invalid user admin from 203.0.113.9"
            " port 4242 ssh2",
            {
                "event.action": "login_failure",
                "user.name": "admin",
                "source.port": 4242,
                "auth.service": "sshd",
            },
        ),
        (
            RFC + "sshd[814]: Invalid user oracle from 198.51.100.1 port 2222",
            {"event.action": "login_failure", "user.name": "oracle", "auth.method": "none"},
        ),
        (
            RFC + "sudo[900]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u",
            {
                "event.action": "sudo",
                "user.name": "alice",
                "user.target.name": "root",
                "event.outcome": "success",
            },
        ),
        (
            RFC + "sudo[901]:    bob : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/ ; USER=root ;"
            " COMMAND=/bin/sh",
            {"event.action": "sudo", "user.name": "bob", "event.outcome": "failure"},
        ),
        (
            RFC + "su[950]: pam_unix(su:session): session opened for user root(uid=0) by alice(uid=1000)",
            {"event.action": "login_success", "auth.service": "su", "user.target.name": "root"},
        ),
        (RFC + "CRON[1]: pam_unix(cron:session): session opened for user root", None),
        ("not a syslog line", None),
    ],
)
def test_parse_line(line: str, expected: dict[str, object] | None) -> None:
    got = parse_line(line, year=2026)
    if expected is None:
        assert got is None
        return
    assert got is not None
    for k, v in expected.items():
        assert got[k] == v, k
    assert got["message"] == line and got["host.name"] == "web1"


def test_authlog_source_follows_appends_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(RFC + "sshd[1]: Accepted password for old from 10.0.0.1 port 1 ssh2\n")
    src = open_source("authlog", host="h", path=log)
    with src:
        assert src.poll(0) == []  # starts at the end: history is not news
        with log.open("a") as fh:
            fh.write(RFC + "sshd[2]: Failed password for root from 10.0.0.2 port 2 ssh2\n")
            fh.write(RFC + "sshd[3]: Accepted pass")  # half a line: kept until it ends
        evs = src.poll(0)
        assert [e["user.name"] for e in evs] == ["root"]
        with log.open("a") as fh:
            fh.write("word for bob from 10.0.0.3 port 3 ssh2\n")
        assert [e["user.name"] for e in src.poll(0)] == ["bob"]
        log.rename(tmp_path / "auth.log.1")
        log.write_text(RFC + "sshd[4]: Accepted password for carol from 10.0.0.4 port 4 ssh2\n")
        got = src.poll(0) + src.poll(0)
        assert [e["user.name"] for e in got] == ["carol"]
        assert all(e["event.source"] == "authlog" for e in got)
