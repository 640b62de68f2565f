"""Fixtures: a fresh simulated cloud per test, and openstacksdk connections to it (demo and admin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openstack
import pytest
from openstack.config import OpenStackConfig
from openstack.connection import Connection

from simcloud.testing import SimCloudHandle, run_simcloud


def connect(handle: SimCloudHandle, cloud: str) -> Connection:
    config = OpenStackConfig(config_files=[str(handle.clouds_yaml)], load_envvars=False).get_one(cloud)
    return openstack.connection.Connection(config=config)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path) as handle:
        yield handle


@pytest.fixture
def conn(cloud: SimCloudHandle) -> Iterator[Connection]:
    connection = connect(cloud, cloud.cloud_name)
    yield connection
    connection.close()


@pytest.fixture
def admin_conn(cloud: SimCloudHandle) -> Iterator[Connection]:
    connection = connect(cloud, cloud.admin_cloud_name)
    yield connection
    connection.close()
