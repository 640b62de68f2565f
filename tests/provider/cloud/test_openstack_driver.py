"""OpenStackDriver's error translation where no contract cloud can provoke it: a cloud that is down, one
that never answers, refused credentials. Real sockets on 127.0.0.1, real openstacksdk."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from provider.cloud.errors import CloudPermanentError, CloudTemporaryError, CloudTimeout
from provider.cloud.openstack_driver import OpenStackDriver
from simcloud.testing import run_simcloud


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


def test_refused_credentials_are_a_permanent_error(tmp_path: Path) -> None:
    with run_simcloud(state_dir=tmp_path / "sim") as sim:
        path = clouds_yaml(tmp_path, f"{sim.base_url}/identity/v3", password="wrong")
        driver = OpenStackDriver.from_cloud("c", config_file=path, timeout=5)
        try:
            with pytest.raises(CloudPermanentError, match="401"):
                driver.check_flavor("m1.tiny")
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
