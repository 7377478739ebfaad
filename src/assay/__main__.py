"""`python -m assay` runs the CLI (how `assay demo` starts its children with the same interpreter)."""

from assay.cli import main

main()
