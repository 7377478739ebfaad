"""`assay baseline`: the false-positive rate of the rules on a benign workload, in alerts per hour by rule.

The same machinery as `assay demo` (server, an idle agent, the watcher with the sensor and the rules, all
child processes stopped by PID), but instead of an operation it runs :mod:`assay.workload` as its own
process for the given duration. Alerts from the workload's process tree are false alerts; alerts from the
agent's tree would mean its beacons are not invisible; everything else the host did meanwhile is reported
apart, since the workload did not cause it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from assay.cli._children import Child, ChildError, wait_until
from assay.cli._round import SETTLE_SECONDS, LocalRound, RoundConfig
from assay.errors import AssayError, ConfigError
from assay.events import entity_id
from assay.plugins import hookimpl
from assay.storage import Store, private_dir, sqlite_url
from assay.validation import BaselineReport, RuleRate, baseline_report
from assay.workload import SETUP_STEP

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.command("baseline")(baseline)


def parse_duration(text: str) -> float:
    """``20s``, ``10m``, ``1h`` or plain seconds."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"duration {text!r}: give a positive number with s, m or h (e.g. 10m)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def proc_entity_id(pid: int) -> str:
    """The sensor's identity of a live process: pid and start ticks (field 22 of /proc/PID/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError as exc:
        raise ChildError(f"process {pid} is gone before its identity was read: {exc}") from exc
    rest = raw[raw.rfind(b")") + 2 :].split()
    return entity_id(pid, int(rest[22 - 3]))


class BaselineRound(LocalRound):
    """Server, idle agent and watcher as in a round; the benign workload instead of an operation."""

    def run_baseline(
        self,
        duration: float,
        scratch: Path,
        cron_interval: float = 60.0,
        on_tick: Any = lambda elapsed: None,
    ) -> BaselineReport:
        cfg = self.config
        private_dir(cfg.data_dir)
        records_path = cfg.data_dir / "workload.jsonl"
        try:
            server, url = self._start_server()
            agent = self._start_agent(url)
            with httpx.Client(base_url=url, headers={"KEY": self.api_key}, timeout=10.0) as client:
                wait_until("the agent to enrol", lambda: self._enrolled(client), 30.0, [server, agent])
            agent_root = proc_entity_id(agent.pid)
            watcher, source = self._start_watcher(url, server, agent)
            setup_started = time.time()
            workload = Child(
                "workload",
                [
                    sys.executable,
                    "-m",
                    "assay.workload",
                    "--scratch",
                    str(scratch),
                    "--records",
                    str(records_path),
                    "--duration",
                    str(duration),
                    "--cron-interval",
                    str(cron_interval),
                ],
                cfg.data_dir / "workload.log",
            ).start()
            self.children.append(workload)
            workload_root = proc_entity_id(workload.pid)
            # Measuring starts when the set-up (keys, sshd, cron stand-in) is done: the first record.
            wait_until(
                "the workload to set up", lambda: _setup_done(records_path) is not None, 60.0, [workload]
            )
            started = _setup_done(records_path) or time.time()
            deadline = time.monotonic() + duration + 120.0  # the last cycle finishes, sshd stops
            while workload.alive():
                for child in (server, agent, watcher):
                    child.check()
                if time.monotonic() > deadline:
                    raise ChildError(f"the workload did not end within {duration + 120.0:.0f} s")
                on_tick(time.time() - started)
                time.sleep(0.25)
            ended = time.time()
            if workload.stop() != 0:
                raise ChildError(f"the workload failed:\n{workload.log_tail()}")
            agent.check()  # the agent was alive all along: its beacons ran through the whole baseline
            time.sleep(SETTLE_SECONDS)
            watcher.stop(timeout=30.0)
            if watcher.proc is not None and watcher.proc.returncode not in (0, -15):
                raise ChildError(
                    f"the watcher failed (exit {watcher.proc.returncode}):\n{watcher.log_tail()}"
                )
            store = Store.open(sqlite_url(cfg.data_dir), migrate=False)
            try:
                alerts = store.alerts(since=started, until=ended)
                agent_record = store.agent(self.paw)
            finally:
                store.close()
            records = [
                json.loads(line) for line in records_path.read_text(encoding="utf-8").splitlines() if line
            ]
            return baseline_report(
                alerts,
                workload_root=workload_root,
                agent_root=agent_root,
                started=started,
                ended=ended,
                setup_started=setup_started,
                step_records=records,
                meta={
                    "sensor_source": source,
                    "duration_requested": duration,
                    "workload_root": workload_root,
                    "agent_root": agent_root,
                    "agent_paw": self.paw,
                    "agent_last_seen": getattr(agent_record, "last_seen", None),
                    "data_dir": str(cfg.data_dir),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
        finally:
            self.stop_all()


def _setup_done(records: Path) -> float | None:
    """When the workload's set-up step ended, once its record is written."""
    try:
        first = records.read_text(encoding="utf-8").split("\n", 1)[0]
    except FileNotFoundError:
        return None
    if not first.endswith("}"):
        return None
    record = json.loads(first)
    if record.get("step") != SETUP_STEP:
        raise ChildError(f"the workload's first record is {record.get('step')!r}, not its set-up")
    if not record.get("ok"):
        raise ChildError(f"the workload's set-up failed: {record.get('error')}")
    return float(record["ended"])


def _rate_table(title: str, rates: list[RuleRate], hours: float) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for col, justify in (
        ("rule", "left"),
        ("techniques", "left"),
        ("alerts", "right"),
        ("per hour", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    table.add_column("example", overflow="fold")
    for r in rates:
        name = r.title + (f" [dim](allowlist {r.suppressed_by})[/]" if r.suppressed_by else "")
        table.add_row(name, ", ".join(r.techniques), str(r.count), f"{r.per_hour:.1f}", r.example or "")
    return table


def print_baseline(report: BaselineReport, console: Console) -> None:
    steps = Table(title="Workload steps", box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for col in ("step", "runs", "ok", "commands", "first error"):
        steps.add_column(col, justify="left" if col in ("step", "first error") else "right")
    for s in report.steps:
        steps.add_row(s.step, str(s.runs), str(s.ok), str(s.commands), (s.errors or [""])[0][:120])
    console.print(steps)
    console.print(_rate_table("False alerts (workload and agent)", report.false_alerts, report.hours))
    if report.suppressed:
        console.print(
            _rate_table("Suppressed by an allowlist (not counted)", report.suppressed, report.hours)
        )
    if report.setup:
        console.print(
            _rate_table("Workload set-up, before measuring (not counted)", report.setup, report.hours)
        )
    if report.outside:
        console.print(
            _rate_table("Other host activity meanwhile (not the workload's)", report.outside, report.hours)
        )
    colour = "green" if report.false_alerts_per_hour <= 1.0 else "red"
    console.print(
        f"[{colour}]{report.false_alert_count} false alerts in {report.hours * 60:.1f} min: "
        f"{report.false_alerts_per_hour:.2f} per hour[/]; agent alerts: {report.agent_alerts}"
    )


def baseline(
    duration: Annotated[str, typer.Option(help="How long to run the workload: 20s, 10m, 1h.")] = "10m",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the baseline keeps its database and logs (default: .assay/baselines/<time>)."
        ),
    ] = None,
    report: Annotated[Path, typer.Option(help="Where to write the JSON report.")] = Path(
        "assay-baseline.json"
    ),
    source: Annotated[str, typer.Option(help="Sensor source: auto, ebpf, audit or proc_connector.")] = "auto",
    rules: Annotated[list[Path] | None, typer.Option("--rules", help="Extra Sigma rules.")] = None,
    allowlist: Annotated[list[Path] | None, typer.Option("--allowlist", help="Extra allowlist YAML.")] = None,
    scratch: Annotated[
        Path | None,
        typer.Option(
            help="Scratch directory, removed at the end (default: /usr/local/src/assay-baseline-<random>)."
        ),
    ] = None,
    cron_interval: Annotated[float, typer.Option(help="Seconds between runs of the periodic jobs.")] = 60.0,
) -> None:
    """Run a benign workload with the sensor and the rules on; report alerts per hour by rule."""
    console = Console()
    seconds = parse_duration(duration)
    if os.geteuid() != 0:
        console.print(
            "[red]assay baseline needs root:[/] the sensor loads eBPF programs, and the workload creates a "
            "network namespace for its sshd."
        )
        raise typer.Exit(2)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    config = RoundConfig(
        data_dir=(data_dir or Path(".assay") / "baselines" / stamp).resolve(),
        rule_paths=list(rules or []),
        allowlist_paths=list(allowlist or []),
        source=source,
        group="baseline",
    )
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("benign workload", total=seconds)
        try:
            result = BaselineRound(config).run_baseline(
                seconds,
                scratch=(
                    scratch or Path("/usr/local/src") / f"assay-baseline-{secrets.token_hex(4)}"
                ).resolve(),
                cron_interval=cron_interval,
                on_tick=lambda elapsed: progress.update(task, completed=min(elapsed, seconds)),
            )
        except (AssayError, ConfigError) as exc:
            progress.stop()
            console.print(f"[red]baseline failed:[/] {exc}")
            console.print(f"logs: {config.data_dir}")
            raise typer.Exit(1) from exc
    print_baseline(result, console)
    report.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    console.print(f"report: {report.resolve()}   data and logs: {config.data_dir}")
    failed = [s.step for s in result.steps if s.ok < s.runs]
    if failed:
        console.print(f"[red]workload steps that failed at least once:[/] {', '.join(failed)}")
        raise typer.Exit(1)
