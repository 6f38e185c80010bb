"""Corrupted RAW files through `process`, `hdr` and `merge`: refused clearly or processed, never a crash."""

from __future__ import annotations

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import chaos  # noqa: E402


def test_corrupted_dngs_are_refused_or_processed_never_crash():
    r = chaos.bad_files(150, seed=11)
    assert r["files"] == 150 and r["tried"] == 450
    assert r["crashes"] == 0, r["crash_examples"]
    assert r["partial_outputs"] == 0
    for name, c in r["tools"].items():
        assert c["tried"] == 150 and c["crashes"] == 0 and c["partial_outputs"] == 0, (name, c)
        assert c["refused"] > 25 and c["processed"] > 10, (name, c)  # both outcomes really happen
    assert r["ok"]
