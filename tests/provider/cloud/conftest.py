"""The clouds the driver contract runs against: the simulated one and the real OpenStack.

``real`` follows ../shared/openstack/README.md: the driver runs as the tenant ``os-real-demo``, assertions
use the admin cloud ``os-real``. Without the real cloud the tests skip, except with
``KAAS_REQUIRE_REAL_OPENSTACK=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openstack
import pytest
import yaml
from openstack.config import loader

from provider.cloud.openstack_driver import OpenStackDriver
from simcloud.testing import run_simcloud

REAL_HINT = (
    "real OpenStack not running: start it with ../shared/openstack/up.sh"
    " (~3 min the first time, see its README)"
)


def connect(clouds_yaml: Path, cloud: str) -> Any:
    config = loader.OpenStackConfig(config_files=[str(clouds_yaml)])
    return openstack.connection.Connection(config=config.get_one(cloud=cloud, compute_api_version="2.64"))


@dataclass
class CloudUnderTest:
    name: str
    driver: OpenStackDriver
    admin: Any  # an admin openstacksdk connection, for assertions
    image: str
    flavor: str
    external_network: str
    compute_hosts: int
    exhaust_instance_quota: Callable[[], Any]  # a context manager factory: server creates fail inside it

    def new_cluster_id(self) -> str:
        return str(uuid.uuid4())


def real_clouds_yaml() -> Path | None:
    path = Path(
        os.environ.get("OS_CLIENT_CONFIG_FILE")
        or Path(os.environ.get("KAAS_OPENSTACK_DIR", "/tmp/kaas-openstack")) / "clouds.yaml"
    )
    if not path.exists():
        return None
    try:
        httpx.get("http://127.0.0.1:5000/v3", timeout=2).raise_for_status()
    except httpx.HTTPError:
        return None
    return path


@pytest.fixture(scope="session")
def real_openstack() -> Path:
    path = real_clouds_yaml()
    if path is None:
        if os.environ.get("KAAS_REQUIRE_REAL_OPENSTACK") == "1":
            pytest.fail(REAL_HINT)
        pytest.skip(REAL_HINT)
    return path


@pytest.fixture(params=["sim", pytest.param("real", marks=pytest.mark.openstack_real)])
def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CloudUnderTest]:
    if request.param == "sim":
        with run_simcloud(state_dir=tmp_path / "sim", boot_delay=0.2, lb_delay=0.3) as handle:
            sim = handle.sim

            @contextmanager
            def exhaust_sim() -> Iterator[None]:
                sim.fail_next_server_creates(1000)
                try:
                    yield
                finally:
                    sim.fail_next_server_creates(0)

            driver = OpenStackDriver.from_cloud(handle.cloud_name, config_file=handle.clouds_yaml)
            admin = connect(handle.clouds_yaml, handle.admin_cloud_name)
            yield CloudUnderTest("sim", driver, admin, "ubuntu-22.04", "m1.small", "public", 3, exhaust_sim)
            driver.close()
            admin.close()
        return

    clouds_yaml = request.getfixturevalue("real_openstack")
    admin = connect(clouds_yaml, "os-real")
    project_name = f"kaas-contract-{uuid.uuid4().hex[:8]}"
    # A project of our own: quota changes never touch what other tests in the shared cloud use.
    project = admin.identity.create_project(name=project_name, domain_id="default")
    user = admin.identity.create_user(name=project_name, password="secret", domain_id="default")
    for role_name in ("member", "load-balancer_member"):
        role = admin.identity.find_role(role_name)
        admin.identity.assign_project_role_to_user(project, user, role)
    tenant_yaml = tmp_path / "clouds.yaml"
    document = yaml.safe_load(clouds_yaml.read_text())
    document["clouds"][project_name] = {
        "auth": {
            "auth_url": "http://127.0.0.1:5000/v3",
            "username": project_name,
            "password": "secret",
            "project_name": project_name,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": "RegionOne",
        "identity_api_version": 3,
    }
    tenant_yaml.write_text(yaml.safe_dump(document))

    @contextmanager
    def exhaust_real() -> Iterator[None]:
        admin.set_compute_quotas(project.id, instances=0)
        try:
            yield
        finally:
            admin.set_compute_quotas(project.id, instances=50)

    driver = OpenStackDriver.from_cloud(project_name, config_file=tenant_yaml)
    try:
        yield CloudUnderTest("real", driver, admin, "fake-image", "m1.tiny", "public", 3, exhaust_real)
    finally:
        driver.close()
        admin.identity.delete_user(user, ignore_missing=True)
        admin.identity.delete_project(project, ignore_missing=True)
        admin.close()
