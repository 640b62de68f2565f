"""DriverRegistry: one driver per cloud name from one clouds.yaml, shared by threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provider.cloud.driver import CloudDriver
from provider.cloud.errors import CloudNotFound, CloudPermanentError
from provider.cloud.registry import DriverRegistry
from simcloud.testing import SimCloudHandle, run_simcloud


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path / "sim") as handle:
        yield handle


def test_one_driver_per_cloud_name_that_talks_to_that_cloud(sim: SimCloudHandle) -> None:
    registry = DriverRegistry(sim.clouds_yaml, timeout=5)
    try:
        tenant = registry.get(sim.cloud_name)
        assert registry.get(sim.cloud_name) is tenant
        admin = registry.get(sim.admin_cloud_name)
        assert admin is not tenant
        tenant.check_flavor("m1.tiny")
        admin.check_image("fake-image")
        with pytest.raises(CloudNotFound, match="no-such-flavor"):
            tenant.check_flavor("no-such-flavor")
    finally:
        registry.close()


def test_concurrent_first_use_builds_exactly_one_driver(sim: SimCloudHandle) -> None:
    registry = DriverRegistry(sim.clouds_yaml, timeout=5)
    got: list[CloudDriver] = []
    start = threading.Barrier(8)

    def use() -> None:
        start.wait(timeout=10)
        got.append(registry.get(sim.cloud_name))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    try:
        assert len(got) == 8
        assert len({id(driver) for driver in got}) == 1
    finally:
        registry.close()


def test_an_unknown_cloud_name_is_a_permanent_error_and_is_not_cached(sim: SimCloudHandle) -> None:
    registry = DriverRegistry(sim.clouds_yaml)
    try:
        with pytest.raises(CloudPermanentError, match="no-such-cloud"):
            registry.get("no-such-cloud")
        with pytest.raises(CloudPermanentError, match="no-such-cloud"):
            registry.get("no-such-cloud")
    finally:
        registry.close()


def test_close_forgets_the_drivers(sim: SimCloudHandle) -> None:
    registry = DriverRegistry(sim.clouds_yaml)
    first = registry.get(sim.cloud_name)
    registry.close()
    second = registry.get(sim.cloud_name)
    try:
        assert second is not first
        second.check_flavor("m1.tiny")
    finally:
        registry.close()
