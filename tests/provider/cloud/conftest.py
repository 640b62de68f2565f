"""The clouds the driver contract runs against: the simulated one and the real OpenStack.

``real`` follows ../shared/openstack/README.md ("Using it from the project's tests"): clouds.yaml from
``OS_CLIENT_CONFIG_FILE`` or ``${KAAS_OPENSTACK_DIR:-/tmp/kaas-openstack}/clouds.yaml``, Keystone must answer
within 2 s; otherwise the tests skip, except with ``KAAS_REQUIRE_REAL_OPENSTACK=1`` (CI), where they fail.
The driver runs as the tenant ``os-real-demo``; assertions use the admin cloud ``os-real``. The quota test
gets a project and user of its own, created as admin and deleted afterwards, because other engineers use
the demo project of the same cloud at the same time.

``sim`` is ``simcloud`` on a free loopback port, a fresh one per test; quotas are set through its
injection API.

Tests that break credentials get a driver on credentials of their own (``own_credentials``): on the real
cloud a throw-away project and user, on the simulated one its demo user, whose password is restored after.
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
from provider.cloud.openstack_driver import CloudSource, OpenStackDriver
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
class OwnCredentials:
    """A driver on credentials the test may break, the clouds.yaml it was built from, and the cloud's side."""

    driver: OpenStackDriver
    cloud_name: str
    clouds_yaml: Path
    connection: Any  # the driver's first connection (a reconnect replaces it inside the driver)
    set_password_in_cloud: Callable[[str], None]  # as an operator rotating the user's password

    def write_password(self, password: str) -> None:
        """As an operator fixing clouds.yaml."""
        document = yaml.safe_load(self.clouds_yaml.read_text())
        document["clouds"][self.cloud_name]["auth"]["password"] = password
        self.clouds_yaml.write_text(yaml.safe_dump(document))

    def expire_token(self) -> None:
        """The driver's token ran out: its next request authenticates afresh. (Services cache token
        validations for minutes, so on the real cloud a rotated password alone is not seen at once.)"""
        self.connection.session.invalidate()


def own_driver(clouds_yaml: Path, cloud_name: str, set_password: Callable[[str], None]) -> OwnCredentials:
    source = CloudSource(cloud_name=cloud_name, config_file=clouds_yaml, timeout=30)
    connection = source.connect()
    driver = OpenStackDriver(connection, name=cloud_name, source=source)
    return OwnCredentials(driver, cloud_name, clouds_yaml, connection, set_password)


def copy_cloud_entry(source_yaml: Path, entry: str, target: Path, *, name: str, **auth: str) -> Path:
    """A clouds.yaml with one entry ``name``: ``entry`` of ``source_yaml`` with ``auth`` changed."""
    document = yaml.safe_load(source_yaml.read_text())
    cloud = dict(document["clouds"][entry])
    cloud["auth"] = {**cloud["auth"], **auth}
    target.write_text(yaml.safe_dump({"clouds": {name: cloud}}))
    return target


@dataclass
class CloudUnderTest:
    name: str
    driver: OpenStackDriver  # the tenant
    admin: Any  # an admin openstacksdk connection, for assertions
    clouds_yaml: Path  # where the tenant's cloud entry is, for drivers in other processes
    tenant_cloud: str  # the tenant's entry in it
    # ``without_instance_quota(cluster_id)``: a driver whose project may start no server; on exit the
    # cluster's resources in that project are deleted
    without_instance_quota: Callable[[str], AbstractContextManager[OpenStackDriver]]
    # ``own_credentials()``: a driver on credentials of its own, which the test may rotate and fix
    own_credentials: Callable[[], AbstractContextManager[OwnCredentials]]
    image: str = IMAGE
    flavor: str = FLAVOR
    external_network: str = EXTERNAL_NETWORK

    def new_cluster_id(self) -> str:
        return str(uuid.uuid4())

    def leftovers(self, cluster_id: str) -> dict[str, list[str]]:
        """Everything of the cluster the admin still sees, in any project; empty when all is gone.

        Found by the cluster's tag (load balancer children too), by the tag text as description (a resource
        born but never tagged), and by the cluster's name prefix: a resource nothing marks is a leak too."""
        tag = cluster_tag(cluster_id)
        prefix = f"{resource_prefix(cluster_id)}-"
        group_name = f"{prefix}cp"
        admin = self.admin

        def neutron(list_call: Callable[..., Any]) -> list[str]:
            return sorted(
                {
                    r.id
                    for r in list_call()
                    if tag in (r.tags or []) or r.description == tag or str(r.name or "").startswith(prefix)
                }
            )

        lb_api = admin.load_balancer
        found = {
            "servers": [s.id for s in admin.compute.servers(all_projects=True, tags=tag)],
            "server_groups": [
                g.id for g in admin.compute.server_groups(all_projects=True) if g.name == group_name
            ],
            "networks": neutron(admin.network.networks),
            "subnets": neutron(admin.network.subnets),
            "routers": neutron(admin.network.routers),
            "security_groups": neutron(admin.network.security_groups),
            "load_balancers": [
                lb.id for lb in lb_api.load_balancers(tags=tag) if lb.provisioning_status != "DELETED"
            ],
            "listeners": [x.id for x in lb_api.listeners(tags=tag) if x.provisioning_status != "DELETED"],
            "pools": [x.id for x in lb_api.pools(tags=tag) if x.provisioning_status != "DELETED"],
            "health_monitors": [
                x.id for x in lb_api.health_monitors(tags=tag) if x.provisioning_status != "DELETED"
            ],
            # Keystone lists application credentials per user, and kaas makes them only for its own user
            "application_credentials": [
                c.id
                for c in self.tenant_credentials()
                if c.description == tag or str(c.name or "").startswith(prefix)
            ],
        }
        return {kind: ids for kind, ids in found.items() if ids}

    def tenant_credentials(self) -> list[Any]:
        """Every application credential of the user the driver runs as (a connection of its own)."""
        tenant = connect(self.clouds_yaml, self.tenant_cloud)
        try:
            return list(tenant.identity.application_credentials(tenant.current_user_id))
        finally:
            tenant.close()

    def delete_and_check(self, cluster_id: str, driver: OpenStackDriver | None = None) -> None:
        """Repeated one-pass deletion until nothing is left (bounded), then the admin sees nothing."""
        driver = driver or self.driver
        eventually(lambda: driver.delete_cluster_resources(cluster_id) == [], timeout=120)
        assert driver.list_cluster_resources(cluster_id) == []
        assert self.leftovers(cluster_id) == {}


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


@contextmanager
def real_own_credentials(admin: Any, clouds_yaml: Path, workdir: Path) -> Iterator[OwnCredentials]:
    """A throw-away project and user (member) with a clouds.yaml entry of its own."""
    name = f"kaas-creds-{uuid.uuid4().hex[:8]}"
    project = admin.identity.create_project(name=name, domain_id="default")
    user = None
    try:
        user = admin.identity.create_user(name=name, password="secret", domain_id="default")
        admin.identity.assign_project_role_to_user(project, user, admin.identity.find_role("member"))
        path = copy_cloud_entry(
            clouds_yaml,
            "os-real-demo",
            workdir / "own-clouds.yaml",
            name=name,
            username=name,
            project_name=name,
        )
        created = user

        def set_password(password: str) -> None:
            admin.identity.update_user(created, password=password)

        own = own_driver(path, name, set_password)
        try:
            yield own
        finally:
            own.driver.close()
    finally:
        if user is not None:
            admin.identity.delete_user(user, ignore_missing=True)
        admin.identity.delete_project(project, ignore_missing=True)


@pytest.fixture(params=["sim", pytest.param("real", marks=pytest.mark.openstack_real)])
def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CloudUnderTest]:
    if request.param == "real":
        clouds_yaml: Path = request.getfixturevalue("real_openstack")
        admin = request.getfixturevalue("real_admin")

        def real_limited(cluster_id: str) -> AbstractContextManager[OpenStackDriver]:
            return real_project_without_instance_quota(admin, clouds_yaml, tmp_path, cluster_id)

        def real_credentials() -> AbstractContextManager[OwnCredentials]:
            return real_own_credentials(admin, clouds_yaml, tmp_path)

        driver = request.getfixturevalue("real_demo_driver")
        yield CloudUnderTest(
            "real", driver, admin, clouds_yaml, "os-real-demo", real_limited, real_credentials
        )
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

        @contextmanager
        def sim_credentials() -> Iterator[OwnCredentials]:
            """The demo user: this simulated cloud is the test's own."""
            path = copy_cloud_entry(
                handle.clouds_yaml, handle.cloud_name, tmp_path / "own-clouds.yaml", name="own"
            )
            own = own_driver(path, "own", lambda password: sim.set_password("demo", password))
            try:
                yield own
            finally:
                own.driver.close()
                sim.set_password("demo", "secret")

        try:
            yield CloudUnderTest(
                "sim", driver, admin, handle.clouds_yaml, handle.cloud_name, sim_limited, sim_credentials
            )
        finally:
            driver.close()
            admin.close()
