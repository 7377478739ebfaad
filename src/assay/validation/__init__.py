"""Validation: attribute alerts to the links that caused them and say, for every technique, whether it was
detected, and when it was not, why (DESIGN §6).

Pure functions over records: emulation's links, the sensor's events, the engine's alerts. The caller reads
those from storage (or files) and renders the result.
"""

from assay.validation._attribution import CLOCK_SLACK, Lineage, attribute, resolve_roots
from assay.validation._baseline import (
    BASELINE_VERSION,
    BaselineReport,
    RuleRate,
    StepSummary,
    baseline_report,
)
from assay.validation._classify import (
    LinkResult,
    TechniqueResult,
    classify_link,
    harness_events,
    is_mapped,
    not_executed_reason,
    rollup,
)
from assay.validation._compare import RoundDelta, TechniqueChange, compare
from assay.validation._inputs import RoundStore, StoredLink, link_record, operation_report, round_inputs
from assay.validation._records import TECHNIQUE_PRECEDENCE, LinkRecord, NotRun, Outcome, status_name
from assay.validation._report import REPORT_VERSION, RoundReport, Summary, validate
from assay.validation._rounds import alert_links, digest_files

__all__ = [
    "BASELINE_VERSION",
    "CLOCK_SLACK",
    "REPORT_VERSION",
    "TECHNIQUE_PRECEDENCE",
    "BaselineReport",
    "Lineage",
    "LinkRecord",
    "LinkResult",
    "NotRun",
    "Outcome",
    "RoundDelta",
    "RoundReport",
    "RoundStore",
    "RuleRate",
    "StepSummary",
    "StoredLink",
    "Summary",
    "TechniqueChange",
    "TechniqueResult",
    "alert_links",
    "attribute",
    "baseline_report",
    "classify_link",
    "compare",
    "digest_files",
    "harness_events",
    "is_mapped",
    "link_record",
    "not_executed_reason",
    "operation_report",
    "resolve_roots",
    "rollup",
    "round_inputs",
    "status_name",
    "validate",
]
