"""`assay validate`: run procedures Assay has never seen as one round, and say what the detections caught.

- ``--atomics PATH [--techniques T1059.004,...]``: Atomic Red Team tests (sh/bash, Linux), one round, input
  arguments at their defaults, prerequisites checked by the agent before each test (in the sandbox when the
  round is sandboxed); one that needs the network to get, or that fails, ends the test ``not_executed`` with
  reason ``prerequisite``.
- ``--adversary ID --content PATH...``: the same for Caldera content (stockpile abilities and adversaries).
- ``--rescore ROUND``: no run: the stored round classified again with today's rules, from storage.
- ``--compare ROUND|FILE|last`` and ``--fail-on-regression``: the change from another round; a regression
  fails the command, so Assay can gate a detection-as-code pipeline.

Imported content is classified at load (``assay.content.classify``) and its class decides where it runs:
``safe`` anywhere, ``disruptive`` with ``--allow disruptive`` or ``--sandbox``, ``destructive`` only with
``--sandbox``. What may not run is a ``not_executed`` link whose reason says so.

Exit codes: 0 the round ran (and, with ``--fail-on-regression``, nothing regressed); 1 the round could not
run; 2 bad usage (not root, bad option, nothing selected, an unknown round or unreadable report to compare
with); 3 ``--fail-on-regression`` and a technique detected in the compared round is not detected now.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from assay import attack
from assay.cli._progress import run_round
from assay.cli._round import DEFAULT_DB, RoundConfig
from assay.cli._stored import previous_report, rescore
from assay.cli._table import print_delta, print_report, print_written
from assay.content import Ability, Safety, load_paths
from assay.errors import AssayError, AttackError, ConfigError
from assay.plugins import hookimpl
from assay.reports import write_reports
from assay.storage import normalize_url, private_dir
from assay.validation import RoundDelta, RoundReport, compare

EXIT_REGRESSION = 3


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.command("validate")(validate)


def _techniques(value: str | None) -> list[str]:
    if not value:
        return []
    out = []
    for part in value.split(","):
        if part.strip():
            try:
                out.append(attack.normalize(part.strip()))
            except AttackError as exc:
                raise ConfigError(f"--techniques: {exc.message}") from exc
    return out


def _overrides(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        ability_id, sep, cls = value.partition("=")
        if not sep or not ability_id.strip():
            raise ConfigError(f"--safety {value!r}: expected ABILITY_ID=safe|disruptive|destructive")
        try:
            out[ability_id.strip()] = Safety(cls.strip().lower()).value
        except ValueError as exc:
            raise ConfigError(
                f"--safety {value!r}: the class must be safe, disruptive or destructive"
            ) from exc
    return out


def _selected(abilities: dict[str, Ability], techniques: list[str]) -> list[Ability]:
    def wanted(a: Ability) -> bool:
        return not techniques or any(
            a.technique_id == t or a.technique_id.startswith(t + ".") for t in techniques
        )

    chosen = [a for a in abilities.values() if "linux" in a.platforms and wanted(a)]
    return sorted(chosen, key=lambda a: (a.technique_id, str(a.additional_info.get("atomic_test", "")), a.id))


def _write_adversary(data_dir: Path, abilities: list[Ability], techniques: list[str], source: Path) -> str:
    """An adversary of the selected tests, in Caldera's format, for the server to load with the content."""
    ids = [a.id for a in abilities]
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
    adversary_id = f"assay-validate-{digest}"
    what = ", ".join(techniques) if techniques else "every Linux sh/bash test"
    doc = {
        "id": adversary_id,
        "name": f"Atomic Red Team: {len(ids)} tests ({what})",
        "description": f"assay validate --atomics {source}",
        "atomic_ordering": ids,
    }
    (data_dir / "validate-adversary.yml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return adversary_id


def _print_classes(abilities: list[Ability], config: RoundConfig, sandbox: bool, console: Console) -> None:
    counts = {s: sum(1 for a in abilities if a.safety is s) for s in Safety}
    runs = (
        "every class (the sandbox contains them)"
        if sandbox
        else ("safe and disruptive" if config.max_safety != "safe" else "safe only")
    )
    console.print(
        f"{len(abilities)} procedures: {counts[Safety.SAFE]} safe, {counts[Safety.DISRUPTIVE]} disruptive, "
        f"{counts[Safety.DESTRUCTIVE]} destructive; this round runs {runs}"
    )


def _finish(
    report: RoundReport,
    console: Console,
    out: Path,
    baseline: dict[str, Any] | None,
    title: str,
) -> RoundDelta | None:
    console.print()
    print_report(report, console)
    data = report.to_dict()
    delta = None
    if baseline is not None:
        delta = compare(baseline, data)
        data["change"] = delta.to_dict()
        print_delta(delta, console, title=title)
    print_written(write_reports(data, out), console)
    return delta


def validate(
    atomics: Annotated[
        Path | None, typer.Option(help="Atomic Red Team folder (atomic-red-team or its atomics/) to run.")
    ] = None,
    techniques: Annotated[
        str | None, typer.Option(help="Only these techniques (comma-separated; a parent includes its subs).")
    ] = None,
    adversary: Annotated[
        str | None, typer.Option(help="Caldera adversary id to run (with --content).")
    ] = None,
    content: Annotated[
        list[Path] | None, typer.Option("--content", help="Caldera abilities/adversaries (and overrides).")
    ] = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Run the agent, and so every procedure, in the sandbox.")
    ] = False,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="'disruptive': also run disruptive procedures here.")
    ] = None,
    safety: Annotated[
        list[str] | None,
        typer.Option("--safety", help="Override a class: ABILITY_ID=safe|disruptive|destructive."),
    ] = None,
    rescore_round: Annotated[
        str | None, typer.Option("--rescore", help="Re-score a stored round (id) with today's rules; no run.")
    ] = None,
    compare_with: Annotated[
        str | None, typer.Option("--compare", help="A round id, a report file, or 'last': show the change.")
    ] = None,
    fail_on_regression: Annotated[
        bool,
        typer.Option(
            "--fail-on-regression", help=f"Exit {EXIT_REGRESSION} if a compared detection regressed."
        ),
    ] = False,
    rules: Annotated[list[Path] | None, typer.Option("--rules", help="Extra Sigma rules.")] = None,
    db: Annotated[
        str, typer.Option(help="Database the rounds are stored in (a SQLite path or a URL).")
    ] = DEFAULT_DB,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where this round keeps its logs (default: .assay/rounds/<time>).")
    ] = None,
    report: Annotated[
        Path,
        typer.Option(
            help="Where to write the JSON report; the Markdown (.md), HTML (.html) and ATT&CK Navigator "
            "layer (assay-layer.json) are written beside it."
        ),
    ] = Path("assay-report.json"),
    source: Annotated[str, typer.Option(help="Sensor source: auto, ebpf, audit or proc_connector.")] = "auto",
    timeout: Annotated[float, typer.Option(help="Seconds the whole operation may take.")] = 3600.0,
) -> None:
    """Run Atomic Red Team tests or Caldera content as one round and print what was detected, and why not."""
    console = Console()
    db_url = normalize_url(db)
    try:
        if fail_on_regression and not compare_with and not rescore_round:
            raise ConfigError(
                "--fail-on-regression needs --compare (or --rescore, compared with the original)"
            )
        if rescore_round:
            _rescore(
                rescore_round, db_url, list(rules or []), compare_with, fail_on_regression, report, console
            )
            return
        config, selected = _plan(
            atomics,
            techniques,
            adversary,
            content,
            sandbox,
            allow,
            safety,
            rules,
            db_url,
            data_dir,
            source,
            timeout,
            console,
        )
        baseline = None
        if compare_with and compare_with != "last":
            baseline = previous_report(compare_with, db_url)  # before running: a typo should not cost a round
    except ConfigError as exc:
        console.print(f"[red]assay validate:[/] {exc}")
        raise typer.Exit(2) from exc
    if os.geteuid() != 0:
        console.print("[red]assay validate needs root:[/] the sensor loads eBPF programs (or audit).")
        raise typer.Exit(2)
    _print_classes(selected, config, sandbox, console)
    started = time.monotonic()
    result = run_round(config, console)
    if compare_with == "last":
        try:
            baseline = previous_report(
                "last", db_url, adversary_id=config.adversary_id, before=result.round_id
            )
        except ConfigError as exc:
            console.print(f"[yellow]{exc}[/]")
    delta = _finish(result.report, console, report, baseline, f"Change since {compare_with}")
    console.print(
        f"sensor: {result.sensor_source}, {result.report.events_total} events "
        f"({result.report.events_dropped} dropped); round took {time.monotonic() - started:.1f} s"
    )
    console.print(f"round: {result.round_id} (stored in {db})   data and logs: {result.data_dir}")
    _gate(delta, fail_on_regression, console)


def _plan(
    atomics: Path | None,
    techniques: str | None,
    adversary: str | None,
    content: list[Path] | None,
    sandbox: bool,
    allow: list[str] | None,
    safety: list[str] | None,
    rules: list[Path] | None,
    db_url: str,
    data_dir: Path | None,
    source: str,
    timeout: float,
    console: Console,
) -> tuple[RoundConfig, list[Ability]]:
    """The round to run and the procedures it selects, or a ConfigError saying what is wrong."""
    if (atomics is None) == (adversary is None):
        raise ConfigError("give --atomics PATH, or --adversary ID with --content PATH...")
    bad = [a for a in allow or [] if a != "disruptive"]
    if bad:
        raise ConfigError(f"--allow {bad[0]!r}: only 'disruptive' (destructive procedures need --sandbox)")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = (data_dir or Path(".assay") / "rounds" / f"validate-{stamp}").resolve()
    private_dir(run_dir)
    paths = list(content or [])
    overrides = _overrides(list(safety or []))
    if overrides:
        override_file = run_dir / "validate-safety.yml"
        override_file.write_text(yaml.safe_dump({"safety_overrides": overrides}), encoding="utf-8")
        paths.append(override_file)
    wanted = _techniques(techniques)
    if atomics is not None:
        if not atomics.exists():
            raise ConfigError(f"--atomics {atomics}: no such file or directory")
        paths.insert(0, atomics.resolve())
    loaded = load_paths(paths)
    for error in loaded.errors.errors[:5]:
        console.print(f"[yellow]content error (skipped):[/] {error}")
    if len(loaded.errors.errors) > 5:
        console.print(f"[yellow]... and {len(loaded.errors.errors) - 5} more (assay content check)[/]")
    if atomics is not None:
        selected = _selected(
            {k: a for k, a in loaded.library.abilities.items() if a.plugin == "atomic-red-team"}, wanted
        )
        if not selected:
            raise ConfigError(
                f"no Linux sh/bash Atomic test under {atomics} matches {techniques or 'any technique'}"
            )
        adversary_id = _write_adversary(run_dir, selected, wanted, atomics)
        paths.append(run_dir / "validate-adversary.yml")
    else:
        assert adversary is not None
        found = loaded.library.adversary(adversary)
        if found is None:
            raise ConfigError(f"--adversary {adversary}: not in the --content given")
        selected = [
            loaded.library.abilities[a] for a in found.atomic_ordering if a in loaded.library.abilities
        ]
        adversary_id = adversary
    config = RoundConfig(
        data_dir=run_dir,
        adversary_id=adversary_id,
        content_paths=paths,
        rule_paths=list(rules or []),
        source=source,
        group="validate",
        timeout=timeout,
        db_url=db_url,
        kind="validate",
        max_safety="disruptive" if allow else "safe",
        sandbox=sandbox,
    )
    return config, selected


def _rescore(
    ref: str,
    db_url: str,
    rules: list[Path],
    compare_with: str | None,
    fail_on_regression: bool,
    out: Path,
    console: Console,
) -> None:
    try:
        done = rescore(db_url, ref, rules)
        baseline = previous_report(compare_with, db_url) if compare_with else done.original.report
    except ConfigError as exc:
        console.print(f"[red]assay validate:[/] {exc}")
        raise typer.Exit(2) from exc
    except AssayError as exc:
        console.print(f"[red]re-scoring failed:[/] {exc}")
        raise typer.Exit(1) from exc
    title = (
        f"Change since {compare_with}" if compare_with else f"Change since round {done.original.id} as scored"
    )
    delta = _finish(done.report, console, out, baseline, title)
    console.print(f"round: {done.round_id} (re-scored from {done.original.id}, stored in {db_url})")
    _gate(delta, fail_on_regression, console)


def _gate(delta: RoundDelta | None, fail_on_regression: bool, console: Console) -> None:
    if fail_on_regression and delta is not None and delta.regressions:
        ids = ", ".join(c.technique_id for c in delta.regressions)
        console.print(f"[bold red]regressed:[/] {ids} (exit {EXIT_REGRESSION})")
        raise typer.Exit(EXIT_REGRESSION)
