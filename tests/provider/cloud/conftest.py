"""The clouds the driver contract runs against: the simulated one and the real OpenStack.

``real`` follows ../shared/openstack/README.md ("Using it from the project's tests"): clouds.yaml from
``OS_CLIENT_CONFIG_FILE`` or ``${KAAS_OPENSTACK_DIR:-/tmp/kaas-openstack}/clouds.yaml``, Keystone must answer
within 2 s; otherwise the tests skip, except with ``KAAS_REQUIRE_REAL_OPENSTACK=1`` (CI), where they fail.
The driver runs as the tenant ``os-real-demo``; assertions use the admin cloud ``os-real``. The quota test
gets a project and user of its own, created as admin and deleted afterwards, because other engineers use
the demo project of the same cloud at the same time.

``sim`` is ``simcloud`` on a free loopback port, a fresh one per test; quotas are set through its
injection API.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openstack
import pytest
import yaml
from openstack.config import loader

from provider.cloud.driver import cluster_tag, resource_prefix
from provider.cloud.openstack_driver import OpenStackDriver
from simcloud.testing import run_simcloud

T = TypeVar("T")

REAL_HINT = (
    "real OpenStack not running: start it with ../shared/openstack/up.sh"
    " (~3 min the first time, see its README)"
)
KEYSTONE_URL = "http://127.0.0.1:5000/v3"
IMAGE = "fake-image"  # seeded by both clouds
FLAVOR = "m1.tiny"
EXTERNAL_NETWORK = "public"


def eventually(probe: Callable[[], T | None], *, timeout: float = 90, interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not reached within {timeout}s (last answer: {last!r})")


def connect(clouds_yaml: Path, cloud: str) -> Any:
    """A plain openstacksdk connection for assertions (never the driver's)."""
    config = loader.OpenStackConfig(config_files=[str(clouds_yaml)], load_envvars=False)
    return openstack.connection.Connection(config=config.get_one(cloud=cloud, compute_api_version="2.64"))


@dataclass
class CloudUnderTest:
    name: str
    driver: OpenStackDriver  # the tenant
    admin: Any  # an admin openstacksdk connection, for assertions
    # ``without_instance_quota(cluster_id)``: a driver whose project may start no server; on exit the
    # cluster's resources in that project are deleted
    without_instance_quota: Callable[[str], AbstractContextManager[OpenStackDriver]]
    image: str = IMAGE
    flavor: str = FLAVOR
    external_network: str = EXTERNAL_NETWORK

    def new_cluster_id(self) -> str:
        return str(uuid.uuid4())

    def tagged_leftovers(self, cluster_id: str) -> dict[str, list[str]]:
        """Everything of the cluster the admin still sees, in any project; empty when all is gone."""
        tag = cluster_tag(cluster_id)
        group_name = f"{resource_prefix(cluster_id)}-cp"
        admin = self.admin
        found = {
            "servers": [s.id for s in admin.compute.servers(all_projects=True, tags=tag)],
            "server_groups": [
                g.id for g in admin.compute.server_groups(all_projects=True) if g.name == group_name
            ],
            "networks": [n.id for n in admin.network.networks(tags=tag)],
            "subnets": [s.id for s in admin.network.subnets(tags=tag)],
            "routers": [r.id for r in admin.network.routers(tags=tag)],
            "security_groups": [g.id for g in admin.network.security_groups(tags=tag)],
            "load_balancers": [
                lb.id
                for lb in admin.load_balancer.load_balancers(tags=tag)
                if lb.provisioning_status != "DELETED"
            ],
        }
        return {kind: ids for kind, ids in found.items() if ids}

    def delete_and_check(self, cluster_id: str, driver: OpenStackDriver | None = None) -> None:
        """Repeated one-pass deletion until nothing is left (bounded), then the admin sees nothing."""
        driver = driver or self.driver
        eventually(lambda: driver.delete_cluster_resources(cluster_id) == [], timeout=120)
        assert driver.list_cluster_resources(cluster_id) == []
        assert self.tagged_leftovers(cluster_id) == {}


def real_clouds_yaml() -> Path | None:
    path = Path(
        os.environ.get("OS_CLIENT_CONFIG_FILE")
        or Path(os.environ.get("KAAS_OPENSTACK_DIR", "/tmp/kaas-openstack")) / "clouds.yaml"
    )
    if not path.exists():
        return None
    try:
        httpx.get(KEYSTONE_URL, timeout=2).raise_for_status()
    except httpx.HTTPError:
        return None
    return path


@pytest.fixture(scope="session")
def real_openstack() -> Path:
    """The real cloud's clouds.yaml; skip (or, in CI, fail) when it is not running."""
    path = real_clouds_yaml()
    if path is None:
        if os.environ.get("KAAS_REQUIRE_REAL_OPENSTACK") == "1":
            pytest.fail(REAL_HINT)
        pytest.skip(REAL_HINT)
    return path


@pytest.fixture(scope="session")
def real_admin(real_openstack: Path) -> Iterator[Any]:
    admin = connect(real_openstack, "os-real")
    yield admin
    admin.close()


@pytest.fixture(scope="session")
def real_demo_driver(real_openstack: Path) -> Iterator[OpenStackDriver]:
    driver = OpenStackDriver.from_cloud("os-real-demo", config_file=real_openstack)
    yield driver
    driver.close()


@contextmanager
def real_project_without_instance_quota(
    admin: Any, clouds_yaml: Path, workdir: Path, cluster_id: str
) -> Iterator[OpenStackDriver]:
    """A throw-away project and user (member, load-balancer_member) whose instance quota is 0."""
    name = f"kaas-quota-{uuid.uuid4().hex[:8]}"
    project = admin.identity.create_project(name=name, domain_id="default")
    user = None
    try:
        user = admin.identity.create_user(name=name, password="secret", domain_id="default")
        for role_name in ("member", "load-balancer_member"):
            admin.identity.assign_project_role_to_user(project, user, admin.identity.find_role(role_name))
        admin.set_compute_quotas(project.id, instances=0)
        document = yaml.safe_load(clouds_yaml.read_text())
        auth = dict(document["clouds"]["os-real-demo"]["auth"])
        auth.update(username=name, project_name=name, password="secret")
        document["clouds"][name] = {**document["clouds"]["os-real-demo"], "auth": auth}
        path = workdir / "quota-clouds.yaml"
        path.write_text(yaml.safe_dump(document))
        driver = OpenStackDriver.from_cloud(name, config_file=path)
        try:
            yield driver
        finally:
            eventually(lambda: driver.delete_cluster_resources(cluster_id) == [], timeout=120)
            driver.close()
    finally:
        if user is not None:
            admin.identity.delete_user(user, ignore_missing=True)
        admin.delete_compute_quotas(project.id)
        admin.identity.delete_project(project, ignore_missing=True)


@pytest.fixture(params=["sim", pytest.param("real", marks=pytest.mark.openstack_real)])
def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CloudUnderTest]:
    if request.param == "real":
        clouds_yaml: Path = request.getfixturevalue("real_openstack")
        admin = request.getfixturevalue("real_admin")

        def real_limited(cluster_id: str) -> AbstractContextManager[OpenStackDriver]:
            return real_project_without_instance_quota(admin, clouds_yaml, tmp_path, cluster_id)

        yield CloudUnderTest("real", request.getfixturevalue("real_demo_driver"), admin, real_limited)
        return

    with run_simcloud(state_dir=tmp_path / "sim", boot_delay=0.2, lb_delay=0.5) as handle:
        sim = handle.sim
        driver = OpenStackDriver.from_cloud(handle.cloud_name, config_file=handle.clouds_yaml)
        admin = connect(handle.clouds_yaml, handle.admin_cloud_name)

        @contextmanager
        def sim_limited(cluster_id: str) -> Iterator[OpenStackDriver]:
            before = sim.set_quota("demo").instances
            sim.set_quota("demo", instances=0)
            try:
                yield driver
            finally:
                sim.set_quota("demo", instances=before)
                eventually(lambda: driver.delete_cluster_resources(cluster_id) == [], timeout=120)

        try:
            yield CloudUnderTest("sim", driver, admin, sim_limited)
        finally:
            driver.close()
            admin.close()
