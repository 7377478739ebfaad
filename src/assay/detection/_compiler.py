"""Lower a pySigma rule (after the processing pipeline ran on it) into the boolean tree of ``_ir``.

Every Sigma value type pySigma produces is handled here with the specification's meaning, or refused with a
:class:`~assay.errors.RuleUnsupported` that names the construct: a rule is never approximated.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaQueryExpression,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

from assay.detection._ir import (
    FULLTEXT,
    And,
    BoolTest,
    CidrTest,
    CompareOp,
    CompareTest,
    ExistsTest,
    FieldEqTest,
    FieldRef,
    Match,
    Node,
    Not,
    NullTest,
    NumEqTest,
    Or,
    RegexTest,
    StrKind,
    StrTest,
    TimePartTest,
    simplify,
)
from assay.errors import RuleUnsupported

_INDEXED = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<index>\d+)\]$")

_COMPARE: dict[CompareOperators, CompareOp] = {
    CompareOperators.LT: "lt",
    CompareOperators.LTE: "lte",
    CompareOperators.GT: "gt",
    CompareOperators.GTE: "gte",
    CompareOperators.NEQ: "neq",
}

_TIME_PARTS = {
    TimestampPart.MINUTE: "minute",
    TimestampPart.HOUR: "hour",
    TimestampPart.DAY: "day",
    TimestampPart.WEEK: "week",
    TimestampPart.MONTH: "month",
    TimestampPart.YEAR: "year",
}

_RE_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
    SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
    SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
}


def field_ref(name: str) -> FieldRef:
    """``process.args[1]`` → element 1 of the list field ``process.args``."""
    m = _INDEXED.match(name)
    if m:
        return FieldRef(m.group("name"), int(m.group("index")))
    return FieldRef(name)


def compile_rule(rule: SigmaRule) -> Node:
    """The rule's whole condition: its condition strings are alternatives (a list of conditions ORs)."""
    alternatives: list[Node] = []
    for cond in rule.detection.parsed_condition:
        alternatives.append(lower(cond.parsed))
    return simplify(Or(tuple(alternatives)))


def lower(cond: Any) -> Node:
    if isinstance(cond, ConditionAND):
        return And(tuple(lower(a) for a in cond.args))
    if isinstance(cond, ConditionOR):
        return Or(tuple(lower(a) for a in cond.args))
    if isinstance(cond, ConditionNOT):
        return Not(lower(cond.args[0]))
    if isinstance(cond, ConditionFieldEqualsValueExpression):
        return _value(field_ref(cond.field), cond.value, keyword=False)
    if isinstance(cond, ConditionValueExpression):
        return _value(FieldRef(FULLTEXT), cond.value, keyword=True)
    raise RuleUnsupported(f"condition element {type(cond).__name__} is not implemented")


def _value(field: FieldRef, value: Any, *, keyword: bool) -> Node:
    if isinstance(value, SigmaExpansion):
        # Values expanded by base64offset/windash are alternatives even under `|all` (pySigma's contract).
        return Or(tuple(_value(field, v, keyword=keyword) for v in value.values))
    if isinstance(value, SigmaString):
        return Match(field, string_test(value, contains=keyword))
    if isinstance(value, SigmaTimestampPart):  # before SigmaNumber: it is a subclass
        return Match(field, TimePartTest(_TIME_PARTS[value.timestamp_part], int(value.number)))  # type: ignore[arg-type]
    if isinstance(value, SigmaNumber):
        if keyword:
            return Match(field, StrTest("contains", (str(value.number).lower(),)))
        return Match(field, NumEqTest(value.number))
    if isinstance(value, SigmaRegularExpression):
        flags = 0
        for flag in value.flags:
            flags |= _RE_FLAGS[flag]
        pattern = str(value.regexp)
        try:
            re.compile(pattern, flags)
        except re.error as exc:
            raise RuleUnsupported(f"regular expression {pattern!r} is not valid in Python: {exc}") from exc
        return Match(field, RegexTest(pattern, flags))
    if keyword:
        raise RuleUnsupported(
            f"keyword value of type {type(value).__name__} (only strings, numbers, regexes)"
        )
    if isinstance(value, SigmaBool):
        return Match(field, BoolTest(bool(value.boolean)))
    if isinstance(value, SigmaNull):
        return Match(field, NullTest())
    if isinstance(value, SigmaExists):
        return Match(field, ExistsTest(bool(value.exists)))
    if isinstance(value, SigmaCompareExpression):
        return Match(field, CompareTest(_COMPARE[value.op], value.number.number))
    if isinstance(value, SigmaCIDRExpression):
        net = ipaddress.ip_network(value.cidr, strict=False)
        return Match(field, CidrTest((str(net),)))
    if isinstance(value, SigmaFieldReference):
        kind = (
            "contains"
            if value.starts_with and value.ends_with
            else "prefix"
            if value.starts_with
            else "suffix"
            if value.ends_with
            else "eq"
        )
        return Match(field, FieldEqTest(field_ref(value.field), kind))  # type: ignore[arg-type]
    if isinstance(value, SigmaQueryExpression):
        raise RuleUnsupported(f"field '{field}': query expression placeholders are backend-specific")
    raise RuleUnsupported(f"field '{field}': value type {type(value).__name__} is not implemented")


def string_test(value: SigmaString, *, contains: bool = False) -> StrTest:
    """A Sigma string (``*``/``?`` wildcards already parsed by pySigma) as the cheapest equivalent test."""
    cased = isinstance(value, SigmaCasedString)
    parts: list[str | SpecialChars] = []
    for part in value.s:
        if isinstance(part, Placeholder):
            raise RuleUnsupported(
                f"value '{value.original}' has the placeholder %{part.name}% that no pipeline resolved"
            )
        parts.append(part if cased or not isinstance(part, str) else part.lower())
    if contains:  # keyword search: anywhere in the text
        if not parts or parts[0] is not SpecialChars.WILDCARD_MULTI:
            parts.insert(0, SpecialChars.WILDCARD_MULTI)
        if parts[-1] is not SpecialChars.WILDCARD_MULTI:
            parts.append(SpecialChars.WILDCARD_MULTI)
    lead = bool(parts) and parts[0] is SpecialChars.WILDCARD_MULTI
    trail = len(parts) > 1 and parts[-1] is SpecialChars.WILDCARD_MULTI
    core = parts[1 if lead else 0 : len(parts) - 1 if trail else len(parts)]
    if all(p is SpecialChars.WILDCARD_MULTI for p in core) and (lead or trail or core):
        return StrTest("any", (), cased)  # '*' alone: any value at all
    if all(isinstance(p, str) for p in core):
        text = "".join(p for p in core if isinstance(p, str))
        kind: StrKind = "contains" if lead and trail else "suffix" if lead else "prefix" if trail else "eq"
        return StrTest(kind, (text,), cased)
    regex = "".join(
        ".*"
        if p is SpecialChars.WILDCARD_MULTI
        else "."
        if p is SpecialChars.WILDCARD_SINGLE
        else re.escape(p)
        for p in parts
        if isinstance(p, str | SpecialChars)
    )
    return StrTest("glob", (regex,), cased)
