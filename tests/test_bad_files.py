"""Corrupted RAW files through `magcam process`: refused clearly or processed, never a crash."""

from __future__ import annotations

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import chaos  # noqa: E402


def test_corrupted_dngs_are_refused_or_processed_never_crash():
    r = chaos.bad_files(300, seed=11)
    assert r["tried"] == 300 and r["crashes"] == 0, r["crash_examples"]
    assert r["partial_outputs"] == 0
    assert r["refused"] > 50 and r["processed"] > 20  # both outcomes really happen
