"""The shared kernel: normalized telemetry (`Event`), detections (`Alert`), and their JSON Lines codec.

Every telemetry source emits the same `Event` shape (DESIGN §3); every consumer reads it through this module.
"""

from assay.events._codec import (
    alert_from_dict,
    alert_to_dict,
    dumps,
    dumps_alert,
    event_from_dict,
    event_to_dict,
    flatten,
    format_timestamp,
    iter_jsonl,
    loads,
    nest,
    parse_timestamp,
    read_alerts_jsonl,
    read_jsonl,
    write_jsonl,
)
from assay.events._model import (
    USER_HZ,
    Alert,
    Event,
    Suppression,
    entity_id,
    split_entity_id,
    ticks_from_boottime_ns,
)
from assay.events._taxonomy import FIELDS, Action, EventSource

__all__ = [
    "FIELDS",
    "USER_HZ",
    "Action",
    "Alert",
    "Event",
    "EventSource",
    "Suppression",
    "alert_from_dict",
    "alert_to_dict",
    "dumps",
    "dumps_alert",
    "entity_id",
    "event_from_dict",
    "event_to_dict",
    "flatten",
    "format_timestamp",
    "iter_jsonl",
    "loads",
    "nest",
    "parse_timestamp",
    "read_alerts_jsonl",
    "read_jsonl",
    "split_entity_id",
    "ticks_from_boottime_ns",
    "write_jsonl",
]
