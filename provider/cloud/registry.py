"""One cloud driver per region cloud, built on first use and shared by a worker's threads.

The reconciler asks ``registry.get(region.cloud)``; the clouds.yaml path comes from the provider settings.
openstacksdk connections are thread-safe for requests, and building one costs a Keystone round trip, so
each cloud gets exactly one.
"""

from __future__ import annotations

import threading
from pathlib import Path

from provider.cloud.driver import CloudDriver
from provider.cloud.openstack_driver import OpenStackDriver


class DriverRegistry:
    """Builds one ``OpenStackDriver`` per cloud name of ``clouds_yaml`` on first ``get`` and caches it.

    Thread-safe: concurrent first uses of a name build exactly one driver. A name that cannot be built
    (unknown cloud, unreadable file) raises ``CloudPermanentError`` and is not cached. ``close`` closes and
    forgets every driver; a later ``get`` builds a new one.
    """

    def __init__(self, clouds_yaml: Path, *, timeout: float = 30.0) -> None:
        self._clouds_yaml = clouds_yaml
        self._timeout = timeout
        self._drivers: dict[str, OpenStackDriver] = {}
        self._lock = threading.Lock()

    def get(self, cloud_name: str) -> CloudDriver:
        with self._lock:
            driver = self._drivers.get(cloud_name)
            if driver is None:
                driver = OpenStackDriver.from_cloud(
                    cloud_name, config_file=self._clouds_yaml, timeout=self._timeout
                )
                self._drivers[cloud_name] = driver
            return driver

    def close(self) -> None:
        with self._lock:
            for driver in self._drivers.values():
                driver.close()
            self._drivers.clear()
