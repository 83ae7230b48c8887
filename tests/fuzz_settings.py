"""How long the property tests (``tests/test_properties_*.py``) search.

In ``scripts/test`` every property runs :data:`EXAMPLES` examples (default 60) from a fixed
seed (``derandomize``), so the suite is fast and a failure repeats. To search longer by hand,
set ``WENXIN_FUZZ_EXAMPLES``: the examples are then drawn at random, a new set each run::

    WENXIN_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -p no:cacheprovider \
        tests/test_properties_*.py tests/server/test_properties_ws.py

Nothing is written into the repository (no example database).
"""

from __future__ import annotations

import os
from itertools import pairwise

from hypothesis import HealthCheck, settings

_ASKED = os.environ.get("WENXIN_FUZZ_EXAMPLES", "").strip()
EXAMPLES = int(_ASKED) if _ASKED.isdigit() else 60

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not _ASKED,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
"""The settings every property test here uses."""


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (positions modulo its length + 1, in order): the chunks one
    network read after another would give."""
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(marks)] or [data]
