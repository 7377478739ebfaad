"""Audit records and rules, without the kernel: text captured from this machine's kauditd."""

from __future__ import annotations

from assay.sensor import _audit_netlink as N
from assay.sensor import _audit_parse as P
from assay.sensor._audit import build_rules

SYSCALL = (
    b"audit(1795562066.890:16): arch=c000003e syscall=316 success=yes exit=0 a0=ffffff9c a1=7ffcd13c3ace "
    b"a2=ffffff9c a3=7ffcd13c3ad6 items=4 ppid=13066 pid=13067 auid=4294967295 uid=0 gid=0 euid=0 "
    b'comm="mv" exe="/usr/bin/mv" key="assay-sensor"'
)
PATH_OLD = b"audit(1795562066.890:16): item=2 name=7820792E747874 inode=2157533 dev=fe:00 nametype=DELETE"
EXECVE = b'audit(1795562066.890:15): argc=3 a0="mv" a1=7820792E747874 a2="y.txt"'


def test_fields_quoted_hex_and_null() -> None:
    r = P.parse(P.AUDIT_SYSCALL, SYSCALL)
    assert r.timestamp == 1795562066.890 and r.serial == 16
    assert r.int("syscall") == 316 and r.int("a1", 16) == 0x7FFCD13C3ACE
    assert r.text("exe") == "/usr/bin/mv" and r.text("key") == "assay-sensor"
    assert P.parse(P.AUDIT_PATH, PATH_OLD).text("name") == "x y.txt"
    assert P.decode_value("(null)") is None


def test_execve_args_including_long_argument_pieces() -> None:
    assert P.execve_args(P.parse(P.AUDIT_EXECVE, EXECVE)) == ["mv", "x y.txt", "y.txt"]
    long_hex = b'audit(1.0:1): argc=2 a0="x" a1_len=6 a1[0]=616263 a1[1]=20656667'
    assert P.execve_args(P.parse(P.AUDIT_EXECVE, long_hex)) == ["x", "abc efg"]
    long_q = b'audit(1.0:1): argc=2 a0="x" a1_len=6 a1[0]="abc" a1[1]="def"'
    assert P.execve_args(P.parse(P.AUDIT_EXECVE, long_q)) == ["x", "abcdef"]


def test_assembler_groups_by_serial_until_eoe_and_expires_orphans() -> None:
    asm = P.Assembler(max_age=1.0)
    assert asm.feed(P.parse(P.AUDIT_SYSCALL, SYSCALL)) == []
    assert asm.feed(P.parse(P.AUDIT_PATH, PATH_OLD)) == []
    done = asm.feed(P.parse(P.AUDIT_EOE, b"audit(1795562066.890:16): "))
    assert len(done) == 1 and [r.type for r in done[0]] == [P.AUDIT_SYSCALL, P.AUDIT_PATH]
    asm.feed(P.parse(P.AUDIT_SYSCALL, SYSCALL.replace(b":16)", b":17)")))
    assert asm.expire(1795562066.890 + 0.5) == []
    assert len(asm.expire(1795562066.890 + 5)) == 1 and asm.pending() == 0
    user = asm.feed(P.parse(1112, b"audit(1.0:99): pid=1 uid=0 msg='op=login acct=\"root\" res=success'"))
    assert len(user) == 1  # a standalone user message needs no EOE


def test_rules_encode_and_their_key_is_found_again() -> None:
    rules = build_rules(["/etc/shadow", "/root/.ssh/"])
    assert len(rules) >= 5
    for rule in rules:
        data = rule.encode()
        assert N.rule_key(data) == rule.key
    watch = rules[-1].encode()
    assert b"/root/.ssh" in watch and N.rule_key(watch) == N.RULE_KEY + "-sensitive"
    assert N.rule_key(b"short") is None


def test_an_argv_split_over_several_execve_records_is_merged() -> None:
    first = P.parse(P.AUDIT_EXECVE, b'audit(1.0:5): argc=3 a0="x" a1_len=8 a1[0]="abcd"')
    second = P.parse(P.AUDIT_EXECVE, b'audit(1.0:5): a1[1]="efgh" a2="z"')
    merged = P.merge([first, second])
    assert merged is not None and P.execve_args(merged) == ["x", "abcdefgh", "z"]
    assert P.merge([]) is None
