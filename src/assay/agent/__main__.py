"""``python3 -m assay.agent``."""

import sys

from assay.agent._agent import main

sys.exit(main())
