"""The k8s proxies' WebSocket relay: which close code the other side is closed with."""

from __future__ import annotations

import pytest

from kaas_core.websocket_relay import close_code


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 3000, 4000, 4999])
def test_a_code_that_may_be_sent_is_carried_across(code: int) -> None:
    assert close_code(code) == code


@pytest.mark.parametrize("code", [None, 0, 999, 1005, 1006, 1015, 5000, 65535])
def test_no_code_a_reserved_one_or_one_out_of_range_becomes_a_normal_close(code: int | None) -> None:
    assert close_code(code) == 1000
