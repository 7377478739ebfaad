"""``assay-agent.pyz``: the agent module alone, as a zipapp any Linux python3 (3.9+) runs with no install.

The archive holds two files: ``assay_agent.py`` (a copy of :mod:`assay.agent._agent`, which imports only
the standard library) and a ``__main__.py`` that calls its ``main()``. Built deterministically (fixed
timestamps) so the same source always gives the same bytes and the same sha256.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from assay.agent import _agent

_MAIN = b"import sys\n\nimport assay_agent\n\nsys.exit(assay_agent.main())\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def zipapp_bytes() -> bytes:
    """The zipapp's bytes: a ``#!/usr/bin/env python3`` line, then the zip archive."""
    source = Path(_agent.__file__).read_bytes()
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in (("__main__.py", _MAIN), ("assay_agent.py", source)):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def build_zipapp(output: Path) -> str:
    """Write the zipapp to ``output`` (mode 0755); returns its sha256."""
    data = zipapp_bytes()
    output.write_bytes(data)
    output.chmod(0o755)
    return hashlib.sha256(data).hexdigest()
