"""Skip a check whose tools are missing on a person's machine; fail it under CI.

The browser and PDF checks need Chromium and poppler (``bash tools/setup.sh
--test-tools``). A lecturer who set up only for rendering gets a skip with the
reason; CI (any non-empty ``CI`` other than ``false`` or ``0``) must never pass
without running them, so there the same reason is a failure.
"""

from __future__ import annotations

import pytest

from coursebuild.cli import under_ci


def require(why: str | None) -> None:
    """``why`` is None when the tools are there; otherwise skip, or fail under CI."""
    if why is None:
        return
    if under_ci():
        pytest.fail(f"{why} (CI is set: the checks must run)")
    pytest.skip(why)
