"""Learning parsers: facts harvested from any link's output, whatever parsers its ability declares (Caldera's
learning service, ``app/learning/p_ip.py`` and ``p_path.py``). Sans-I/O: output in, (trait, value) pairs out.

Caldera runs them on the output of every successful link whose executor has no parsers of its own, when the
operation's ``use_learning_parsers`` is on (its default). Each learner is a regular expression for one kind of
value, with a check that the match really is one (``999.1.1.1`` is not an address):

==================  ==========================================================================================
``host.ip.address``  IPv4 and uncompressed IPv6 addresses (not the unspecified ``0.0.0.0``)
``host.file.path``   absolute paths with at least two components (``/etc/passwd``, ``/tmp/x/y.txt``)
``host.user.name``   the user of an ``id``-style line: ``uid=1000(alice)`` → ``alice`` (Assay's addition)
==================  ==========================================================================================
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])")
# A path starts at a separator not preceded by a word character or another separator (so no URL hosts), and
# runs over the characters paths usually hold; a trailing dot or colon is punctuation, not the path.
_PATH = re.compile(r"(?<![\w/:.~-])(/(?:[\w.@+-]+/)+[\w.@+-]+|/(?:[\w.@+-]+/)+)")
_UID = re.compile(r"\buid=\d+\(([a-z_][a-z0-9_.-]{0,31}\$?)\)")
MAX_LEARNED = 256  # per link: a huge listing teaches the first ones, not a million facts


def _addresses(blob: str) -> Iterator[str]:
    for pattern in (_IPV4, _IPV6):
        for match in pattern.finditer(blob):
            try:
                address = ipaddress.ip_address(match.group())
            except ValueError:
                continue
            if not address.is_unspecified:
                yield str(address)


def _paths(blob: str) -> Iterator[str]:
    for match in _PATH.finditer(blob):
        path = match.group(1).rstrip(".:")
        if path.count("/") >= 2 or not path.endswith("/"):
            yield path


def _users(blob: str) -> Iterator[str]:
    for match in _UID.finditer(blob):
        yield match.group(1)


@dataclass(frozen=True, slots=True)
class Learner:
    trait: str
    find: Callable[[str], Iterator[str]]


LEARNERS: tuple[Learner, ...] = (
    Learner("host.ip.address", _addresses),
    Learner("host.file.path", _paths),
    Learner("host.user.name", _users),
)


def learn(blob: str, learners: tuple[Learner, ...] = LEARNERS) -> list[tuple[str, str]]:
    """Every (trait, value) the learners find in ``blob``, each once, in order of appearance per learner."""
    out: dict[tuple[str, str], None] = {}
    for learner in learners:
        for value in learner.find(blob):
            out.setdefault((learner.trait, value), None)
            if len(out) >= MAX_LEARNED:
                return list(out)
    return list(out)
