"""The proxy's settings: production refuses the embedded internal secret and a registry in memory."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from kaas_api.config import ApiSettings

PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql+psycopg://db/kaas",
    "broker_url": "redis://redis:6379/0",
    "redis_url": "redis://redis:6379/0",
    "secret_key": "a-random-secret-key-of-more-than-32-characters",
}


def test_production_refuses_the_default_tunnel_internal_secret() -> None:
    with pytest.raises(ValueError, match="KAAS_TUNNEL_INTERNAL_SECRET"):
        ApiSettings(**PRODUCTION).validate_for_production()  # type: ignore[arg-type]


def test_production_accepts_a_random_tunnel_internal_secret() -> None:
    settings = ApiSettings(
        **PRODUCTION,  # type: ignore[arg-type]
        tunnel_internal_secret=SecretStr("another-random-secret-of-more-than-32-chars"),
    )
    settings.validate_for_production()


def test_production_refuses_an_api_without_the_tunnel_registry_in_redis() -> None:
    document = {k: v for k, v in PRODUCTION.items() if k != "redis_url"}
    settings = ApiSettings(
        **document,  # type: ignore[arg-type]
        tunnel_internal_secret=SecretStr("another-random-secret-of-more-than-32-chars"),
    )
    with pytest.raises(ValueError, match="KAAS_REDIS_URL"):
        settings.validate_for_production()
