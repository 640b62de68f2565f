"""HA proven with processes, the short form (``tests.chaos.ha``): three API and three tunnel replicas behind
balancers, two workers, two beats; one of each kind killed with SIGKILL while lifecycles and kubectl clients
run. No request fails beyond the one retry a client makes, every agent of the killed tunnel process is back
within 30 s, one beat leads before and after (and two never send at once), and the campaign's invariants
are 0. Then every process is restarted in turn with SIGTERM (a rolling restart, one at a time, as a
Deployment's rollout does) while the kubectl clients run, and still no request fails.

About two minutes and a half on simcloud. The long form by hand::

    .venv/bin/python -m tests.chaos.ha --kills 50 --lifecycles 12
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.ha import HA_KINDS, HaOptions, run_ha
from tests.conftest import REDIS_URL, require_service

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.timeout(600)]


def test_one_kill_of_each_replicated_part_loses_no_request_strands_no_agent_and_leaves_one_beat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    report = run_ha(
        HaOptions(lifecycles=3, replicas=3, redis_url=REDIS_URL, workdir=tmp_path, log=lambda line: None)
    )
    with capsys.disabled():
        print("\n" + "\n".join(report.lines()))
    assert {kill.kind for kill in report.kills} == set(HA_KINDS), f"not reached: {report.unreached}"
    assert report.invariants == dict.fromkeys(report.invariants, 0)
    assert all(r.error is None for r in report.lifecycles), [r.error for r in report.lifecycles]
    assert report.api_requests.sent > 0
    assert report.k8s_requests.sent > 0
    assert report.api_requests.failed == report.k8s_requests.failed == 0, report.ha_lines()
    assert report.tunnel_kills[0].agents > 0
    assert not report.agents_missing
    assert max(report.reconnects) <= report.reconnect_bound
    assert [kill.running_after for kill in report.beat_kills] == [True]
    assert report.beat_sends.interleaved == []
    assert report.beats_active == 1
    assert report.recovery_ok, report.per_kill_worst()
    assert report.rolling_restart is not None
    assert report.rolling_restart.processes >= 2 * 3 + 2 + 2
    assert report.rolling_restart.sent > 0
