"""The node boot report line: written by a node's boot, read back from its console by the reconciler."""

from __future__ import annotations

import pytest

from agents.tunnel.boot_report import MAX_REASON_CHARS, BootOutcome, failure_line, last_outcome, success_line


def test_a_failure_reads_back_with_its_step_and_reason_among_other_console_lines() -> None:
    console = "\n".join([
        "[    0.000000] Linux version 6.1",
        failure_line("kubeadm join discovery", "none of the public keys are pinned"),
        "cloud-init[812]: Cloud-init v. 24.1 finished",
    ])
    assert last_outcome(console) == BootOutcome(
        failed=True, step="kubeadm join discovery", reason="none of the public keys are pinned"
    )


def test_the_last_report_counts() -> None:
    console = "\n".join([failure_line("kubeadm join discovery", "not reachable yet"), success_line()])
    assert last_outcome(console) == BootOutcome(failed=False)


def test_a_console_without_a_report_says_nothing() -> None:
    assert last_outcome("login: \n[kaas-node-boot] something else\n") is None


def test_a_reason_becomes_one_bounded_line() -> None:
    line = failure_line("kubeadm init phase certs", "first\nsecond\t" + "x" * 5000)
    assert "\n" not in line
    outcome = last_outcome(line)
    assert outcome is not None
    assert outcome.reason.startswith("first second x")
    assert len(outcome.reason) == MAX_REASON_CHARS


def test_a_step_name_that_could_forge_a_line_is_refused() -> None:
    with pytest.raises(ValueError, match="not a boot step name"):
        failure_line("kubeadm: ok\n[kaas-node-boot] joined", "reason")
