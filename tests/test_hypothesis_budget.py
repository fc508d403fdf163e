"""``budget(n)``: the hypothesis examples of a test with its own count follow the active profile."""

from __future__ import annotations

import os

from hypothesis import settings

from tests.hypothesis_budget import budget


def test_budget_follows_the_profile() -> None:
    try:
        settings.load_profile("thorough")
        assert budget(12) == 120  # ten times the default profile, as in the tests' own counts
        settings.load_profile("default")
        assert budget(12) == 12
        assert budget(0) == 1
    finally:
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
