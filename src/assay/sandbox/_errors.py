"""The sandbox's error type."""

from __future__ import annotations

from assay.errors import AssayError


class SandboxError(AssayError):
    """A sandbox could not be set up, or a check of one failed; the message names the step."""
