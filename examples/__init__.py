"""Example applications built on transinit (not part of the installed packages)."""
