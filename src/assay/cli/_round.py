"""One validation round on this host: server, agent and watcher as child processes, an operation, a report.

The order matters and is the point of this module:

1. the server starts (fresh data dir, generated credentials passed explicitly: no defaults anywhere);
2. the agent starts and enrols;
3. the watcher (sensor + detection) attaches, told which pids are the server and the agent, so their own
   activity is not telemetry;
4. only then does the operation start, so the sensor sees every link from its first instruction;
5. when the operation has finished (its cleanup included), the watcher drains the kernel and ships the
   last batch before it exits;
6. validation reads links, events and alerts back from storage and classifies every link.

Children are stopped by their own PIDs, in reverse order, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from assay.cli._children import Child, ChildError, assay_argv, wait_until
from assay.content import load_builtin
from assay.detection import Engine
from assay.errors import AssayError, ConfigError
from assay.sandbox import find_pids
from assay.storage import RoundRecord, Store, private_dir, sqlite_url
from assay.validation import RoundReport, alert_links, digest_files, round_inputs, validate

# "Linux full validation": every safe built-in ability (content/data/adversaries/linux-full-validation.yml).
DEFAULT_ADVERSARY = "e02fe718-7455-5367-a1d0-5fbf3f1599bc"
# The sensor delivers in batches (lazy wake-up, ~20 ms) and the watcher ships every 250 ms: give the last
# link's telemetry this long to reach the watcher before asking it to drain and stop.
SETTLE_SECONDS = 0.75
# Where `assay demo` and `assay validate` store their rounds unless told otherwise (relative to the working
# directory, like the reports they write).
DEFAULT_DB = ".assay/assay.db"


@dataclass
class RoundConfig:
    data_dir: Path
    adversary_id: str = DEFAULT_ADVERSARY
    content_paths: list[Path] = field(default_factory=list)
    rule_paths: list[Path] = field(default_factory=list)
    allowlist_paths: list[Path] = field(default_factory=list)
    source: str = "auto"
    group: str = "assay-round"
    timeout: float = 600.0
    # The database the server writes and the round is stored in (default: a SQLite file in data_dir). Rounds
    # of several runs share one (``.assay/assay.db`` for `assay demo` / `assay validate`) so they compare.
    db_url: str | None = None
    kind: str = "demo"  # what the stored round says ran it: demo | validate
    max_safety: str = "safe"  # "disruptive": `--allow disruptive` (destructive needs the sandbox)
    # Run the agent (so every ability) in an assay.sandbox: fresh namespaces, a throw-away overlay, one
    # network path to the server. The agent then enrols with `sandbox: <id>`.
    sandbox: bool = False


@dataclass
class Progress:
    """What the caller is told while the operation runs."""

    state: str
    total: int
    finished: int
    current: str | None


@dataclass
class RoundResult:
    report: RoundReport
    operation_id: str
    round_id: str
    sensor_source: str
    data_dir: Path
    server_pid: int
    agent_pid: int
    watcher_pid: int


class LocalRound:
    def __init__(self, config: RoundConfig, on_progress: Callable[[Progress], None] = lambda p: None) -> None:
        self.config = config
        self.on_progress = on_progress
        self.api_key = secrets.token_urlsafe(32)
        self.enrol_token = secrets.token_urlsafe(32)
        self.paw = f"round-{secrets.token_hex(4)}"
        # A group of its own: an operation of an earlier round left running in a shared database (the
        # client killed) is taken back by the server and would otherwise pick this round's agent up.
        self.group = f"{config.group}-{secrets.token_hex(3)}"
        self.children: list[Child] = []

    # -- children -------------------------------------------------------------------------------------------
    def _start_server(self) -> tuple[Child, str]:
        cfg = self.config
        args = [
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(cfg.data_dir),
            "--api-key",
            self.api_key,
            "--enrol-token",
            self.enrol_token,
        ]
        if cfg.db_url:
            args += ["--db", cfg.db_url]
        for path in cfg.content_paths:
            args += ["--content", str(path)]
        server = Child("server", assay_argv(*args), cfg.data_dir / "server.log").start()
        self.children.append(server)
        url: list[str] = []

        def listening() -> bool:
            for line in server.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
                if "listening on " in line:
                    url.append(line.rsplit("listening on ", 1)[1].strip())
                    return True
            return False

        wait_until("the server to listen", listening, 30.0, [server])
        return server, url[0]

    def _start_agent(self, url: str) -> Child:
        agent_argv = [
            sys.executable,
            "-m",
            "assay.agent",
            "--server",
            url,
            "--enrol-token",
            self.enrol_token,
            "--group",
            self.group,
            "--paw",
            self.paw,
        ]
        argv = agent_argv
        if self.config.sandbox:
            # `assay sandbox run` relays 127.0.0.1:PORT inside to the server's port here, so the agent's
            # --server URL is the same inside as outside.
            port = urlsplit(url).port
            argv = assay_argv("sandbox", "run", "--server-port", str(port), "--", *agent_argv)
        agent = Child("agent", argv, self.config.data_dir / "agent.log").start()
        self.children.append(agent)
        return agent

    def _agent_pids(self, agent: Child) -> tuple[list[int], int]:
        """(pids the watcher ignores, the agent's host pid). In a sandbox, the launcher, its outer process
        and the sandbox init are infrastructure, and the agent is the init's child."""
        if not self.config.sandbox:
            return [], agent.pid
        pids = find_pids(agent.pid)
        return pids.infrastructure, pids.command

    def _start_watcher(self, url: str, server: Child, agent: Child) -> tuple[Child, str]:
        cfg = self.config
        ready = cfg.data_dir / "watch.ready"
        infrastructure, agent_pid = self._agent_pids(agent)
        args = [
            "watch",
            "--server",
            url,
            "--source",
            cfg.source,
            "--ignore-pid",
            str(server.pid),
            "--ignore-pid",
            str(os.getpid()),  # this process polls the API; it is not part of the round
            "--agent-pid",
            str(agent_pid),
            "--ready-file",
            str(ready),
        ]
        for pid in infrastructure:
            args += ["--ignore-pid", str(pid)]
        for path in cfg.rule_paths:
            args += ["--rules", str(path)]
        for path in cfg.allowlist_paths:
            args += ["--allowlist", str(path)]
        watcher = Child(
            "watcher", assay_argv(*args), cfg.data_dir / "watch.log", env={"ASSAY_API_KEY": self.api_key}
        )
        watcher.start()
        self.children.append(watcher)
        wait_until("the sensor to attach", ready.exists, 60.0, [watcher, server])
        source = json.loads(ready.read_text(encoding="utf-8")).get("source", "?")
        return watcher, str(source)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()

    # -- the round ------------------------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return self.config.db_url or sqlite_url(self.config.data_dir)

    def run(self) -> RoundResult:
        cfg = self.config
        private_dir(cfg.data_dir)  # the round's database and logs: 0700 (assay.storage._private)
        started = time.time()
        try:
            server, url = self._start_server()
            agent = self._start_agent(url)
            client = httpx.Client(base_url=url, headers={"KEY": self.api_key}, timeout=10.0)
            with client:
                wait_until("the agent to enrol", lambda: self._enrolled(client), 30.0, [server, agent])
                watcher, source = self._start_watcher(url, server, agent)
                op_id = self._start_operation(client)
                self._follow(client, op_id, [server, agent, watcher])
            time.sleep(SETTLE_SECONDS)
            watcher.stop(timeout=30.0)  # SIGTERM: drain the kernel, flush correlations, ship, exit
            if watcher.proc is not None and watcher.proc.returncode not in (0, -15):
                raise ChildError(
                    f"the watcher failed (exit {watcher.proc.returncode}):\n{watcher.log_tail()}"
                )
            report, engine = self._validate(op_id, source)
            round_id = self._store_round(op_id, report, engine, started)
            return RoundResult(
                report, op_id, round_id, source, cfg.data_dir, server.pid, agent.pid, watcher.pid
            )
        finally:
            self.stop_all()

    def _enrolled(self, client: httpx.Client) -> bool:
        resp = client.get("/api/v2/agents")
        return resp.status_code == 200 and any(a.get("paw") == self.paw for a in resp.json())

    def _start_operation(self, client: httpx.Client) -> str:
        body = {
            "name": f"assay round {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "adversary": {"adversary_id": self.config.adversary_id},
            "planner": {"id": "atomic"},
            "group": self.group,
            "auto_close": True,
            "max_safety": self.config.max_safety,
            "sandbox": self.sandboxed,
        }
        resp = client.post("/api/v2/operations", json=body)
        if resp.status_code != 200:
            raise ConfigError(f"the server refused the operation ({resp.status_code}): {resp.text[:500]}")
        return str(resp.json()["id"])

    def _follow(self, client: httpx.Client, op_id: str, children: list[Child]) -> None:
        deadline = time.monotonic() + self.config.timeout
        while True:
            for child in children:
                child.check()
            op = client.get(f"/api/v2/operations/{op_id}").json()
            links: list[dict[str, Any]] = client.get(f"/api/v2/operations/{op_id}/links").json()
            current = next((lk for lk in links if lk.get("finished_at") is None), None)
            self.on_progress(
                Progress(
                    state=str(op.get("state")),
                    total=len(links),
                    finished=sum(1 for lk in links if lk.get("finished_at") is not None),
                    current=(current.get("ability_name") or current.get("ability_id")) if current else None,
                )
            )
            if op.get("state") in ("finished", "out_of_time"):
                return
            if time.monotonic() > deadline:
                raise AssayError(f"operation {op_id} did not finish within {self.config.timeout:.0f} s")
            time.sleep(0.1)

    @property
    def sandboxed(self) -> bool:
        return self.config.sandbox

    def _validate(self, op_id: str, source: str) -> tuple[RoundReport, Engine]:
        cfg = self.config
        engine = Engine.load(
            rule_paths=list(cfg.rule_paths), allowlist_paths=list(cfg.allowlist_paths), include_builtin=True
        )
        library = load_builtin(cfg.content_paths).library
        adversary = library.adversary(cfg.adversary_id)
        profile = (
            {library.abilities[a].technique_id for a in adversary.atomic_ordering if a in library.abilities}
            if adversary
            else None
        )
        store = Store.open(self.db_url, migrate=False)
        try:
            links, events, alerts = round_inputs(store, op_id)
        finally:
            store.close()
        report = validate(
            links,
            events,
            alerts,
            mapped_techniques=engine.mapped_techniques,
            consumed_actions=engine.consumed_actions,
            profile_techniques=profile,
            meta={
                "operation_id": op_id,
                "adversary_id": cfg.adversary_id,
                "sensor_source": source,
                "rules": len([r for r in engine.rules if r.supported]),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "profile": sorted(profile) if profile is not None else None,
            },
        )
        return report, engine

    def _store_round(self, op_id: str, report: RoundReport, engine: Engine, started: float) -> str:
        """Store the round: its report, summary, the hashes of its rules and content, and which link every
        alert belongs to. The report's ``meta`` gets the round id and the hashes too."""
        cfg = self.config
        library = load_builtin(cfg.content_paths).library
        adversary = library.adversary(cfg.adversary_id)
        files = [adversary.origin.file] if adversary and adversary.origin and adversary.origin.file else []
        for ability_id in adversary.atomic_ordering if adversary else ():
            ability = library.abilities.get(ability_id)
            if ability is not None and ability.origin is not None and ability.origin.file:
                files.append(ability.origin.file)
        rule_files = [r.file for r in engine.rules if r.file]
        round_id = str(uuid.uuid4())
        report.meta.update(
            {
                "round_id": round_id,
                "name": adversary.name if adversary else cfg.adversary_id,
                "kind": cfg.kind,
                "sandbox": self.sandboxed,
                "rules_hash": digest_files(rule_files),
                "content_hash": digest_files(files),
            }
        )
        record = RoundRecord(
            id=round_id,
            kind=cfg.kind,
            started_at=started,
            finished_at=time.time(),
            summary=report.to_dict()["summary"],
            report=report.to_dict(),
            operation_id=op_id,
            name=adversary.name if adversary else cfg.adversary_id,
            adversary_id=cfg.adversary_id,
            sandbox=self.sandboxed,
            rules_hash=str(report.meta["rules_hash"]),
            content_hash=str(report.meta["content_hash"]),
        )
        store = Store.open(self.db_url, migrate=False)
        try:
            store.save_round(record, alert_links(report))
        finally:
            store.close()
        return round_id
