"""The input-limit settings: one definition for the API and the tunnel server, sane defaults, from KAAS_*."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kaas_api.config import ApiSettings
from kaas_core.serving.limits import HttpLimits
from kaas_core.serving.settings import MIB
from kaas_tunnel.config import TunnelSettings

LIMIT_VARIABLES = (
    "KAAS_HTTP_MAX_HEAD_BYTES",
    "KAAS_HTTP_MAX_HEADERS",
    "KAAS_HTTP_HEAD_TIMEOUT_SECONDS",
    "KAAS_HTTP_BODY_GRACE_SECONDS",
    "KAAS_HTTP_BODY_MIN_BYTES_PER_SECOND",
    "KAAS_HTTP_LINGER_SECONDS",
    "KAAS_HTTP_MAX_BODY_BYTES",
    "KAAS_HTTP_MAX_JSON_VALUES",
    "KAAS_K8S_PROXY_MAX_BODY_BYTES",
    "KAAS_MAX_VALIDATION_ERRORS",
)


@pytest.fixture(autouse=True)
def _no_limits_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_default_limits_refuse_the_attacks_and_pass_what_kubernetes_accepts() -> None:
    api = ApiSettings()
    limits = api.http_limits
    assert 16 * 1024 <= limits.max_head_bytes <= 1 * MIB  # kubectl's heads fit; a 32 MB one does not
    assert 50 <= limits.max_headers <= 1000
    assert limits.head_timeout_seconds <= 30
    assert limits.body_grace_seconds <= 30
    assert limits.body_min_bytes_per_second > 0.5  # a byte every 2 s is cut off
    assert limits.linger_seconds <= 10
    assert api.k8s_proxy_max_body_bytes >= 3 * MIB  # kube-apiserver's own request limit passes
    assert api.k8s_proxy_max_body_bytes < 100 * MIB
    assert api.http_max_body_bytes <= api.k8s_proxy_max_body_bytes
    assert api.http_max_json_values <= 100_000
    assert api.max_validation_errors <= 100


def test_the_api_and_the_tunnel_server_share_one_definition_of_the_limits() -> None:
    api, tunnel = ApiSettings(), TunnelSettings()
    assert tunnel.http_limits == api.http_limits
    assert tunnel.k8s_proxy_max_body_bytes == api.k8s_proxy_max_body_bytes


def test_the_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAAS_HTTP_MAX_HEAD_BYTES", "8192")
    monkeypatch.setenv("KAAS_HTTP_MAX_HEADERS", "40")
    monkeypatch.setenv("KAAS_HTTP_HEAD_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("KAAS_HTTP_BODY_GRACE_SECONDS", "3")
    monkeypatch.setenv("KAAS_HTTP_BODY_MIN_BYTES_PER_SECOND", "4096")
    monkeypatch.setenv("KAAS_HTTP_LINGER_SECONDS", "0.5")
    monkeypatch.setenv("KAAS_K8S_PROXY_MAX_BODY_BYTES", "5000000")
    monkeypatch.setenv("KAAS_HTTP_MAX_BODY_BYTES", "100000")
    monkeypatch.setenv("KAAS_HTTP_MAX_JSON_VALUES", "500")
    monkeypatch.setenv("KAAS_MAX_VALIDATION_ERRORS", "5")
    expected = HttpLimits(
        max_head_bytes=8192,
        max_headers=40,
        head_timeout_seconds=2.5,
        body_grace_seconds=3.0,
        body_min_bytes_per_second=4096.0,
        linger_seconds=0.5,
    )
    api, tunnel = ApiSettings(), TunnelSettings()
    assert api.http_limits == expected
    assert tunnel.http_limits == expected
    assert (api.k8s_proxy_max_body_bytes, tunnel.k8s_proxy_max_body_bytes) == (5_000_000, 5_000_000)
    assert (api.http_max_body_bytes, api.http_max_json_values, api.max_validation_errors) == (100_000, 500, 5)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KAAS_HTTP_MAX_HEAD_BYTES", "100"),
        ("KAAS_HTTP_MAX_HEADERS", "0"),
        ("KAAS_HTTP_HEAD_TIMEOUT_SECONDS", "0"),
        ("KAAS_HTTP_BODY_MIN_BYTES_PER_SECOND", "-1"),
        ("KAAS_K8S_PROXY_MAX_BODY_BYTES", "lots"),
    ],
)
def test_a_limit_that_makes_no_sense_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("KAAS_").lower()):
        TunnelSettings()
