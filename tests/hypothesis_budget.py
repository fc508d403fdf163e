"""The number of hypothesis examples of a test with its own budget, scaled by the active profile.

A test that sets ``max_examples`` itself overrides the profile; ``budget(n)`` keeps the ratio of the profile
loaded in ``tests/conftest.py`` to the default one, so ``HYPOTHESIS_PROFILE=thorough`` draws ten times more
examples in those tests too.
"""

from __future__ import annotations

from hypothesis import settings

__all__ = ["budget"]


def budget(n: int) -> int:
    """``n`` times the active profile's ``max_examples`` over the default profile's (at least 1)."""
    scale = settings.default.max_examples / settings.get_profile("default").max_examples
    return max(1, round(n * scale))
