"""The OpenStack implementation of ``CloudDriver``, on openstacksdk. The only module that imports it.

Called by the reconciler (through ``DriverRegistry``) and by the contract tests, against a real OpenStack
or ``simcloud`` alike. Every method is idempotent: it looks resources up by the cluster tag and by name
before creating, deletes ignore what is already gone, and nothing waits: methods report the state and the
reconciler comes back. Every openstacksdk/keystoneauth error leaves this module as one of ours
(``provider.cloud.errors``). User-data and tokens are never logged.

Identity at birth: every resource carries the cluster's mark from the request that creates it, so a worker
killed right after a create leaves nothing that deletion and the leak sweep cannot find. Nova servers are
created with ``tags`` (microversion 2.52 and later), Octavia load balancers, listeners, pools, members and
health monitors with ``tags``. Neutron takes ``tags`` in a create request for ports only (Neutron 29 answers
400 "Attribute 'tags' not allowed in POST" for networks, subnets, routers and security groups, although it
lists the ``tag-creation`` extension: that one is about ``POST .../tags``), so those are created with the
tag text as their ``description`` and tagged by ``set_tags`` right after. Lookups, deletion and the sweep
accept either mark; a resource found by its description alone (a kill between the two calls) is tagged when
the cluster's next pass adopts it. Server groups have neither tags nor descriptions and are found by name
(``kaas-<id8>-cp``); their create is one call.

Healing: the external network's id is cached, and a 404 from a call that used it looks the name up again
(an operator may have recreated the network under a new id). A service's 401 (an expired or revoked token)
is answered by a fresh authentication and one more run of the (idempotent) method; credentials the identity
service itself refuses are ``CloudCredentialsRefused``, remembered for ``credential_retry_seconds`` so that
a region's clusters do not turn into a stream of refused logins, and forgotten as soon as clouds.yaml changes
(the driver then reconnects with what the file says now). See ``_heals_authentication``.

User-data: the compute proxy (``conn.compute.create_server``) sends the body as given, and Nova wants base64,
so this module encodes the cloud-config text (only the cloud layer ``conn.create_server`` encodes itself).
"""

from __future__ import annotations

import base64
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import openstack
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions
from openstack.config import loader

from provider.cloud.driver import (
    CLUSTER_TAG_PREFIX,
    CloudCapacity,
    CloudCredential,
    CloudEndpoint,
    CloudResource,
    ClusterResources,
    LoadBalancerInfo,
    LoadBalancerObservation,
    LoadBalancerSpec,
    NetworkInfo,
    NetworkSpec,
    RegionInventory,
    SecurityGroupRule,
    SecurityGroupsInfo,
    ServerInfo,
    ServerSpec,
    cloud_credential_name,
    cluster_tag,
    resource_prefix,
    security_group_rules,
    server_group_name,
)
from provider.cloud.errors import (
    CloudCredentialsRefused,
    CloudError,
    CloudNotFound,
    CloudPermanentError,
    CloudQuotaExceeded,
    CloudTemporaryError,
    CloudTimeout,
    CloudTokenRefused,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

# Nova microversion with server tags on create (2.52) and the `policy` field of server groups (2.64).
COMPUTE_MICROVERSION = "2.64"


def _is_quota_error(exc: os_exceptions.HttpException) -> bool:
    text = f"{exc.details or ''} {exc.message or ''} {exc}".lower()
    return "quota" in text or "overquota" in text


def _http_detail(exc: os_exceptions.HttpException) -> str:
    return str(exc.details or exc.message or exc)


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise every openstacksdk and keystoneauth error as our own, with what we were doing.

    - quota (Nova 403 "Quota exceeded", Neutron 409 OverQuota, Octavia 403 "Quota has been met"):
      ``CloudQuotaExceeded``;
    - 409 otherwise (Octavia "is immutable" while PENDING_*, Neutron "in use"), 429, 5xx, no answer,
      connection errors and timeouts: ``CloudTemporaryError`` (``CloudTimeout`` for timeouts);
    - 404: ``CloudTemporaryError`` too. The driver looks user-named things (flavor, image, external
      network) up with ``find_*`` and raises ``CloudNotFound`` itself, so a 404 on an id means the resource
      went away between two calls; the next pass of the reconciler sees the new state;
    - 401 from a service: ``CloudTokenRefused`` (keystoneauth already re-authenticated once and the service
      refused that token too); 401 from the identity service: ``CloudCredentialsRefused``;
    - every other 4xx (400 bad request, 403 policy): ``CloudPermanentError``.
    """
    try:
        yield
    except CloudError:
        raise
    except os_exceptions.ResourceTimeout as exc:
        raise CloudTimeout(f"{action}: timed out: {exc}") from exc
    except os_exceptions.HttpException as exc:
        status = exc.status_code or 0
        detail = _http_detail(exc)
        if status in (403, 409, 413) and _is_quota_error(exc):
            raise CloudQuotaExceeded(f"{action}: cloud quota exceeded: {detail}") from exc
        if status in (0, 404, 409, 429) or status >= 500:
            raise CloudTemporaryError(f"{action}: cloud busy or changing ({status}): {detail}") from exc
        if status == 401:
            raise CloudTokenRefused(f"{action}: the cloud refused a fresh token (401): {detail}") from exc
        raise CloudPermanentError(f"{action}: refused by the cloud ({status}): {detail}") from exc
    except ks_exceptions.ConnectTimeout as exc:
        raise CloudTimeout(f"{action}: the cloud did not answer in time: {exc}") from exc
    except (
        ks_exceptions.ConnectFailure,
        ks_exceptions.RetriableConnectionFailure,
        ks_exceptions.ConnectionError,
    ) as exc:
        raise CloudTemporaryError(f"{action}: cannot reach the cloud: {exc}") from exc
    except ks_exceptions.HttpError as exc:
        status = exc.http_status or 0
        if status >= 500 or status in (0, 429):
            raise CloudTemporaryError(f"{action}: identity service busy ({status}): {exc}") from exc
        if status == 401:
            raise CloudCredentialsRefused(
                f"{action}: the identity service refuses the credentials (401): {exc}"
            ) from exc
        raise CloudPermanentError(f"{action}: refused by the identity service ({status}): {exc}") from exc
    except (ks_exceptions.EndpointNotFound, ks_exceptions.CatalogException) as exc:
        raise CloudPermanentError(f"{action}: the cloud does not offer this service: {exc}") from exc
    except (ks_exceptions.AuthorizationFailure, ks_exceptions.MissingAuthPlugin) as exc:
        raise CloudPermanentError(f"{action}: cannot authenticate to the cloud: {exc}") from exc
    except ks_exceptions.ClientException as exc:
        raise CloudTemporaryError(f"{action}: cloud client error: {exc}") from exc
    except os_exceptions.SDKException as exc:
        raise CloudPermanentError(f"{action}: {exc}") from exc


SERVER_GROUP_PAGE = 500
# the bulk listings' page: Nova's and Octavia's default most per page (`max_limit`, `pagination_max_limit`)
LIST_PAGE = 1000
# what Neutron calls a router's port on one of its subnets (plain, distributed, HA)
ROUTER_INTERFACE_OWNERS = (
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
)
# how long refused credentials are believed before the identity service is asked again (unless clouds.yaml
# changes first): a region's clusters each try every few minutes, and a stream of refused logins can lock
# the account where the identity service counts failures
CREDENTIAL_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class NamedResource:
    """A listed resource of which only the id and the name matter (and, for a server group, its members)."""

    id: str
    name: str
    members: int = 0


@dataclass(frozen=True)
class CloudSource:
    """Where a driver's connection comes from: one clouds.yaml entry (reconnects when the file changes)."""

    cloud_name: str
    config_file: Path | None  # None: openstacksdk's usual search path (then changes are not watched)
    timeout: float

    def connect(self) -> Any:
        with translate_errors(f"connect to cloud {self.cloud_name!r}"):
            # An explicit clouds.yaml must win: openstacksdk otherwise puts $OS_CLIENT_CONFIG_FILE first
            # and loads only the first file it finds, so a stray environment variable would silently
            # point kaas at another cloud ("Cloud X was not found").
            if self.config_file is not None:
                config = loader.OpenStackConfig(config_files=[str(self.config_file)], load_envvars=False)
            else:
                config = loader.OpenStackConfig()
            region = config.get_one(
                cloud=self.cloud_name, api_timeout=self.timeout, compute_api_version=COMPUTE_MICROVERSION
            )
            return openstack.connection.Connection(config=region)

    def read(self) -> bytes | None:
        """The file's content, to notice an operator's edit; None when unknown or unreadable."""
        if self.config_file is None:
            return None
        try:
            return self.config_file.read_bytes()
        except OSError:
            return None


@dataclass(frozen=True)
class _Refusal:
    """Credentials the identity service refused: believed until ``until`` or until clouds.yaml changes."""

    message: str
    until: float


def _heals_authentication(
    method: Callable[Concatenate[OpenStackDriver, P], T],
) -> Callable[Concatenate[OpenStackDriver, P], T]:
    """Run a driver method so that a refused token heals and refused credentials are said plainly.

    - A service answers 401 (``CloudTokenRefused``; keystoneauth already re-authenticated once): a token
      expired or revoked, or a service still catching up with a restarted identity service. The token is
      dropped and the method runs once more, which authenticates afresh: every method is idempotent, so
      the second run finds what the first one made. A second refusal leaves as ``CloudTokenRefused``, which
      is temporary.
    - The identity service refuses the credentials (``CloudCredentialsRefused``): if clouds.yaml changed
      since the connection was built, reconnect with what it says now and run once more; otherwise the
      refusal is remembered (``_Refusal``) and every call fails at once, without a login, for
      ``credential_retry_seconds`` or until clouds.yaml changes.
    """

    @functools.wraps(method)
    def run(self: OpenStackDriver, /, *args: P.args, **kwargs: P.kwargs) -> T:
        self._raise_if_refused()
        token_renewed = reconnected = False
        while True:
            try:
                return method(self, *args, **kwargs)
            except CloudTokenRefused:
                if token_renewed:
                    raise
                token_renewed = True
                log.warning("the cloud refused our token: authenticating afresh", extra={"cloud": self.name})
                self._conn.session.invalidate()
            except CloudCredentialsRefused as exc:
                if reconnected or not self._reconnect_if_config_changed():
                    raise self._remember_refusal(exc) from exc
                reconnected = True

    return run


class OpenStackDriver:
    """``CloudDriver`` over one openstacksdk connection (one cloud, one project).

    Thread-safe as openstacksdk connections are; the reconnect after an edited clouds.yaml swaps the
    connection under a lock."""

    def __init__(
        self,
        connection: Any,
        *,
        name: str = "cloud",
        source: CloudSource | None = None,
        external_network_cache: dict[str, str] | None = None,
        server_group_page: int = SERVER_GROUP_PAGE,
        list_page: int = LIST_PAGE,
        credential_retry_seconds: float = CREDENTIAL_RETRY_SECONDS,
    ) -> None:
        self._conn = connection
        self.name = name  # the clouds.yaml entry: what messages about credentials name
        self._source = source
        self._config_seen = source.read() if source is not None else None
        self._external_networks: dict[str, str] = external_network_cache or {}
        self._server_group_page = server_group_page
        self._list_page = list_page
        # server group name -> id, as found or made by this driver; checked by id before each use
        self._server_group_ids: dict[str, str] = {}
        self._credential_retry_seconds = credential_retry_seconds
        self._refusal: _Refusal | None = None
        self._lock = threading.RLock()

    @classmethod
    def from_cloud(
        cls,
        cloud_name: str,
        *,
        config_file: Path | None = None,
        timeout: float = 30,
        credential_retry_seconds: float = CREDENTIAL_RETRY_SECONDS,
    ) -> OpenStackDriver:
        """Connect to a clouds.yaml entry (``config_file`` or the usual search path)."""
        source = CloudSource(cloud_name=cloud_name, config_file=config_file, timeout=timeout)
        return cls(
            source.connect(),
            name=cloud_name,
            source=source,
            credential_retry_seconds=credential_retry_seconds,
        )

    def close(self) -> None:
        self._conn.close()

    # --- credentials ------------------------------------------------------------------------------
    def _raise_if_refused(self) -> None:
        if self._refusal is None:  # the usual case, without taking the lock every call of every thread
            return
        with self._lock:
            refusal = self._refusal
            if refusal is None or self._reconnect_if_config_changed():
                return
            if time.monotonic() >= refusal.until:
                self._refusal = None  # ask the identity service again: an operator may have fixed the user
                return
        raise CloudCredentialsRefused(refusal.message)

    def _remember_refusal(self, exc: CloudCredentialsRefused) -> CloudCredentialsRefused:
        config_file = self._source.config_file if self._source is not None else None
        where = str(config_file) if config_file is not None else "clouds.yaml"
        again = f"when {config_file} changes and " if config_file is not None else ""
        message = (
            f"the identity service refuses the credentials of cloud {self.name!r} on a fresh"
            f" authentication: an operator must fix its user, password or project in {where} or in the"
            f" cloud; kaas tries them again {again}every {self._credential_retry_seconds:g} s ({exc})"
        )
        with self._lock:
            self._refusal = _Refusal(message, time.monotonic() + self._credential_retry_seconds)
        log.error("cloud credentials refused", extra={"cloud": self.name})
        return CloudCredentialsRefused(message)

    def _reconnect_if_config_changed(self) -> bool:
        """Reconnect with clouds.yaml as it is now if it changed since the connection was built."""
        if self._source is None:
            return False
        current = self._source.read()
        with self._lock:
            if current is None or current == self._config_seen:
                return False
            try:
                connection = self._source.connect()
            except CloudError:
                # a broken edit (say, the entry renamed): keep what we have; the next edit is looked at again
                log.warning("clouds.yaml changed but is unusable", extra={"cloud": self.name}, exc_info=True)
                self._config_seen = current
                return False
            old, self._conn = self._conn, connection
            self._config_seen = current
            self._refusal = None
        log.info("clouds.yaml changed: reconnected", extra={"cloud": self.name})
        old.close()
        return True

    # --- validation -------------------------------------------------------------------------------
    @_heals_authentication
    def check_flavor(self, name: str) -> None:
        self._flavor_id(name)

    @_heals_authentication
    def check_image(self, name: str) -> None:
        self._image_id(name)

    def _flavor_id(self, name: str) -> str:
        with translate_errors(f"look up flavor {name!r}"):
            flavor = self._conn.compute.find_flavor(name, ignore_missing=True)
        if flavor is None:
            raise CloudNotFound(
                f"flavor {name!r} does not exist in the cloud: choose one of the region's flavors,"
                " or ask an admin to create it"
            )
        return str(flavor.id)

    def _image_id(self, name: str) -> str:
        with translate_errors(f"look up image {name!r}"):
            image = self._conn.image.find_image(name, ignore_missing=True)
        if image is None:
            raise CloudNotFound(
                f"image {name!r} does not exist in the cloud (or is not visible to this project):"
                " ask an admin to upload it or to fix the region's image"
            )
        return str(image.id)

    def _external_network_id(self, name: str) -> str:
        """The id of external network ``name``, looked up once per driver: every pass of every cluster
        needs it, and it changes only when an operator recreates the network (``_with_external_network``)."""
        if name not in self._external_networks:
            with translate_errors(f"look up external network {name!r}"):
                network = self._conn.network.find_network(name, ignore_missing=True)
            if network is None:
                raise CloudNotFound(
                    f"external network {name!r} does not exist in the cloud (or is not visible to this"
                    " project): ask an admin to fix the region's external network"
                )
            self._external_networks[name] = str(network.id)
        return self._external_networks[name]

    def _with_external_network(self, name: str, use: Callable[[str], T]) -> T:
        """``use(id of external network name)``, healing a stale cached id.

        A 404 from ``use`` may mean the network was deleted and created again under a new id (an operator
        rebuilding the cloud's public network): the name is looked up afresh and, if its id changed, ``use``
        runs once more with the new one. The same id again means the 404 was about something else: it goes
        on as the error it is. No network of that name right now, after there was one, is temporary: the
        operator is most likely half-way through recreating it."""
        network_id = self._external_network_id(name)
        try:
            return use(network_id)
        except os_exceptions.NotFoundException:
            self._external_networks.pop(name, None)
            try:
                fresh = self._external_network_id(name)
            except CloudNotFound as exc:
                raise CloudTemporaryError(
                    f"external network {name!r} ({network_id}) is gone and none of that name exists now:"
                    " waiting for an admin to create it again"
                ) from exc
            if fresh == network_id:
                raise
            log.warning(
                "the external network was recreated: using its new id",
                extra={"external_network": name, "old_id": network_id, "new_id": fresh},
            )
            return use(fresh)

    # --- helpers ------------------------------------------------------------------------------------
    def _tagged(self, list_call: Callable[..., Any], cluster_id: str, **query: Any) -> list[Any]:
        return list(list_call(tags=cluster_tag(cluster_id), **query))

    def _owned(self, list_call: Callable[..., Any], cluster_id: str, **query: Any) -> list[Any]:
        """The cluster's Neutron resources of one kind: tagged, or born with the cluster's mark as their
        description and never tagged (a worker killed between the create and ``set_tags``)."""
        mark = cluster_tag(cluster_id)
        found = {r.id: r for r in list_call(tags=mark, **query)}
        for resource in list_call(description=mark, **query):
            found.setdefault(resource.id, resource)
        return list(found.values())

    def _one(self, items: list[T]) -> T | None:
        return items[0] if items else None

    def _ensure_neutron(
        self,
        kind: str,
        list_call: Callable[..., Any],
        create_call: Callable[..., Any],
        cluster_id: str,
        name: str,
        *,
        query: dict[str, Any] | None = None,
        attrs: dict[str, Any] | None = None,
        one_of_several: bool = False,
    ) -> Any:
        """The cluster's Neutron resource of this kind: found by tag; else adopted (and tagged) when it
        carries the cluster's mark as description (born, never tagged), or when it has our name and no kaas
        mark at all (born untagged under a kaas that did not set the description); else created with the
        mark as description and then tagged (``set_tags``): Neutron refuses ``tags`` in the create request.

        ``one_of_several``: the cluster has more than one of this kind (security groups), so lookups also
        match the name."""
        query = query or {}
        tag = cluster_tag(cluster_id)
        by_tag = self._tagged(list_call, cluster_id, **query)
        found = self._one([r for r in by_tag if r.name == name] if one_of_several else by_tag)
        if found is not None:
            return found
        for item in list_call(description=tag, **query):
            if item.name == name or not one_of_several:
                return self._adopt(kind, item, cluster_id)
        for item in list_call(name=name, **query):
            marked = any(t.startswith(CLUSTER_TAG_PREFIX) for t in item.tags or []) or str(
                item.description or ""
            ).startswith(CLUSTER_TAG_PREFIX)
            if item.name == name and not marked:
                return self._adopt(kind, item, cluster_id)
        created = create_call(name=name, description=tag, **query, **(attrs or {}))
        self._conn.network.set_tags(created, [tag])
        return created

    def _adopt(self, kind: str, item: Any, cluster_id: str) -> Any:
        self._conn.network.set_tags(item, [*(item.tags or []), cluster_tag(cluster_id)])
        log.warning("adopted an untagged %s", kind, extra={"resource": item.name, "cluster": cluster_id})
        return item

    # --- network ----------------------------------------------------------------------------------
    @_heals_authentication
    def ensure_network(self, spec: NetworkSpec) -> NetworkInfo:
        prefix = resource_prefix(spec.cluster_id)
        net_api = self._conn.network
        with translate_errors(f"ensure network of cluster {spec.cluster_id}"):
            self._external_network_id(spec.external_network)  # an unknown name fails before anything is made
            network = self._ensure_neutron(
                "network", net_api.networks, net_api.create_network, spec.cluster_id, f"{prefix}-net"
            )
            subnet = self._ensure_neutron(
                "subnet",
                net_api.subnets,
                net_api.create_subnet,
                spec.cluster_id,
                f"{prefix}-subnet",
                query={"network_id": network.id},
                attrs={"ip_version": 4, "cidr": spec.cidr, "dns_nameservers": list(spec.dns_nameservers)},
            )
            router = self._with_external_network(
                spec.external_network,
                lambda external_id: self._ensure_neutron(
                    "router",
                    net_api.routers,
                    net_api.create_router,
                    spec.cluster_id,
                    f"{prefix}-router",
                    attrs={"external_gateway_info": {"network_id": external_id}},
                ),
            )
            if not (router.external_gateway_info or {}).get("network_id"):
                router = self._with_external_network(
                    spec.external_network,
                    lambda external_id: net_api.update_router(
                        router, external_gateway_info={"network_id": external_id}
                    ),
                )
            if not list(net_api.ports(device_id=router.id, network_id=network.id)):
                net_api.add_interface_to_router(router, subnet=subnet.id)
        return NetworkInfo(
            network_id=str(network.id), subnet_id=str(subnet.id), router_id=str(router.id), ready=True
        )

    @_heals_authentication
    def ensure_security_groups(self, cluster_id: str, *, node_cidr: str) -> SecurityGroupsInfo:
        prefix = resource_prefix(cluster_id)
        wanted = security_group_rules(cluster_id, node_cidr=node_cidr)
        ids: dict[str, str] = {}
        net_api = self._conn.network
        with translate_errors(f"ensure security groups of cluster {cluster_id}"):
            for name, rules in wanted.items():
                group = self._ensure_neutron(
                    "security group",
                    net_api.security_groups,
                    net_api.create_security_group,
                    cluster_id,
                    name,
                    one_of_several=True,
                )
                # Neutron embeds a group's rules in the group itself: no extra call per group
                present = {
                    (
                        r.get("protocol"),
                        r.get("port_range_min"),
                        r.get("port_range_max"),
                        r.get("remote_ip_prefix"),
                    )
                    for r in (group.security_group_rules or [])
                    if r.get("direction") == "ingress"
                }
                for protocol, low, high, remote in sorted(rules, key=str):
                    if (protocol, low, high, remote) in present:
                        continue
                    net_api.create_security_group_rule(
                        security_group_id=group.id,
                        direction="ingress",
                        ethertype="IPv4",
                        protocol=protocol,
                        port_range_min=low,
                        port_range_max=high,
                        remote_ip_prefix=remote,
                    )
                ids[name] = str(group.id)
        return SecurityGroupsInfo(control_plane_id=ids[f"{prefix}-cp"], nodes_id=ids[f"{prefix}-nodes"])

    # --- compute ----------------------------------------------------------------------------------
    @_heals_authentication
    def ensure_server_group(self, cluster_id: str, *, policy: str, generation: str | None = None) -> str:
        name = server_group_name(cluster_id, generation)
        with translate_errors(f"ensure server group of cluster {cluster_id}"):
            if self._server_group_still_there(name):
                return self._server_group_ids[name]
            groups = self._server_groups(cluster_id)
            for group in groups:
                if group.name == name:
                    self._server_group_ids[name] = group.id
                    return str(group.id)
            # a new generation's group: an older generation's that no server uses any more goes (each
            # upgrade of a control plane would otherwise leave one behind, against Nova's group quota)
            for group in groups:
                if (
                    generation is not None
                    and group.name != server_group_name(cluster_id)
                    and not group.members
                ):
                    self._conn.compute.delete_server_group(group.id, ignore_missing=True)
            group = self._conn.compute.create_server_group(name=name, policy=policy)
            self._server_group_ids[name] = str(group.id)
        return str(group.id)

    def _server_group_still_there(self, name: str) -> bool:
        """Whether the group this driver found or made under ``name`` still exists (one GET by id): Nova
        cannot filter groups by name, and listing them all each pass costs every cluster's groups."""
        group_id = self._server_group_ids.get(name)
        if group_id is None:
            return False
        response = self._conn.compute.get(f"/os-server-groups/{group_id}")
        if response.status_code == 404:
            self._server_group_ids.pop(name, None)
            return False
        os_exceptions.raise_from_response(response)
        if (response.json().get("server_group") or {}).get("name") != name:
            self._server_group_ids.pop(name, None)
            return False
        return True

    @_heals_authentication
    def list_servers(self, cluster_id: str) -> list[ServerInfo]:
        with translate_errors(f"list servers of cluster {cluster_id}"):
            servers = self._tagged(self._conn.compute.servers, cluster_id, details=True)
            return [self._server_info(s) for s in servers if s.status != "DELETED"]

    @_heals_authentication
    def create_server(self, spec: ServerSpec) -> ServerInfo:
        with translate_errors(f"create server {spec.name}"):
            for existing in self._tagged(self._conn.compute.servers, spec.cluster_id, name=f"^{spec.name}$"):
                if existing.name == spec.name and existing.status != "DELETED":
                    return self._server_info(existing)
            metadata = {
                **spec.metadata,
                "kaas-cluster": spec.cluster_id,
                "kaas-role": spec.role,
                **({"kaas-node-pool": spec.node_pool} if spec.node_pool else {}),
            }
            attrs: dict[str, Any] = {
                "name": spec.name,
                "flavor_id": self._flavor_id(spec.flavor),
                "image_id": self._image_id(spec.image),
                "networks": [{"uuid": spec.network_id}],
                "security_groups": [{"name": group_id} for group_id in spec.security_group_ids],
                "user_data": base64.b64encode(spec.user_data.encode()).decode(),
                "metadata": metadata,
                "tags": [cluster_tag(spec.cluster_id)],
            }
            if spec.server_group_id:
                attrs["scheduler_hints"] = {"group": spec.server_group_id}
            server = self._conn.compute.create_server(**attrs)
            log.info("server created", extra={"server": spec.name, "cluster": spec.cluster_id})
        return self._server_info(server)

    @_heals_authentication
    def delete_server(self, server_id: str) -> None:
        with translate_errors(f"delete server {server_id}"):
            self._conn.compute.delete_server(server_id, ignore_missing=True)

    @_heals_authentication
    def server_console(self, server_id: str, *, lines: int) -> str:
        with translate_errors(f"read the console of server {server_id}"):
            answer = self._conn.compute.get_server_console_output(server_id, length=lines)
        output = answer.get("output") if isinstance(answer, dict) else None
        return output if isinstance(output, str) else ""

    @staticmethod
    def _server_info(server: Any) -> ServerInfo:
        return _server_info_of(
            id=server.id,
            name=server.name,
            status=server.status,
            addresses=server.addresses,
            metadata=server.metadata,
            fault=server.fault,
        )

    # --- load balancer ----------------------------------------------------------------------------
    @_heals_authentication
    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> LoadBalancerInfo:
        prefix = resource_prefix(spec.cluster_id)
        lb_api = self._conn.load_balancer
        tags = [cluster_tag(spec.cluster_id)]  # on the LB and on every child, from their create request
        with translate_errors(f"ensure load balancer of cluster {spec.cluster_id}"):
            lb = self._one(self._tagged(lb_api.load_balancers, spec.cluster_id))
            if lb is None:
                lb = lb_api.create_load_balancer(
                    name=f"{prefix}-api", vip_subnet_id=spec.subnet_id, tags=tags
                )
            if lb.provisioning_status != "ACTIVE":
                return self._lb_info(lb, pool_id=None)
            # the LB lists its own children: filtering listeners/pools by LB id is not portable across clouds
            listener_ids = [item["id"] for item in (lb.listeners or [])]
            if not listener_ids:
                lb_api.create_listener(
                    name=f"{prefix}-api",
                    protocol="TCP",
                    protocol_port=spec.port,
                    load_balancer_id=lb.id,
                    tags=tags,
                )
                return self._lb_info(lb_api.get_load_balancer(lb.id), pool_id=None)
            pool_ids = [item["id"] for item in (lb.pools or [])]
            if not pool_ids:
                lb_api.create_pool(
                    name=f"{prefix}-api",
                    protocol="TCP",
                    lb_algorithm="ROUND_ROBIN",
                    listener_id=listener_ids[0],
                    tags=tags,
                )
                return self._lb_info(lb_api.get_load_balancer(lb.id), pool_id=None)
            pool = lb_api.get_pool(pool_ids[0])
            if not pool.health_monitor_id:
                lb_api.create_health_monitor(
                    pool_id=pool.id, type="TCP", delay=5, timeout=5, max_retries=3, tags=tags
                )
                return self._lb_info(lb_api.get_load_balancer(lb.id), pool_id=None)
        return self._lb_info(lb, pool_id=str(pool.id))

    @staticmethod
    def _lb_info(lb: Any, *, pool_id: str | None) -> LoadBalancerInfo:
        return LoadBalancerInfo(
            id=str(lb.id),
            vip_address=lb.vip_address,
            provisioning_status=str(lb.provisioning_status),
            pool_id=pool_id,
        )

    @_heals_authentication
    def ensure_lb_members(
        self, lb: LoadBalancerInfo, *, subnet_id: str, addresses: list[str], port: int
    ) -> bool:
        if lb.pool_id is None:
            return False
        lb_api = self._conn.load_balancer
        with translate_errors(f"ensure members of load balancer {lb.id}"):
            current = lb_api.get_load_balancer(lb.id)
            if current.provisioning_status != "ACTIVE":
                return False
            # members carry the LB's cluster tag (the spec of a member names no cluster)
            tags = [t for t in current.tags or [] if t.startswith(CLUSTER_TAG_PREFIX)]
            members = {m.address: m for m in lb_api.members(lb.pool_id)}
            for address, member in members.items():
                if address not in addresses:
                    lb_api.delete_member(member, lb.pool_id, ignore_missing=True)
                    return False  # Octavia takes one change at a time; come back when ACTIVE again
            for address in addresses:
                if address not in members:
                    lb_api.create_member(
                        lb.pool_id, address=address, protocol_port=port, subnet_id=subnet_id, tags=tags
                    )
                    return False
        return True

    # --- identity ---------------------------------------------------------------------------------
    def cloud_endpoint(self) -> CloudEndpoint:
        config = self._conn.config
        auth_url = str(config.get_auth_args().get("auth_url") or "")
        if not auth_url:
            raise CloudPermanentError(f"cloud {self.name!r} names no auth_url in clouds.yaml")
        return CloudEndpoint(auth_url=auth_url, region_name=str(config.region_name or "RegionOne"))

    def _user_id(self) -> str:
        user_id = self._conn.current_user_id
        if not user_id:
            raise CloudPermanentError("the cloud did not say which user kaas authenticates as")
        return str(user_id)

    def _cloud_credentials(self, cluster_id: str) -> list[NamedResource]:
        """The cluster's application credentials: named as kaas names them or described with its tag. Read
        as raw JSON: the user holds one per cluster, and a ``Resource`` each costs milliseconds."""
        name, tag = cloud_credential_name(cluster_id), cluster_tag(cluster_id)
        response = self._conn.identity.get(f"/users/{self._user_id()}/application_credentials")
        os_exceptions.raise_from_response(response)
        return [
            NamedResource(id=str(c["id"]), name=str(c.get("name")))
            for c in response.json().get("application_credentials") or []
            if c.get("name") == name or c.get("description") == tag
        ]

    @_heals_authentication
    def ensure_cloud_credential(self, cluster_id: str, *, known_id: str | None) -> CloudCredential:
        identity = self._conn.identity
        with translate_errors(f"ensure the application credential of cluster {cluster_id}"):
            if known_id is not None and self._credential_exists(known_id, cluster_id):
                return CloudCredential(id=known_id)
            existing = self._cloud_credentials(cluster_id)
            for credential in existing:
                if credential.id == known_id:
                    return CloudCredential(id=str(credential.id))
            user_id = self._user_id()
            for credential in existing:  # born in a pass that died before storing its secret
                identity.delete_application_credential(user_id, credential.id, ignore_missing=True)
            created = identity.create_application_credential(
                user_id,
                cloud_credential_name(cluster_id),
                description=cluster_tag(cluster_id),
                unrestricted=False,
            )
            log.info("application credential created", extra={"cluster": cluster_id})
        return CloudCredential(id=str(created.id), secret=str(created.secret))

    def _credential_exists(self, credential_id: str, cluster_id: str) -> bool:
        """One GET by id: listing the user's credentials costs every cluster's (one each), per pass."""
        response = self._conn.identity.get(
            f"/users/{self._user_id()}/application_credentials/{credential_id}"
        )
        if response.status_code == 404:
            return False
        os_exceptions.raise_from_response(response)
        found = response.json().get("application_credential") or {}
        return bool(
            found.get("name") == cloud_credential_name(cluster_id)
            or found.get("description") == cluster_tag(cluster_id)
        )

    def _delete_cloud_credentials(self, cluster_id: str) -> None:
        user_id = self._user_id()
        for credential in self._cloud_credentials(cluster_id):
            with _deferred(f"application credential {credential.id}"):
                self._conn.identity.delete_application_credential(user_id, credential.id, ignore_missing=True)

    # --- teardown and audit -----------------------------------------------------------------------
    @_heals_authentication
    def list_cluster_resources(self, cluster_id: str) -> list[CloudResource]:
        return self._list_cluster_resources(cluster_id)

    def _list_cluster_resources(self, cluster_id: str) -> list[CloudResource]:
        found: list[CloudResource] = []
        compute, net_api, lb_api = self._conn.compute, self._conn.network, self._conn.load_balancer
        with translate_errors(f"list resources of cluster {cluster_id}"):
            found += [
                CloudResource("server", s.id, s.name)
                for s in self._tagged(compute.servers, cluster_id)
                if s.status != "DELETED"
            ]
            found += [
                CloudResource("load_balancer", lb.id, lb.name)
                for lb in self._tagged(lb_api.load_balancers, cluster_id)
                if lb.provisioning_status != "DELETED"
            ]
            found += [CloudResource("server_group", g.id, g.name) for g in self._server_groups(cluster_id)]
            found += [CloudResource("router", r.id, r.name) for r in self._owned(net_api.routers, cluster_id)]
            found += [CloudResource("subnet", s.id, s.name) for s in self._owned(net_api.subnets, cluster_id)]
            found += [
                CloudResource("network", n.id, n.name) for n in self._owned(net_api.networks, cluster_id)
            ]
            found += [
                CloudResource("security_group", g.id, g.name)
                for g in self._owned(net_api.security_groups, cluster_id)
            ]
            found += [
                CloudResource("application_credential", c.id, c.name)
                for c in self._cloud_credentials(cluster_id)
            ]
        return found

    @_heals_authentication
    def delete_cluster_resources(self, cluster_id: str) -> list[CloudResource]:
        """One pass in dependency order: servers, load balancers (cascade), server groups, then, once no
        server or LB is left, router interfaces and gateway, routers, leftover ports, subnets, networks and
        security groups. A deletion the cloud refuses for now (409 in use, 404 gone meanwhile) waits for the
        next pass; what is left is returned."""
        compute, net_api, lb_api = self._conn.compute, self._conn.network, self._conn.load_balancer
        with translate_errors(f"delete resources of cluster {cluster_id}"):
            servers = [s for s in self._tagged(compute.servers, cluster_id) if s.status != "DELETED"]
            for server in servers:
                with _deferred(f"server {server.id}"):
                    compute.delete_server(server, ignore_missing=True)
            lbs = [
                lb
                for lb in self._tagged(lb_api.load_balancers, cluster_id)
                if lb.provisioning_status != "DELETED"
            ]
            for lb in lbs:
                if not str(lb.provisioning_status).startswith("PENDING"):
                    with _deferred(f"load balancer {lb.id}"):
                        lb_api.delete_load_balancer(lb, ignore_missing=True, cascade=True)
            for group in self._server_groups(cluster_id):
                with _deferred(f"server group {group.id}"):
                    compute.delete_server_group(group.id, ignore_missing=True)
            if servers or lbs:
                return self._list_cluster_resources(cluster_id)  # their ports still use the network
            networks = self._owned(net_api.networks, cluster_id)
            for router in self._owned(net_api.routers, cluster_id):
                for port in net_api.ports(device_id=router.id):
                    if str(port.device_owner).startswith("network:router_interface"):
                        for fixed_ip in port.fixed_ips or []:
                            with _deferred(f"interface of router {router.id}"):
                                net_api.remove_interface_from_router(router, subnet=fixed_ip["subnet_id"])
                if (router.external_gateway_info or {}).get("network_id"):
                    with _deferred(f"gateway of router {router.id}"):
                        net_api.update_router(router, external_gateway_info={})
                with _deferred(f"router {router.id}"):
                    net_api.delete_router(router, ignore_missing=True)
            for network in networks:
                for port in net_api.ports(network_id=network.id):
                    # Nova's and Octavia's leftovers; Neutron removes its own (network:*) with the network
                    if not str(port.device_owner or "").startswith("network:"):
                        with _deferred(f"port {port.id}"):
                            net_api.delete_port(port, ignore_missing=True)
            for subnet in self._owned(net_api.subnets, cluster_id):
                with _deferred(f"subnet {subnet.id}"):
                    net_api.delete_subnet(subnet, ignore_missing=True)
            for network in networks:
                with _deferred(f"network {network.id}"):
                    net_api.delete_network(network, ignore_missing=True)
            for group in self._owned(net_api.security_groups, cluster_id):
                with _deferred(f"security group {group.id}"):
                    net_api.delete_security_group(group, ignore_missing=True)
            # last: the cluster's cloud controller may still be cleaning up with it until its servers go
            self._delete_cloud_credentials(cluster_id)
        return self._list_cluster_resources(cluster_id)

    def _server_groups(self, cluster_id: str) -> list[NamedResource]:
        """Server groups carry no tags: the cluster's are named ``kaas-<id8>-cp`` (and
        ``-cp-<generation>``)."""
        name = server_group_name(cluster_id)
        return [g for g in self._kaas_server_groups() if g.name == name or g.name.startswith(f"{name}-")]

    @_heals_authentication
    def list_tagged_cluster_ids(self) -> set[str]:
        """Also the clusters whose Neutron resources carry only the description mark (never tagged)."""
        ids: set[str] = set()
        compute, net_api, lb_api = self._conn.compute, self._conn.network, self._conn.load_balancer
        with translate_errors("list kaas-tagged resources"):
            listings: list[tuple[Iterable[Any], bool]] = [
                (compute.servers(), False),
                (net_api.networks(), True),
                (net_api.routers(), True),
                (net_api.security_groups(), True),
                (lb_api.load_balancers(), False),
            ]
            listings.append((self._conn.identity.application_credentials(self._user_id()), True))
            for listing, described in listings:
                for resource in listing:
                    marks = list(getattr(resource, "tags", None) or [])
                    if described:
                        marks.append(str(resource.description or ""))
                    ids.update(
                        mark.removeprefix(CLUSTER_TAG_PREFIX)
                        for mark in marks
                        if mark.startswith(CLUSTER_TAG_PREFIX)
                    )
        return ids

    # --- bulk observation -------------------------------------------------------------------------
    def _pages(
        self,
        proxy: Any,
        path: str,
        key: str,
        inventory: RegionInventory,
        *,
        params: dict[str, Any] | None = None,
        microversion: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a listing, as raw JSON, page by page (``marker``/``limit`` as Nova, Neutron and
        Octavia page): openstacksdk builds every listed ``Resource`` at a cost of milliseconds, which at
        30,000 servers would be the whole budget of the observation."""
        marker: str | None = None
        while True:
            query: dict[str, Any] = {**(params or {}), "limit": self._list_page}
            if marker is not None:
                query["marker"] = marker
            extra = {"microversion": microversion} if microversion else {}
            response = proxy.get(path, params=query, **extra)
            inventory.calls += 1
            os_exceptions.raise_from_response(response)
            page = response.json().get(key) or []
            yield from page
            if len(page) < self._list_page:
                return
            marker = str(page[-1]["id"])

    @_heals_authentication
    def observe_region(self) -> RegionInventory:
        inventory = RegionInventory()
        lb_api = self._conn.load_balancer
        with translate_errors("observe the region's kaas resources"), ThreadPoolExecutor(1) as compute_side:
            # Nova's listing is the longest: it runs beside Neutron's and Octavia's (the cloud answers each
            # request while the driver decodes the last)
            servers = compute_side.submit(self._observe_servers)
            self._observe_networks(inventory)
            self._observe_security_groups(inventory)
            inventory.server_groups = {g.name for g in self._kaas_server_groups(inventory)}
            pools = {str(p["id"]): p for p in self._pages(lb_api, "/lbaas/pools", "pools", inventory)}
            for lb in self._pages(lb_api, "/lbaas/loadbalancers", "loadbalancers", inventory):
                pool = next(
                    (pools[str(p["id"])] for p in lb.get("pools") or [] if str(p["id"]) in pools), None
                )
                observation = LoadBalancerObservation(
                    provisioning_status=str(lb.get("provisioning_status")),
                    listener=bool(lb.get("listeners")),
                    pool=pool is not None,
                    health_monitor=bool(pool and pool.get("healthmonitor_id")),
                    members=len(pool.get("members") or []) if pool else 0,
                )
                for cluster_id in _cluster_ids(lb.get("tags")):
                    inventory.clusters.setdefault(cluster_id, ClusterResources()).load_balancer = observation
            response = self._conn.identity.get(f"/users/{self._user_id()}/application_credentials")
            inventory.calls += 1
            os_exceptions.raise_from_response(response)
            inventory.credential_ids = {
                str(c["id"]) for c in response.json().get("application_credentials") or []
            }
            by_cluster, calls = servers.result()
        inventory.calls += calls
        for cluster_id, found in by_cluster.items():
            inventory.clusters.setdefault(cluster_id, ClusterResources()).servers = found
        return inventory

    def _observe_servers(self) -> tuple[dict[str, list[ServerInfo]], int]:
        """Every server but DELETED ones, by cluster tag, and how many requests that took."""
        counter = RegionInventory()
        by_cluster: dict[str, list[ServerInfo]] = {}
        listing = self._pages(
            self._conn.compute, "/servers/detail", "servers", counter, microversion=COMPUTE_MICROVERSION
        )
        for server in listing:
            if server.get("status") == "DELETED":
                continue
            for cluster_id in _cluster_ids(server.get("tags")):
                by_cluster.setdefault(cluster_id, []).append(
                    _server_info_of(
                        id=server["id"],
                        name=server.get("name"),
                        status=server.get("status"),
                        addresses=server.get("addresses"),
                        metadata=server.get("metadata"),
                        fault=server.get("fault"),
                    )
                )
        return by_cluster, counter.calls

    def _observe_security_groups(self, inventory: RegionInventory) -> None:
        """The groups by tag, their ingress rules from the rules' own listing: a group's embedded rules
        carry every field of every rule, egress included, three times the bytes at 20,000 groups."""
        net_api = self._conn.network
        rules: dict[str, set[SecurityGroupRule]] = {}
        for rule in self._pages(
            net_api,
            "/security-group-rules",
            "security_group_rules",
            inventory,
            # no ``direction=ingress`` filter: the real Neutron answers it with ``limit`` by an empty page
            params={
                "fields": [
                    "id",
                    "security_group_id",
                    "direction",
                    "protocol",
                    "port_range_min",
                    "port_range_max",
                    "remote_ip_prefix",
                ],
            },
        ):
            if rule.get("direction") == "ingress":
                rules.setdefault(str(rule.get("security_group_id")), set()).add(_rule_of(rule))
        groups = self._pages(
            net_api,
            "/security-groups",
            "security_groups",
            inventory,
            params={"fields": ["id", "name", "tags"]},
        )
        for group in groups:
            for cluster_id in _cluster_ids(group.get("tags")):
                resources = inventory.clusters.setdefault(cluster_id, ClusterResources())
                resources.security_groups[str(group.get("name"))] = frozenset(rules.get(str(group["id"]), ()))

    def _observe_networks(self, inventory: RegionInventory) -> None:
        """A cluster's network is ready when a tagged network has a tagged subnet, and a tagged router has
        an external gateway and a port on that network: what ``ensure_network`` would leave alone."""
        net_api = self._conn.network

        def by_cluster(path: str, key: str, fields: list[str]) -> dict[str, list[dict[str, Any]]]:
            grouped: dict[str, list[dict[str, Any]]] = {}
            for item in self._pages(net_api, path, key, inventory, params={"fields": fields}):
                for cluster_id in _cluster_ids(item.get("tags")):
                    grouped.setdefault(cluster_id, []).append(item)
            return grouped

        networks = by_cluster("/networks", "networks", ["id", "tags"])
        subnets = by_cluster("/subnets", "subnets", ["id", "tags", "network_id"])
        routers = by_cluster("/routers", "routers", ["id", "tags", "external_gateway_info"])
        interfaces = {
            (str(p.get("device_id")), str(p.get("network_id")))
            for p in self._pages(
                net_api,
                "/ports",
                "ports",
                inventory,
                params={
                    "device_owner": list(ROUTER_INTERFACE_OWNERS),
                    "fields": ["id", "device_id", "network_id"],
                },
            )
        }
        for cluster_id, own_networks in networks.items():
            network_ids = {str(n["id"]) for n in own_networks}
            subnet_networks = {str(s.get("network_id")) for s in subnets.get(cluster_id, [])}
            ready = any(
                (r.get("external_gateway_info") or {}).get("network_id")
                and (str(r["id"]), network_id) in interfaces
                for r in routers.get(cluster_id, [])
                for network_id in network_ids & subnet_networks
            )
            inventory.clusters.setdefault(cluster_id, ClusterResources()).network_ready = bool(ready)

    def _kaas_server_groups(self, inventory: RegionInventory | None = None) -> list[NamedResource]:
        """Every server group named ``kaas-...``. Nova filters server groups neither by name nor by tag, so
        this reads them all, as raw JSON pages (``limit``/``offset``, as Nova pages them): openstacksdk
        builds every listed ``Resource`` at a cost of milliseconds, which with 1,000 clusters made each
        reconcile pass take seconds."""
        found: list[NamedResource] = []
        offset = 0
        while True:
            response = self._conn.compute.get(
                "/os-server-groups", params={"limit": self._server_group_page, "offset": offset}
            )
            if inventory is not None:
                inventory.calls += 1
            os_exceptions.raise_from_response(response)
            page = response.json().get("server_groups") or []
            found += [
                NamedResource(id=str(g["id"]), name=str(g["name"]), members=len(g.get("members") or []))
                for g in page
                if str(g.get("name") or "").startswith("kaas-")
            ]
            if len(page) < self._server_group_page:
                return found
            offset += len(page)

    @_heals_authentication
    def capacity(self) -> CloudCapacity:
        with translate_errors("read the compute limits"):
            absolute = self._conn.compute.get_limits().absolute
        return CloudCapacity(
            cores_limit=_limit(absolute.total_cores),
            cores_used=int(absolute.total_cores_used or 0),
            ram_mb_limit=_limit(absolute.total_ram),
            ram_mb_used=int(absolute.total_ram_used or 0),
            instances_limit=_limit(absolute.instances),
            instances_used=int(absolute.instances_used or 0),
        )


def _limit(value: Any) -> int | None:
    """Nova says -1 (or nothing) for unlimited."""
    if value is None or int(value) < 0:
        return None
    return int(value)


def _cluster_ids(tags: Any) -> list[str]:
    return [t.removeprefix(CLUSTER_TAG_PREFIX) for t in tags or [] if str(t).startswith(CLUSTER_TAG_PREFIX)]


def _rule_of(rule: dict[str, Any]) -> SecurityGroupRule:
    return (
        rule.get("protocol"),
        rule.get("port_range_min"),
        rule.get("port_range_max"),
        rule.get("remote_ip_prefix"),
    )


def _server_info_of(
    *, id: Any, name: Any, status: Any, addresses: Any, metadata: Any, fault: Any
) -> ServerInfo:
    """A server as the reconciler sees it, from openstacksdk's ``Server`` or from Nova's JSON alike."""
    address = None
    for entries in (addresses or {}).values():
        for entry in entries:
            if entry.get("version", 4) == 4 and entry.get("OS-EXT-IPS:type", "fixed") == "fixed":
                address = entry.get("addr")
                break
        if address:
            break
    return ServerInfo(
        id=str(id),
        name=str(name),
        status=str(status or "BUILD"),
        address=address,
        metadata=dict(metadata or {}),
        fault=fault.get("message") if isinstance(fault, dict) else None,
    )


@contextmanager
def _deferred(what: str) -> Iterator[None]:
    """A deletion the cloud refuses for now (in use, immutable, gone meanwhile): the next pass retries."""
    try:
        yield
    except (os_exceptions.ConflictException, os_exceptions.NotFoundException) as exc:
        log.info("deletion deferred", extra={"resource": what, "status": exc.status_code})
