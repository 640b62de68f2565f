"""The chaos campaign's quick form: a few cluster lifecycles through the API while each kind of kaas part is
killed once with SIGKILL (``tests.chaos.campaign``); the five invariants are 0 and the recovery bound holds.

About a minute and a half on simcloud. Longer runs by hand::

    KAAS_CHAOS_LIFECYCLES=20 KAAS_CHAOS_KILLS=12 .venv/bin/python -m pytest tests/chaos/test_campaign.py
    .venv/bin/python -m tests.chaos.campaign --lifecycles 100 --kills 40 [--cloud real]
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.campaign import SPECIAL_KINDS, Options, run_campaign
from tests.conftest import REDIS_URL, require_service

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.timeout(900)]


def test_every_part_killed_once_leaves_no_leak_no_stuck_cluster_no_5xx_and_recovers_within_the_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    kills = os.environ.get("KAAS_CHAOS_KILLS")
    report = run_campaign(
        Options(
            lifecycles=int(os.environ.get("KAAS_CHAOS_LIFECYCLES", "6")),
            kills=int(kills) if kills else None,
            redis_url=REDIS_URL,
            workdir=tmp_path,
            log=lambda line: None,
        )
    )
    with capsys.disabled():
        print("\n" + "\n".join(report.lines()))
    assert report.invariants == dict.fromkeys(report.invariants, 0)
    assert all(r.error is None for r in report.lifecycles), [r.error for r in report.lifecycles]
    assert not report.failed
    if not kills:
        killed = {kill.kind for kill in report.kills}
        assert killed >= set(SPECIAL_KINDS), f"not reached: {report.unreached}"
        assert killed == {"worker", "beat", "tunnel", "api", "nodes", "cloud", *SPECIAL_KINDS}
    assert all(one.seconds <= report.bound for one in report.after_commit)
    assert report.recovery_ok, report.per_kill_worst()
