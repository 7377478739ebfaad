"""The benign workload: what an ordinary Linux server or developer host does, in scratch directories.

Each cycle runs every step once; meanwhile a cron stand-in (a long-lived shell started at set-up) runs a
directory of periodic jobs with ``run-parts`` every interval, as cron does. Nothing reaches the network:
the package is built locally and installed into a scratch root, git clones a local repository, ssh logs in
to the workload's own sshd in a network namespace. Everything lives under the scratch directory, which is
removed at the end; every process is started and stopped by this module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from assay.workload._run import CommandRecord, Runner, StepFailed, StepRecord
from assay.workload._sshd import Sshd, SshdError

HELLO_C = """#include <stdio.h>
#include <string.h>

static unsigned checksum(const char *s) {
    unsigned h = 5381;
    while (*s) h = h * 33u + (unsigned char)*s++;
    return h;
}

int main(int argc, char **argv) {
    const char *text = argc > 1 ? argv[1] : "hello";
    printf("%s %u %zu\\n", text, checksum(text), strlen(text));
    return 0;
}
"""

REPORT_PY = """import hashlib, json, pathlib, sqlite3, sys
root = pathlib.Path(sys.argv[1])
sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob('*')) if p.is_file()}
db = sqlite3.connect(root / 'inventory.sqlite')
db.execute('create table if not exists files (name text primary key, sha256 text)')
db.executemany('insert or replace into files values (?, ?)', sums.items())
db.commit()
print(json.dumps({'files': len(sums), 'rows': db.execute('select count(*) from files').fetchone()[0]}))
"""

CRON_JOBS = {
    "10-disk-usage": '#!/bin/sh\ndf -P > "$SPOOL/df.txt"\ndu -s "$SPOOL" >> "$SPOOL/du.txt"\n',
    "20-clean-old": "#!/bin/sh\nfind \"$SPOOL\" -name '*.tmp' -type f -mmin +1 -delete\n"
    ': > "$SPOOL/job.tmp"\n',
    "30-heartbeat": '#!/bin/sh\ndate -u +%FT%TZ >> "$SPOOL/heartbeat.log"\n'
    'uptime >> "$SPOOL/heartbeat.log"\n',
}

CRON_SH = """trap 'exit 0' TERM INT
jobs=$1 interval=$2 runs=$3
while :; do
    start=$(date +%s.%N)
    run-parts --report "$jobs"
    echo "$start $? $(date +%s.%N)" >> "$runs"
    i=0
    while [ "$i" -lt "$interval" ]; do sleep 1; i=$((i + 1)); done
done
"""

SETUP_STEP = "setup"

LOGROTATE_CONF = """{log} {{
    rotate 3
    size 1
    compress
    missingok
    notifempty
    create 0640 root root
}}
"""


class Stopped(Exception):
    """SIGTERM or SIGINT: the workload ends its current step and cleans up."""


@dataclass
class Workload:
    scratch: Path
    cron_interval: float = 60.0
    cycle_pause: float = 5.0
    records: list[StepRecord] = field(default_factory=list)
    on_record: Callable[[StepRecord], None] = lambda r: None
    _sshd: Sshd | None = None
    _cron: subprocess.Popen[bytes] | None = None
    _cron_runs: Path | None = None
    _cron_log: IO[bytes] | None = None
    _cycle: int = 0
    _stopping: bool = False

    # -- lifecycle ------------------------------------------------------------------------------------------
    def run(self, duration: float) -> list[StepRecord]:
        """Set up (sshd, the cron stand-in), then run cycles for ``duration`` seconds (or until a signal),
        then stop what was started and remove the scratch directory."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            # The set-up is scaffolding, not the workload measured: its record marks where measuring starts.
            self._step(SETUP_STEP, self._setup)
            deadline = time.monotonic() + duration
            while not self._stopping and time.monotonic() < deadline:
                self._cycle += 1
                for name, step in self.steps():
                    if self._stopping or time.monotonic() >= deadline:
                        break
                    self._step(name, step)
                self._sleep_until(min(deadline, time.monotonic() + self.cycle_pause))
        finally:
            self._teardown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(self.scratch, ignore_errors=True)
        return self.records

    def _teardown(self) -> None:
        cron, self._cron = self._cron, None
        if cron is not None and cron.poll() is None:
            cron.terminate()
            try:
                cron.wait(10)
            except subprocess.TimeoutExpired:
                cron.kill()
                cron.wait(5)
        if cron is not None:
            self._cron_records()
        if self._cron_log is not None:
            self._cron_log.close()
            self._cron_log = None
        if self._sshd is not None:
            self._sshd.stop()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _sleep_until(self, until: float) -> None:
        while not self._stopping and time.monotonic() < until:
            time.sleep(min(0.25, max(0.0, until - time.monotonic())))

    def _step(self, name: str, fn: Callable[[Runner, Path], None]) -> None:
        record = StepRecord(step=name, cycle=self._cycle, started=time.time())
        workdir = self.scratch / name
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            fn(Runner(record, workdir), workdir)
        except (StepFailed, SshdError, OSError) as exc:
            record.error = str(exc)
        record.ended = time.time()
        self._emit(record)

    def _emit(self, record: StepRecord) -> None:
        self.records.append(record)
        self.on_record(record)

    def steps(self) -> list[tuple[str, Callable[[Runner, Path], None]]]:
        return [
            ("package-install", self.package_install),
            ("compile-c", self.compile_c),
            ("git", self.git),
            ("ssh-login", self.ssh_login),
            ("python-scripts", self.python_scripts),
            ("logrotate", self.logrotate),
        ]

    # -- steps ----------------------------------------------------------------------------------------------
    def _setup(self, run: Runner, work: Path) -> None:
        self._sshd = Sshd(work / "sshd").start()
        run.run(["ssh-keygen", "-l", "-f", str(self._sshd.key.with_suffix(".pub"))])
        jobs = work / "cron.d"
        jobs.mkdir(exist_ok=True)
        for name, body in CRON_JOBS.items():
            path = jobs / name
            path.write_text(body, encoding="utf-8")
            path.chmod(0o755)
        spool = self.scratch / "cron-jobs"
        spool.mkdir(exist_ok=True)
        script = work / "cron.sh"
        script.write_text(CRON_SH, encoding="utf-8")
        self._cron_runs = work / "cron.runs"
        # A cron stand-in: a long-lived shell that runs the job directory every interval, the way cron's
        # `sh -c 'run-parts ...'` does (cron itself reads only the host's crontabs).
        self._cron_log = (work / "cron.log").open("ab")
        self._cron = subprocess.Popen(
            ["/bin/sh", str(script), str(jobs), str(int(self.cron_interval)), str(self._cron_runs)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._cron_log,
            env={**os.environ, "SPOOL": str(spool)},
        )

    def _cron_records(self) -> None:
        """One `cron-jobs` record per run of the job directory, from the stand-in's own log of exit codes."""
        if self._cron_runs is None or not self._cron_runs.exists():
            return
        for n, line in enumerate(self._cron_runs.read_text(encoding="utf-8").splitlines(), 1):
            started, rc, ended = line.split()
            record = StepRecord(step="cron-jobs", cycle=n, started=float(started), ended=float(ended))
            record.commands.append(CommandRecord(["run-parts", "--report", "cron.d"], int(rc), 0.0))
            self._emit(record)

    def package_install(self, run: Runner, work: Path) -> None:
        """Build a small .deb and install, list and remove it in a scratch dpkg root (no network)."""
        pkg, root = work / f"pkg-{self._cycle}", work / f"root-{self._cycle}"
        name = "assay-baseline-hello"
        (pkg / "DEBIAN").mkdir(parents=True, exist_ok=True)
        (pkg / "usr/bin").mkdir(parents=True, exist_ok=True)
        (pkg / f"usr/share/doc/{name}").mkdir(parents=True, exist_ok=True)
        (pkg / "DEBIAN/control").write_text(
            f"Package: {name}\nVersion: 1.0-{self._cycle}\nArchitecture: all\n"
            "Maintainer: Assay <assay@localhost>\nDescription: benign baseline package\n",
            encoding="utf-8",
        )
        tool = pkg / "usr/bin" / name
        tool.write_text("#!/bin/sh\necho hello from the baseline package\n", encoding="utf-8")
        tool.chmod(0o755)
        (pkg / f"usr/share/doc/{name}/README").write_text("A package for Assay's benign baseline.\n")
        for sub in ("info", "updates", "triggers"):
            (root / "var/lib/dpkg" / sub).mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").touch()
        deb = work / f"{name}_{self._cycle}.deb"
        dpkg = ["dpkg", f"--root={root}", "--force-not-root", f"--log={work / 'dpkg.log'}"]
        run.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)])
        run.run(["dpkg-deb", "--info", str(deb)])
        run.run([*dpkg, "-i", str(deb)])
        run.run([*dpkg, "-L", name])
        run.run([str(root / "usr/bin" / name)])
        run.run([*dpkg, "-r", name])
        shutil.rmtree(pkg)
        shutil.rmtree(root)
        deb.unlink()

    def compile_c(self, run: Runner, work: Path) -> None:
        src = work / "checksum.c"
        src.write_text(HELLO_C, encoding="utf-8")
        run.run(["gcc", "-O2", "-Wall", "-o", str(work / "checksum"), str(src)])
        run.run([str(work / "checksum"), f"cycle-{self._cycle}"])
        (work / "checksum").unlink()

    def git(self, run: Runner, work: Path) -> None:
        repo, clone = work / f"repo-{self._cycle}", work / f"clone-{self._cycle}"
        repo.mkdir()
        ident = [
            "-c",
            "user.name=Baseline",
            "-c",
            "user.email=baseline@localhost",
            "-c",
            "init.defaultBranch=main",
        ]
        git = ["git", *ident]
        run.run([*git, "init", "-q", str(repo)])
        (repo / "README.md").write_text(f"# cycle {self._cycle}\n", encoding="utf-8")
        (repo / "app.py").write_text("print('v1')\n", encoding="utf-8")
        run.run([*git, "add", "."], cwd=repo)
        run.run([*git, "commit", "-q", "-m", "initial commit"], cwd=repo)
        run.run([*git, "checkout", "-q", "-b", "feature"], cwd=repo)
        (repo / "app.py").write_text("print('v2')\n", encoding="utf-8")
        run.run([*git, "commit", "-q", "-am", "feature: v2"], cwd=repo)
        run.run([*git, "checkout", "-q", "main"], cwd=repo)
        run.run([*git, "merge", "-q", "--no-edit", "feature"], cwd=repo)
        run.run([*git, "log", "--oneline", "-n", "5"], cwd=repo)
        run.run([*git, "clone", "-q", str(repo), str(clone)])
        run.run([*git, "status", "--short"], cwd=clone)
        run.run([*git, "diff", "HEAD~1", "--stat"], cwd=clone)
        shutil.rmtree(repo)
        shutil.rmtree(clone)

    def ssh_login(self, run: Runner, work: Path) -> None:
        if self._sshd is None:
            raise StepFailed("sshd is not running (see the sshd-start step)")
        ssh = self._sshd.client_argv("ssh")
        run.run([*ssh, "root@127.0.0.1", "uptime"])
        run.run([*ssh, "root@127.0.0.1", "df -P / && free -m"])
        payload = work / "notes.txt"
        payload.write_text(f"cycle {self._cycle}\n", encoding="utf-8")
        scp = self._sshd.client_argv("scp")
        run.run([*scp, "-q", str(payload), f"root@127.0.0.1:{work / 'copied.txt'}"])
        if (work / "copied.txt").read_text(encoding="utf-8") != payload.read_text(encoding="utf-8"):
            raise StepFailed("scp did not copy the file")

    def python_scripts(self, run: Runner, work: Path) -> None:
        data = work / "data"
        data.mkdir(exist_ok=True)
        for i in range(3):
            (data / f"item-{i}.json").write_text(f'{{"id": {i}, "cycle": {self._cycle}}}\n', encoding="utf-8")
        script = work / "inventory.py"
        script.write_text(REPORT_PY, encoding="utf-8")
        run.run([sys.executable, str(script), str(data)])
        run.run([sys.executable, "-m", "json.tool", str(data / "item-0.json")])
        run.run([sys.executable, "-m", "compileall", "-q", str(work)])

    def logrotate(self, run: Runner, work: Path) -> None:
        log = work / "app.log"
        with log.open("a", encoding="utf-8") as fh:
            for i in range(50):
                fh.write(f"{time.time():.3f} cycle {self._cycle} request {i} ok\n")
        conf = work / "logrotate.conf"
        conf.write_text(LOGROTATE_CONF.format(log=log), encoding="utf-8")
        run.run(["logrotate", "-s", str(work / "logrotate.state"), str(conf)])
        if not (work / "app.log.1.gz").exists():
            raise StepFailed("logrotate did not rotate app.log")
