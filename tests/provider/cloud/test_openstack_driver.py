"""OpenStackDriver's error translation and healing where no contract cloud can provoke them: a cloud that
is down, one that never answers, refused credentials, services that refuse fresh tokens (simcloud's
injections). Real sockets on 127.0.0.1, real openstacksdk."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from provider.cloud.errors import (
    CloudCredentialsRefused,
    CloudPermanentError,
    CloudTemporaryError,
    CloudTimeout,
    CloudTokenRefused,
)
from provider.cloud.openstack_driver import OpenStackDriver
from simcloud.testing import SimCloudHandle, run_simcloud


def clouds_yaml(tmp_path: Path, auth_url: str, *, password: str) -> Path:
    path = tmp_path / "clouds.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "clouds": {
                    "c": {
                        "auth": {
                            "auth_url": auth_url,
                            "username": "demo",
                            "password": password,
                            "project_name": "demo",
                            "user_domain_name": "Default",
                            "project_domain_name": "Default",
                        },
                        "region_name": "RegionOne",
                        "identity_api_version": 3,
                    }
                }
            }
        )
    )
    return path


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (backlog) but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def test_a_cloud_that_is_down_is_a_temporary_error(tmp_path: Path) -> None:
    path = clouds_yaml(tmp_path, f"http://127.0.0.1:{closed_port()}/v3", password="secret")
    driver = OpenStackDriver.from_cloud("c", config_file=path, timeout=2)
    try:
        with pytest.raises(CloudTemporaryError, match=r"look up flavor 'm1\.tiny'") as caught:
            driver.check_flavor("m1.tiny")
        assert caught.value.__cause__ is not None
    finally:
        driver.close()


def test_a_cloud_that_never_answers_times_out_within_the_bound(tmp_path: Path, silent_port: int) -> None:
    path = clouds_yaml(tmp_path, f"http://127.0.0.1:{silent_port}/v3", password="secret")
    driver = OpenStackDriver.from_cloud("c", config_file=path, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(CloudTimeout):
            driver.check_image("fake-image")
    finally:
        driver.close()
    assert time.monotonic() - started < 10


def test_refused_credentials_are_a_permanent_error_that_names_the_cloud_and_its_file(tmp_path: Path) -> None:
    with run_simcloud(state_dir=tmp_path / "sim") as sim:
        path = clouds_yaml(tmp_path, f"{sim.base_url}/identity/v3", password="wrong")
        driver = OpenStackDriver.from_cloud("c", config_file=path, timeout=5)
        try:
            with pytest.raises(CloudCredentialsRefused, match="401") as caught:
                driver.check_flavor("m1.tiny")
        finally:
            driver.close()
    assert isinstance(caught.value, CloudPermanentError)
    assert "the identity service refuses the credentials of cloud 'c'" in str(caught.value)
    assert str(path) in str(caught.value)
    assert "wrong" not in str(caught.value)  # never the password


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path / "sim") as handle:
        yield handle


@pytest.fixture
def sim_driver(sim: SimCloudHandle) -> Iterator[OpenStackDriver]:
    driver = OpenStackDriver.from_cloud(sim.cloud_name, config_file=sim.clouds_yaml, timeout=10)
    driver.check_flavor("m1.tiny")  # authenticated: it holds a token from here on
    yield driver
    driver.close()


def test_a_revoked_token_refused_even_after_keystoneauths_own_retry_heals_with_a_fresh_one(
    sim: SimCloudHandle, sim_driver: OpenStackDriver
) -> None:
    """After an identity restart the old token is refused, and so is the first new one (the service still
    catches up): two 401s in a row, where keystoneauth retries once. The driver authenticates afresh and
    runs the call again."""
    sim.sim.revoke_tokens()
    sim.sim.refuse_next_tokens(2)
    assert sim_driver.list_servers("c") == []
    assert not sim.sim.take_token_refusal()  # both injected refusals were met on the way


def test_a_service_that_keeps_refusing_fresh_tokens_is_a_temporary_error(
    sim: SimCloudHandle, sim_driver: OpenStackDriver
) -> None:
    sim.sim.refuse_next_tokens(1000)
    with pytest.raises(CloudTokenRefused, match=r"list servers of cluster c: the cloud refused a fresh"):
        sim_driver.list_servers("c")
    assert issubclass(CloudTokenRefused, CloudTemporaryError)
    sim.sim.refuse_next_tokens(0)
    assert sim_driver.list_servers("c") == []


def test_refused_credentials_ask_the_identity_service_no_more_until_clouds_yaml_changes(
    tmp_path: Path, sim: SimCloudHandle
) -> None:
    path = clouds_yaml(tmp_path, f"{sim.base_url}/identity/v3", password="secret")
    driver = OpenStackDriver.from_cloud("c", config_file=path, timeout=5, credential_retry_seconds=600)
    try:
        driver.check_flavor("m1.tiny")
        sim.sim.set_password("demo", "rotated")  # and the user's tokens are revoked
        with pytest.raises(CloudCredentialsRefused):
            driver.check_flavor("m1.tiny")
        logins = sim.sim.login_attempts
        for _ in range(5):
            with pytest.raises(CloudCredentialsRefused, match="credentials of cloud 'c'"):
                driver.list_servers("c")
        assert sim.sim.login_attempts == logins  # remembered: no stream of refused logins
        clouds_yaml(tmp_path, f"{sim.base_url}/identity/v3", password="rotated")  # the operator's fix
        assert driver.list_servers("c") == []
        assert sim.sim.login_attempts == logins + 1
    finally:
        driver.close()


def test_refused_credentials_are_tried_again_after_the_retry_interval(
    tmp_path: Path, sim: SimCloudHandle
) -> None:
    """An operator may fix the user in the cloud instead of the file: the driver asks again in a while."""
    path = clouds_yaml(tmp_path, f"{sim.base_url}/identity/v3", password="secret")
    driver = OpenStackDriver.from_cloud("c", config_file=path, timeout=5, credential_retry_seconds=0.5)
    try:
        driver.check_flavor("m1.tiny")
        sim.sim.set_password("demo", "rotated")
        with pytest.raises(CloudCredentialsRefused):
            driver.check_flavor("m1.tiny")
        sim.sim.set_password("demo", "secret")  # fixed in the cloud
        refused_at = time.monotonic()
        with pytest.raises(CloudCredentialsRefused):  # within the interval the refusal stands
            driver.check_flavor("m1.tiny")
        deadline = refused_at + 10
        while True:
            try:
                driver.check_flavor("m1.tiny")
                break
            except CloudCredentialsRefused:
                assert time.monotonic() < deadline, "the credentials were never tried again"
                time.sleep(0.05)
        assert time.monotonic() - refused_at >= 0.4
    finally:
        driver.close()


def test_an_explicit_clouds_yaml_wins_over_os_client_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """openstacksdk puts $OS_CLIENT_CONFIG_FILE first and reads only the first file it finds; the driver's
    own clouds.yaml must still be the one used (CI exports the real OpenStack's file for its fixtures)."""
    other = tmp_path / "other"
    other.mkdir()
    decoy = clouds_yaml(other, "http://127.0.0.1:1/v3", password="secret")
    decoy.write_text(decoy.read_text().replace("  c:", "  decoy:"))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(decoy))
    with run_simcloud(state_dir=tmp_path / "sim") as sim:
        driver = OpenStackDriver.from_cloud("sim", config_file=sim.clouds_yaml, timeout=10)
        try:
            driver.check_flavor("m1.small")
        finally:
            driver.close()
