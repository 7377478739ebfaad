"""A realistic benign workload for the false-positive baseline (`assay baseline`).

Package installs into a scratch root, C compilation, git, cron-like jobs, ssh logins to a private sshd in a
network namespace, python scripts and log rotation; every command recorded with its exit code.

>>> from assay.workload import Workload
>>> Workload(scratch=Path("/tmp/x")).run(duration=20.0)  # doctest: +SKIP
"""

from assay.workload._run import CommandRecord, Runner, StepFailed, StepRecord
from assay.workload._sshd import Sshd, SshdError
from assay.workload._steps import SETUP_STEP, Workload

STEPS = (
    "sshd-start",
    "package-install",
    "compile-c",
    "git",
    "ssh-login",
    "python-scripts",
    "logrotate",
    "cron-jobs",
)

__all__ = [
    "SETUP_STEP",
    "STEPS",
    "CommandRecord",
    "Runner",
    "Sshd",
    "SshdError",
    "StepFailed",
    "StepRecord",
    "Workload",
]
