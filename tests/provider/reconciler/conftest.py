"""Fixtures of the reconciler tests: simcloud on a free port and a context on the real OpenStackDriver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from provider.reconciler.context import ProviderContext
from simcloud.testing import SimCloudHandle, run_simcloud
from tests.provider.harness import make_context


@pytest.fixture
def simcloud(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path / "simcloud", boot_delay=0.0) as handle:
        yield handle


@pytest.fixture
def ctx(session_factory: sessionmaker[Session], simcloud: SimCloudHandle) -> ProviderContext:
    return make_context(session_factory, simcloud.clouds_yaml)
