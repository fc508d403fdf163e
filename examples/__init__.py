"""Examples built on transinit (run from the repository root)."""
