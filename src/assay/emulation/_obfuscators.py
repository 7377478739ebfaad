"""Obfuscators: how a link's command is encoded before the agent gets it (Caldera's ``plain-text`` and
``base64``). The link keeps the plain text beside it (``plaintext_command``) for reports and validation."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from assay.errors import EmulationError


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _plain(command: str, executor: str) -> str:
    return command


def _base64(command: str, executor: str) -> str:
    if executor in ("sh", "bash", "zsh", "proc"):
        # The decoded script runs in the executor's own shell: `$$`, `exit` and traps behave as in plain text.
        return f'eval "$(echo {_b64(command)} | base64 -d)"'
    if executor in ("python", "python3"):
        return f"exec(__import__('base64').b64decode('{_b64(command)}').decode())"
    if executor in ("psh", "pwsh"):
        encoded = base64.b64encode(command.encode("utf-16-le")).decode()
        return f"powershell -Enc {encoded}"
    return command  # an executor with no known decoder runs plain text rather than something broken


@dataclass(frozen=True, slots=True)
class Obfuscator:
    name: str
    description: str
    apply: Callable[[str, str], str]


OBFUSCATORS: dict[str, Obfuscator] = {
    "plain-text": Obfuscator(
        "plain-text", "Does no obfuscation to any command, instead running it in plain text", _plain
    ),
    "base64": Obfuscator("base64", "Obfuscates commands in base64, decoded by the executor's shell", _base64),
}
_ALIASES = {
    "plain": "plain-text",
    "plaintext": "plain-text",
    "plain_text": "plain-text",
    "base64basic": "base64",
}


def obfuscator(name: str) -> Obfuscator:
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    found = OBFUSCATORS.get(key)
    if found is None:
        raise EmulationError(f"unknown obfuscator {name!r}; known: {', '.join(OBFUSCATORS)}")
    return found
