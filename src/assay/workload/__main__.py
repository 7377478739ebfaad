"""``python -m assay.workload``: the benign workload as its own process, so `assay baseline` knows the
process tree the workload's alerts come from (its root is this process)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from assay.workload import StepRecord, Workload


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m assay.workload", description=__doc__)
    parser.add_argument("--scratch", type=Path, required=True, help="scratch directory (removed at the end)")
    parser.add_argument("--records", type=Path, required=True, help="JSON Lines file of step records")
    parser.add_argument("--duration", type=float, required=True, help="seconds to run")
    parser.add_argument("--cron-interval", type=float, default=60.0)
    parser.add_argument("--cycle-pause", type=float, default=5.0)
    args = parser.parse_args()
    with args.records.open("a", encoding="utf-8") as out:

        def write(record: StepRecord) -> None:
            out.write(json.dumps(record.to_dict()) + "\n")
            out.flush()

        Workload(args.scratch, args.cron_interval, args.cycle_pause, on_record=write).run(args.duration)


if __name__ == "__main__":
    main()
