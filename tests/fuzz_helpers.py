"""Shared pieces of the hostile-input fuzz tests: value strategies, a mutator of valid documents, a hang
guard and the property every loader must keep (load, or raise Assay's own error saying where)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import strategies as st

from assay.errors import AssayError

scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "linux", "sh", "T1059", "t1082.001", "#{x}", "..", "2001-13-45", "|", "*", "1e400"]),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8) | scalars.map(str), inner, max_size=4),
    ),
    max_leaves=12,
)


def mutate(data: st.DataObject, doc: Any, keys: list[str]) -> Any:
    """``doc`` with one value somewhere inside replaced by a drawn one (or removed, or a key added)."""
    if not isinstance(doc, dict | list) or not doc or data.draw(st.integers(0, 3)) == 0:
        return data.draw(values)
    if isinstance(doc, list):
        i = data.draw(st.integers(0, len(doc) - 1))
        return [*doc[:i], mutate(data, doc[i], keys), *doc[i + 1 :]]
    out = dict(doc)
    action = data.draw(st.sampled_from(["descend", "descend", "delete", "add"]))
    key = data.draw(st.sampled_from(sorted(out)))
    if action == "delete":
        del out[key]
    elif action == "add":
        out[data.draw(st.sampled_from(keys) | st.text(max_size=8))] = data.draw(values)
    else:
        out[key] = mutate(data, out[key], keys)
    return out


class Hang(Exception):
    """Raised by :func:`no_hang` (not an Assay error, so the property fails)."""


@contextmanager
def no_hang(seconds: float = 10.0) -> Iterator[None]:
    """Fail an example that takes longer than ``seconds`` (a hang), instead of stalling the suite."""

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def says_where(error: AssayError, file: str | None = None) -> None:
    """The error names a place: ``file`` (when given) and a line or a field."""
    assert isinstance(error, AssayError), repr(error)
    src = error.source
    assert src is not None, f"no location: {error}"
    if file is not None:
        assert src.file == file, f"wrong file in {error}"
        assert src.line or src.field, f"no line or field in {error}"
    else:
        assert src.field or src.line, f"no field in {error}"
    assert error.message.strip(), repr(error)
