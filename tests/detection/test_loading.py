"""Loading: bad rules are reported with file:line and rule id, and never hide the others."""

from __future__ import annotations

from pathlib import Path

from assay.detection import Engine
from assay.errors import DetectionError

GOOD = """\
title: Good
id: 11111111-1111-4111-8111-111111111111
logsource: {product: linux, category: process_creation}
detection:
  sel: {Image|endswith: /whoami}
  condition: sel
tags: [attack.t1033]
level: low
"""


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_bad_rules_are_reported_and_the_rest_still_load(tmp_path: Path) -> None:
    _write(tmp_path, "a_good.yml", GOOD)
    _write(tmp_path, "b_yaml.yml", "title: x\ndetection:\n  sel: [unclosed\n")
    _write(
        tmp_path,
        "c_condition.yml",
        "title: Bad condition\nid: 22222222-2222-4222-8222-222222222222\n"
        "logsource: {product: linux, category: process_creation}\n"
        "detection:\n  sel: {Image: x}\n  condition: sel and nosuch\n",
    )
    _write(
        tmp_path, "d_modifier.yml", GOOD.replace("1111", "3333").replace("Image|endswith", "Image|nosuchmod")
    )
    engine = Engine.load(rule_paths=[tmp_path], include_builtin=False)
    assert [r.title for r in engine.rules if r.supported] == ["Good"]
    by_file = {Path(e.source.file).name: e for e in engine.errors if e.source and e.source.file}
    assert set(by_file) == {"b_yaml.yml", "c_condition.yml", "d_modifier.yml"}
    assert all(isinstance(e, DetectionError) for e in engine.errors)
    assert str(by_file["b_yaml.yml"]).startswith(f"{tmp_path / 'b_yaml.yml'}:4")
    cond = by_file["c_condition.yml"]
    assert cond.source is not None and cond.source.rule == "22222222-2222-4222-8222-222222222222"
    assert "nosuch" in cond.message
    assert "nosuchmod" in by_file["d_modifier.yml"].message


def test_unsupported_rules_are_kept_with_a_precise_reason(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "hostname.yml",
        "title: Pool\nid: 44444444-4444-4444-8444-444444444444\n"
        "logsource: {product: linux, category: network_connection}\n"
        "detection:\n  sel:\n    Initiated: 'true'\n    DestinationHostname: pool.example\n"
        "  condition: sel\n",
    )
    engine = Engine.load(rule_paths=[tmp_path], include_builtin=False)
    (info,) = engine.rules
    assert not info.supported and engine.errors == []
    assert info.reason is not None and "'DestinationHostname'" in info.reason and "host names" in info.reason
    assert info.line == 7  # the line of the field, so `assay rules check` points at it
    assert engine.mapped_techniques == frozenset()


def test_missing_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    engine = Engine.load(rule_paths=[tmp_path / "nope"], include_builtin=False)
    (err,) = engine.errors
    assert "no such rule file" in str(err)


def test_a_rule_file_named_twice_loads_once(tmp_path: Path) -> None:
    good = _write(tmp_path, "good.yml", GOOD)
    engine = Engine.load(rule_paths=[tmp_path, good, tmp_path / "." / "good.yml"], include_builtin=False)
    assert [r.title for r in engine.rules] == ["Good"] and engine.errors == []
    # The built-ins given as a path besides include_builtin (as the server once did) load once as well.
    builtin = Engine.load(include_builtin=True)
    from assay.detection import builtin_rule_paths

    both = Engine.load(rule_paths=builtin_rule_paths(), include_builtin=True)
    assert len(both.rules) == len(builtin.rules) == len({r.id for r in builtin.rules})


def test_two_rules_with_one_id_are_an_error_naming_both(tmp_path: Path) -> None:
    _write(tmp_path, "a.yml", GOOD)
    _write(tmp_path, "b.yml", GOOD.replace("title: Good", "title: Copy"))
    engine = Engine.load(rule_paths=[tmp_path], include_builtin=False)
    assert [r.title for r in engine.rules] == ["Good"]
    (err,) = engine.errors
    assert err.source is not None and err.source.file == str(tmp_path / "b.yml") and err.source.line == 1
    assert f"first defined at {tmp_path / 'a.yml'}:1" in err.message
