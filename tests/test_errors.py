from __future__ import annotations

from assay.errors import ContentError, ErrorCollector, Source


def test_error_says_where_first() -> None:
    err = ContentError("unknown executor 'cmd2'", Source(file="a.yml", line=7, field="executor"))
    assert str(err) == "a.yml:7, field 'executor': unknown executor 'cmd2'"
    assert err.to_dict()["line"] == 7


def test_collector_keeps_going_and_does_not_swallow_bugs() -> None:
    errors = ErrorCollector()
    loaded = []
    for i in range(3):
        with errors.capture():
            if i == 1:
                raise ContentError("bad", Source(file=f"{i}.yml"))
            loaded.append(i)
    assert loaded == [0, 2] and len(errors) == 1
    try:
        with errors.capture():
            raise KeyError("a bug, not bad input")
    except KeyError:
        pass
    else:
        raise AssertionError("programming errors must propagate")
