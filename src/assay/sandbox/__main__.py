"""``python -m assay.sandbox --config-fd N``: the sandbox's outer process (started by :class:`Sandbox`).

The configuration (the command, the agent's enrolment token among its arguments) arrives as JSON on an
inherited pipe, not in argv: argv is what the sensor and every ``ps`` on the host see.
"""

import os
import sys

from assay.sandbox._init import InitConfig, outer_main

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--config-fd":
        sys.exit("usage: python -m assay.sandbox --config-fd N (started by assay.sandbox.Sandbox)")
    with os.fdopen(int(sys.argv[2]), "rb") as pipe:
        config = InitConfig.from_json(pipe.read().decode("utf-8"))
    sys.exit(outer_main(config))
