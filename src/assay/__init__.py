"""Assay: emulate ATT&CK techniques on Linux hosts, watch them with a kernel sensor and Sigma, and prove
which were detected (and, for the rest, why not). See DESIGN.md for the loop and the package layout."""

__version__ = "0.1.0"
