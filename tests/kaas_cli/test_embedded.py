"""``kaas up``'s seeding: the admin token it saved is reused while it is valid; one that replaces it revokes
the tokens earlier runs saved, and leaves the admin's other tokens alone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.auth.service import issue_token
from kaas_api.users.service import create_user
from kaas_cli.embedded import (
    ADMIN_USER,
    STANDIN_KUBERNETES_VERSIONS,
    KubernetesChoiceError,
    choose_kubernetes,
    seed_embedded,
)
from kaas_core.db.models import ApiToken, Region, User, utcnow
from kaas_core.security import hash_token


def live_tokens(session_factory: sessionmaker[Session]) -> dict[str, str]:
    """The admin's tokens that are not revoked, hash → description."""
    with session_factory() as session:
        rows = session.scalars(
            select(ApiToken)
            .join(User, User.id == ApiToken.user_id)
            .where(User.name == ADMIN_USER, ApiToken.revoked_at.is_(None))
        )
        return {row.token_hash: row.description for row in rows}


def test_a_second_run_reuses_the_saved_token(session_factory: sessionmaker[Session]) -> None:
    first = seed_embedded(session_factory, cloud_name="sim")
    again = seed_embedded(session_factory, cloud_name="sim", saved_token=first.admin_token)
    assert again.admin_token == first.admin_token
    assert live_tokens(session_factory) == {hash_token(first.admin_token): "kaas up"}


def test_a_run_without_the_saved_token_revokes_what_earlier_runs_saved(
    session_factory: sessionmaker[Session],
) -> None:
    first = seed_embedded(session_factory, cloud_name="sim")
    with session_factory() as session, session.begin():  # a token the admin made for a script
        admin = session.scalars(select(User).where(User.name == ADMIN_USER)).one()
        _row, scripted = issue_token(session, admin, description="ci")
    second = seed_embedded(session_factory, cloud_name="sim", saved_token=None)
    third = seed_embedded(session_factory, cloud_name="sim", saved_token="kaas_from-another-kaas")
    assert len({first.admin_token, second.admin_token, third.admin_token}) == 3
    assert live_tokens(session_factory) == {
        hash_token(third.admin_token): "kaas up",
        hash_token(scripted): "ci",
    }


def test_a_saved_token_that_is_expired_revoked_or_not_the_admin_is_replaced(
    session_factory: sessionmaker[Session],
) -> None:
    first = seed_embedded(session_factory, cloud_name="sim")
    with session_factory() as session, session.begin():
        _alice, alice_token = create_user(session, name="alice")
        row = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == hash_token(first.admin_token))
        ).one()
        row.expires_at = utcnow() - timedelta(seconds=1)
    replaced = seed_embedded(session_factory, cloud_name="sim", saved_token=first.admin_token)
    assert replaced.admin_token != first.admin_token
    not_admin = seed_embedded(session_factory, cloud_name="sim", saved_token=alice_token)
    assert not_admin.admin_token not in (alice_token, replaced.admin_token)
    assert live_tokens(session_factory) == {hash_token(not_admin.admin_token): "kaas up"}


# --- which Kubernetes kaas up runs ---

BUILT = {"v1.36.3": Path("/cache/kube/v1.36.3"), "v1.37.2": Path("/cache/kube/v1.37.2")}


def test_with_built_releases_kaas_up_runs_them_and_offers_exactly_their_versions() -> None:
    kube = choose_kubernetes(releases=BUILT, cache_dir=Path("/cache"))
    assert (kube.kind, kube.versions, kube.default_version) == ("real", ["1.36.3", "1.37.2"], "1.37.2")
    assert kube.releases == BUILT
    assert kube.describe() == (
        "Kubernetes: real v1.36.3, v1.37.2 (default v1.37.2), the programs in /cache/kube"
    )


def test_without_built_releases_kaas_up_runs_the_standin_and_says_how_to_build_them() -> None:
    kube = choose_kubernetes(releases={}, cache_dir=Path("/cache"))
    assert (kube.kind, kube.versions, kube.releases) == ("stand-in", STANDIN_KUBERNETES_VERSIONS, {})
    assert "the Python stand-in" in kube.describe()
    assert "bash scripts/kube-bin.sh" in kube.describe()


def test_the_default_version_must_be_one_kaas_up_offers() -> None:
    older = choose_kubernetes(releases=BUILT, cache_dir=Path("/cache"), default_version="v1.36.3")
    assert older.default_version == "1.36.3"
    with pytest.raises(KubernetesChoiceError, match=r"Kubernetes 1\.31\.4 is not offered"):
        choose_kubernetes(releases=BUILT, cache_dir=Path("/cache"), default_version="1.31.4")


def test_real_without_built_releases_is_refused_and_standin_is_honoured() -> None:
    with pytest.raises(KubernetesChoiceError, match=r"kube-bin\.sh"):
        choose_kubernetes(releases={}, cache_dir=Path("/cache"), mode="real")
    assert choose_kubernetes(releases=BUILT, cache_dir=Path("/cache"), mode="stand-in").kind == "stand-in"


def test_a_later_run_offers_its_own_versions_in_the_existing_region(
    session_factory: sessionmaker[Session],
) -> None:
    seed_embedded(session_factory, cloud_name="sim")
    seed_embedded(
        session_factory,
        cloud_name="sim",
        kubernetes_versions=["1.36.3", "1.37.2"],
        default_kubernetes_version="1.36.3",
    )
    with session_factory() as session:
        region = session.scalars(select(Region)).one()
        offered = (region.kubernetes_versions, region.default_kubernetes_version)
    assert offered == (["1.36.3", "1.37.2"], "1.36.3")
