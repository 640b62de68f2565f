"""The simulated cloud's in-memory state, its clock-driven transitions and the injection API.

``SimCloud`` owns every resource of every service, guarded by ONE re-entrant lock (``sim.lock``). The HTTP
handlers in ``simcloud.identity``/``compute``/``network``/``image``/``loadbalancer`` read and change it under
that lock; tests and ``kaas up`` use the public methods (boot delays, injected failures, quotas, deleting a
server behind kaas's back, listing everything for leak checks, server listeners).

Transitions (server BUILD → ACTIVE/ERROR, load balancer PENDING_* → ACTIVE or gone) sit in a heap keyed by
due time: every request first pops what is due (lazy, O(log n) per transition), and a small daemon ticker
does the same so listeners fire even when nobody polls. Listeners are called from the ticker thread,
outside the lock, in the order the transitions happened.

With a ``state_file``, the cloud outlives its process: the ticker writes a snapshot (``simcloud.persistence``)
at most once a second after something changed (``mark_changed``: every mutating request, every transition,
every injected change), ``stop()`` writes a last one, and a new ``SimCloud`` on the same file starts from it.
With ``durable`` too, every mutating request is on disk before it is answered, as a real cloud commits to
its database before it answers: a cloud killed with SIGKILL forgets no change it confirmed (the chaos
test kills it). A transition (BUILD → ACTIVE) lost that way is applied again after the restart.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import ipaddress
import itertools
import logging
import secrets
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simcloud.persistence import load_snapshot, save_snapshot

log = logging.getLogger(__name__)

Record = dict[str, Any]

NEUTRON_KINDS = ("networks", "subnets", "routers", "ports", "security_groups", "security_group_rules")
OCTAVIA_KINDS = ("loadbalancers", "listeners", "pools", "members", "healthmonitors")
KINDS = (
    *NEUTRON_KINDS,
    "servers",
    "server_groups",
    "images",
    "flavors",
    *OCTAVIA_KINDS,
    "application_credentials",
)

DEFAULT_HOSTS = ("sim-compute1", "sim-compute2", "sim-compute3")
IDLE_TICK_SECONDS = 1.0
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return str(uuid.uuid4())


def public_view(record: Record) -> Record:
    """A record without its private (underscore) bookkeeping fields."""
    return {key: value for key, value in record.items() if not key.startswith("_")}


@dataclass(frozen=True)
class ServerRecord:
    """What a server listener receives: a snapshot, safe to keep."""

    id: str
    name: str
    project_id: str
    status: str
    tags: tuple[str, ...]
    metadata: dict[str, str]
    user_data: str | None  # decoded from base64 (UTF-8, undecodable bytes replaced)
    host: str | None
    addresses: tuple[str, ...]
    fault: str | None = None


ServerListener = Callable[[ServerRecord], None]


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to."""

    token: str
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: tuple[str, ...]
    expires_at: str

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass
class Quota:
    """Nova's per-project absolute limits (``-1`` means unlimited)."""

    instances: int = 100_000
    cores: int = 400_000
    ram: int = 800_000_000
    server_groups: int = 100_000
    server_group_members: int = 10


@dataclass
class _User:
    id: str
    name: str
    password: str
    project_name: str
    roles: tuple[str, ...]


@dataclass
class _Injections:
    quota_failures: int = 0
    error_servers: int = 0
    error_message: str = "Simulated failure"
    refused_tokens: int = 0


@dataclass(order=True)
class _Event:
    due: float
    seq: int
    kind: str = field(compare=False)
    target: str = field(compare=False)


# as in the real OpenStack of ../shared/openstack: one router gateway address each, so about 240 clusters;
# scale benchmarks pass a larger one
DEFAULT_EXTERNAL_CIDR = "172.24.4.0/24"


def _renamed(value: Any, ids: dict[str, str], texts: tuple[tuple[str, str], ...]) -> Any:
    """A deep copy of ``value`` with every string that is a key of ``ids`` replaced by its value, and the
    ``texts`` replaced (old, new) inside every other string (``SimCloud.clone_cluster``)."""
    if isinstance(value, str):
        if value in ids:
            return ids[value]
        for old, new in texts:
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {k: _renamed(v, ids, texts) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_renamed(v, ids, texts) for v in value)
    return value


def external_pool(cidr: str) -> tuple[str, str]:
    """The floating range of the external subnet: from .10 to five before the broadcast address."""
    network = ipaddress.ip_network(cidr)
    if network.num_addresses < 32:
        raise ValueError(f"external network {cidr} is too small: give a /27 or larger")
    return str(network.network_address + 10), str(network.broadcast_address - 5)


class SimCloud:
    """The whole simulated cloud. Thread-safe: every access to ``tables`` holds ``lock``."""

    def __init__(
        self,
        *,
        boot_delay: float = 0.0,
        lb_delay: float = 0.0,
        hosts: Iterable[str] = DEFAULT_HOSTS,
        tick_interval: float = 0.05,
        external_cidr: str = DEFAULT_EXTERNAL_CIDR,
        state_file: Path | None = None,
        save_interval: float = 1.0,
        durable: bool = False,
    ) -> None:
        self.lock = threading.RLock()
        self.external_cidr = str(ipaddress.ip_network(external_cidr))
        self.boot_delay = boot_delay
        self.lb_delay = lb_delay
        self.hosts = tuple(hosts)
        self.tables: dict[str, dict[str, Record]] = {kind: {} for kind in KINDS}
        self._tag_index: dict[str, defaultdict[str, set[str]]] = {kind: defaultdict(set) for kind in KINDS}
        # each kind's ids in order, made again only after an insert or a removal: a paged listing of 30,000
        # records then costs its page, not a sort of the table per page (``sorted_ids``)
        self._sorted_ids: dict[str, list[str] | None] = dict.fromkeys(KINDS)
        self._server_order: tuple[list[str], dict[str, int]] | None = None
        self.projects: dict[str, str] = {}  # name -> id
        self.quotas: dict[str, Quota] = {}  # project id -> quota
        self._users: dict[str, _User] = {}
        self._tokens: dict[str, Identity] = {}
        self.login_attempts = 0  # password authentications asked for, accepted or not
        self._injections = _Injections()
        self._events: list[_Event] = []
        self._seq = itertools.count()
        self._mac_counter = itertools.count(1)
        self.placement_counter = itertools.count()
        self.usage: defaultdict[str, dict[str, int]] = defaultdict(
            lambda: {"instances": 0, "cores": 0, "ram": 0}
        )
        self._notifications: deque[tuple[str, ServerRecord]] = deque()
        self._active_listeners: list[ServerListener] = []
        self._deleted_listeners: list[ServerListener] = []
        self._deliver_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._tick_interval = tick_interval
        self._ticker: threading.Thread | None = None
        self._state_file = state_file
        self._save_interval = save_interval
        self.durable = durable and state_file is not None
        self._revision = 0
        self._saved_revision = 0
        self._saved_at = 0.0
        if state_file is not None and state_file.exists():
            self.restore_locked(load_snapshot(state_file))
        else:
            self._seed()
            self._revision = 1  # a new cloud is saved at the first chance

    # ------------------------------------------------------------------------------------------ persistence
    def mark_changed(self) -> None:
        """Something a snapshot holds changed: the ticker saves it (a no-op without a ``state_file``)."""
        self._revision += 1

    def snapshot_locked(self) -> dict[str, Any]:
        """Everything a restart must keep, as JSON-able data (sets stay sets: the codec stores them)."""
        now = time.monotonic()
        tables = {kind: list(table.values()) for kind, table in self.tables.items()}
        ready_in = {lb["id"]: max(lb["_ready_at"] - now, 0.0) for lb in tables["loadbalancers"]}
        return {
            "external_cidr": self.external_cidr,
            "hosts": list(self.hosts),
            "tables": {
                kind: [
                    {**record, "_ready_at": ready_in[record["id"]]} if kind == "loadbalancers" else record
                    for record in records
                ]
                for kind, records in tables.items()
            },
            "projects": self.projects,
            "quotas": {project: asdict(quota) for project, quota in self.quotas.items()},
            "users": [asdict(user) for user in self._users.values()],
            "tokens": [asdict(identity) for identity in self._tokens.values()],
            "usage": dict(self.usage),
            "events": [
                {"in": max(event.due - now, 0.0), "kind": event.kind, "target": event.target}
                for event in sorted(self._events)
            ],
            "counters": {
                "mac": _peek(self, "_mac_counter"),
                "placement": _peek(self, "placement_counter"),
            },
        }

    def restore_locked(self, state: dict[str, Any]) -> None:
        """Become the cloud ``state`` (from ``snapshot_locked``) describes; transitions resume their wait."""
        now = time.monotonic()
        self.external_cidr = state["external_cidr"]
        self.hosts = tuple(state["hosts"])
        for kind, records in state["tables"].items():
            for record in records:
                if kind == "loadbalancers":
                    record["_ready_at"] = now + record["_ready_at"]
                self.insert(kind, record)
        self.projects = dict(state["projects"])
        self.quotas = {project: Quota(**values) for project, values in state["quotas"].items()}
        self._users = {
            user["name"]: _User(**{**user, "roles": tuple(user["roles"])}) for user in state["users"]
        }
        self._tokens = {
            token["token"]: Identity(**{**token, "roles": tuple(token["roles"])}) for token in state["tokens"]
        }
        for project, values in state["usage"].items():
            self.usage[project] = dict(values)
        for event in state["events"]:
            heapq.heappush(
                self._events, _Event(now + event["in"], next(self._seq), event["kind"], event["target"])
            )
        self._mac_counter = itertools.count(state["counters"]["mac"])
        self.placement_counter = itertools.count(state["counters"]["placement"])

    def save(self) -> None:
        """Write the snapshot now if there is a ``state_file`` and something changed since the last one."""
        if self._state_file is None:
            return
        with self.lock:
            revision = self._revision
            if revision == self._saved_revision:
                return
            state = self.snapshot_locked()
            save_snapshot(self._state_file, state)
        self._saved_revision = revision
        self._saved_at = time.monotonic()

    def _save_if_due(self) -> None:
        changed = self._revision != self._saved_revision
        if changed and time.monotonic() - self._saved_at >= self._save_interval:
            self.save()

    # ------------------------------------------------------------------------------------------ seeding
    def _seed(self) -> None:
        for project in ("admin", "demo", "service"):
            self.projects[project] = uuid.uuid4().hex
            self.quotas[self.projects[project]] = Quota()
        self._users["admin"] = _User(
            uuid.uuid4().hex, "admin", "secret", "admin", ("admin", "member", "reader")
        )
        self._users["demo"] = _User(
            uuid.uuid4().hex, "demo", "secret", "demo", ("member", "reader", "load-balancer_member")
        )
        admin_project = self.projects["admin"]
        for flavor_id, name, vcpus, ram, disk in (
            ("1", "m1.tiny", 1, 512, 1),
            ("2", "m1.small", 1, 2048, 20),
            ("3", "m1.medium", 2, 4096, 40),
            ("4", "m1.large", 4, 8192, 80),
        ):
            self.insert("flavors", {"id": flavor_id, "name": name, "vcpus": vcpus, "ram": ram, "disk": disk})
        for image_name in ("ubuntu-22.04", "fake-image"):
            self.insert(
                "images", {"id": new_id(), "name": image_name, "owner": admin_project, "created": now_iso()}
            )
        public = self.create_network_locked(project_id=admin_project, name="public", external=True)
        self.create_subnet_locked(
            project_id=admin_project,
            network_id=public["id"],
            name="public-subnet",
            cidr=self.external_cidr,
            pool=external_pool(self.external_cidr),
            enable_dhcp=False,
        )
        for project_id in self.projects.values():
            self.create_security_group_locked(
                project_id=project_id, name="default", description="Default security group"
            )
        self.mark_seeded()

    # ------------------------------------------------------------------------------------------ identity
    def authenticate(self, *, username: str, password: str, project_name: str | None) -> Identity | None:
        """Password auth, project scoped (the user's own project when none is named)."""
        with self.lock:
            self.login_attempts += 1
            user = self._users.get(username)
            if user is None or user.password != password:
                return None
            project = project_name or user.project_name
            if project != user.project_name:
                return None
            token = "sim" + uuid.uuid4().hex + uuid.uuid4().hex
            expires = datetime.fromtimestamp(time.time() + 86400, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
            identity = Identity(
                token=token,
                user_id=user.id,
                user_name=user.name,
                project_id=self.projects[project],
                project_name=project,
                roles=user.roles,
                expires_at=expires,
            )
            self._tokens[token] = identity
            return identity

    def authenticate_application_credential(
        self, *, credential_id: str | None, name: str | None, user_id: str | None, secret: str
    ) -> Identity | None:
        """Keystone's ``application_credential`` method: by id, or by name and user; the token is scoped to
        the credential's project with the credential's roles."""
        with self.lock:
            self.login_attempts += 1
            found = None
            for record in self.tables["application_credentials"].values():
                if (credential_id and record["id"] == credential_id) or (
                    name and record["name"] == name and record["_user_id"] == user_id
                ):
                    found = record
                    break
            if found is None or not secrets.compare_digest(found["_secret"], secret):
                return None
            user = next((u for u in self._users.values() if u.id == found["_user_id"]), None)
            if user is None:
                return None
            token = "sim" + uuid.uuid4().hex + uuid.uuid4().hex
            expires = datetime.fromtimestamp(time.time() + 86400, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
            project_name = next(n for n, pid in self.projects.items() if pid == found["project_id"])
            identity = Identity(
                token=token,
                user_id=user.id,
                user_name=user.name,
                project_id=found["project_id"],
                project_name=project_name,
                roles=tuple(role["name"] for role in found["roles"]),
                expires_at=expires,
            )
            self._tokens[token] = identity
            return identity

    def identify(self, token: str | None) -> Identity | None:
        if not token:
            return None
        with self.lock:
            return self._tokens.get(token)

    def revoke_tokens(self) -> int:
        """Forget every issued token, as an identity service restarted with new keys does; returns how many.
        Clients must authenticate again (keystoneauth does so on the first 401)."""
        with self.lock:
            count = len(self._tokens)
            self._tokens.clear()
            self.mark_changed()
            return count

    def refuse_next_tokens(self, count: int) -> None:
        """The next ``count`` authenticated requests to a service (not identity, not ``/_sim``) answer 401
        whatever their token: a service whose token validation lags behind a restarted identity service.
        keystoneauth re-authenticates once on a 401, so ``count`` of 2 or more reaches its caller."""
        with self.lock:
            self._injections.refused_tokens = max(count, 0)

    def take_token_refusal(self) -> bool:
        with self.lock:
            if self._injections.refused_tokens > 0:
                self._injections.refused_tokens -= 1
                return True
            return False

    def set_password(self, username: str, password: str) -> None:
        """Change a user's password and revoke the user's tokens, as Keystone does: the old credentials are
        refused from now on. Raises KeyError for an unknown user."""
        with self.lock:
            user = self._users[username]
            user.password = password
            for token, identity in list(self._tokens.items()):
                if identity.user_id == user.id:
                    del self._tokens[token]
            self.mark_changed()

    def project_id(self, name: str) -> str:
        with self.lock:
            return self.projects[name]

    # ------------------------------------------------------------------------------------------ tables
    def insert(self, kind: str, record: Record) -> Record:
        record.setdefault("tags", [])
        if record["id"] not in self.tables[kind]:
            self._sorted_ids[kind] = None
        self.tables[kind][record["id"]] = record
        for tag in record["tags"]:
            self._tag_index[kind][tag].add(record["id"])
        return record

    def remove(self, kind: str, record_id: str) -> Record | None:
        record = self.tables[kind].pop(record_id, None)
        if record is not None:
            self._sorted_ids[kind] = None
            for tag in record["tags"]:
                self._discard_tag(kind, tag, record_id)
        return record

    def _discard_tag(self, kind: str, tag: str, record_id: str) -> None:
        ids = self._tag_index[kind].get(tag)
        if ids is not None:
            ids.discard(record_id)
            if not ids:
                del self._tag_index[kind][tag]

    def set_tags(self, kind: str, record: Record, tags: Iterable[str]) -> None:
        for tag in record["tags"]:
            self._discard_tag(kind, tag, record["id"])
        record["tags"] = list(dict.fromkeys(tags))
        for tag in record["tags"]:
            self._tag_index[kind][tag].add(record["id"])

    def add_tag(self, kind: str, record: Record, tag: str) -> None:
        if tag not in record["tags"]:
            record["tags"].append(tag)
            self._tag_index[kind][tag].add(record["id"])

    def remove_tag(self, kind: str, record: Record, tag: str) -> None:
        if tag in record["tags"]:
            record["tags"].remove(tag)
            self._discard_tag(kind, tag, record["id"])

    def sorted_ids(self, kind: str) -> list[str]:
        """Every id of ``kind`` in ascending order (cached until the table changes; the caller holds
        ``lock``)."""
        ids = self._sorted_ids[kind]
        if ids is None:
            ids = self._sorted_ids[kind] = sorted(self.tables[kind])
        return ids

    def server_order(self) -> tuple[list[str], dict[str, int]]:
        """The servers' ids as Nova lists them (newest first) and each one's position (cached like
        ``sorted_ids``; the caller holds ``lock``)."""
        if self._server_order is None or self._sorted_ids["servers"] is None:
            servers = self.tables["servers"].values()
            ids = [s["id"] for s in sorted(servers, key=lambda s: (s["created"], s["_seq"]), reverse=True)]
            self._server_order = (ids, {server_id: i for i, server_id in enumerate(ids)})
            self.sorted_ids("servers")  # marks the order current until the table changes again
        return self._server_order

    def candidates(
        self, kind: str, *, all_tags: list[str] | None = None, any_tags: list[str] | None = None
    ) -> list[Record]:
        """Records of ``kind`` having every tag of ``all_tags`` and one of ``any_tags``, via the tag index
        (so a tag-filtered list costs what it returns, not the size of the table)."""
        table = self.tables[kind]
        index = self._tag_index[kind]
        ids: set[str] | None = None
        if all_tags:
            sets = sorted((index.get(tag, set()) for tag in all_tags), key=len)
            ids = set(sets[0])
            for other in sets[1:]:
                ids &= other
        if any_tags:
            union: set[str] = set()
            for tag in any_tags:
                union |= index.get(tag, set())
            ids = union if ids is None else ids & union
        if ids is None:
            return list(table.values())
        return [table[i] for i in ids if i in table]

    # ------------------------------------------------------------------------------------------ neutron core
    def create_network_locked(
        self,
        *,
        project_id: str,
        name: str,
        external: bool = False,
        shared: bool = False,
        tags: Iterable[str] = (),
        description: str = "",
        admin_state_up: bool = True,
        mtu: int = 1450,
    ) -> Record:
        stamp = now_iso()
        return self.insert(
            "networks",
            {
                "id": new_id(),
                "name": name,
                "tenant_id": project_id,
                "project_id": project_id,
                "admin_state_up": admin_state_up,
                "mtu": 1500 if external else mtu,
                "status": "ACTIVE",
                "subnets": [],
                "shared": shared,
                "availability_zone_hints": [],
                "availability_zones": ["nova"],
                "ipv4_address_scope": None,
                "ipv6_address_scope": None,
                "router:external": external,
                "description": description,
                "port_security_enabled": True,
                "is_default": False,
                "tags": list(tags),
                "created_at": stamp,
                "updated_at": stamp,
                "revision_number": 1,
                "provider:network_type": "flat" if external else "vxlan",
                "provider:physical_network": "public" if external else None,
                "provider:segmentation_id": None if external else 1000 + len(self.tables["networks"]),
            },
        )

    def create_subnet_locked(
        self,
        *,
        project_id: str,
        network_id: str,
        name: str,
        cidr: str,
        pool: tuple[str, str] | None = None,
        gateway_ip: str | None = None,
        no_gateway: bool = False,
        enable_dhcp: bool = True,
        dns_nameservers: Iterable[str] = (),
        tags: Iterable[str] = (),
        description: str = "",
        ip_version: int = 4,
    ) -> Record:
        net = ipaddress.ip_network(cidr, strict=False)
        first, last = (
            int(net.network_address) + 1,
            int(net.broadcast_address) - (1 if net.version == 4 else 0),
        )
        gateway = None if no_gateway else (gateway_ip or str(ipaddress.ip_address(first)))
        if pool is None:
            start = first + 1 if gateway == str(ipaddress.ip_address(first)) else first
            pool = (str(ipaddress.ip_address(start)), str(ipaddress.ip_address(last)))
        network = self.tables["networks"][network_id]
        stamp = now_iso()
        subnet = self.insert(
            "subnets",
            {
                "id": new_id(),
                "name": name,
                "tenant_id": project_id,
                "project_id": project_id,
                "network_id": network_id,
                "ip_version": ip_version,
                "subnetpool_id": None,
                "enable_dhcp": enable_dhcp,
                "ipv6_ra_mode": None,
                "ipv6_address_mode": None,
                "gateway_ip": gateway,
                "cidr": str(net),
                "allocation_pools": [{"start": pool[0], "end": pool[1]}],
                "host_routes": [],
                "dns_nameservers": list(dns_nameservers),
                "description": description,
                "router:external": network["router:external"],
                "service_types": [],
                "tags": list(tags),
                "created_at": stamp,
                "updated_at": stamp,
                "revision_number": 0,
                "_next": int(ipaddress.ip_address(pool[0])),
                "_end": int(ipaddress.ip_address(pool[1])),
                "_free": [],
                "_used": set(),
            },
        )
        network["subnets"].append(subnet["id"])
        return subnet

    def allocate_ip(self, subnet: Record, requested: str | None = None) -> str | None:
        used: set[int] = subnet["_used"]
        if requested is not None:
            value = int(ipaddress.ip_address(requested))
            if value in used:
                return None
            used.add(value)
            return requested
        while subnet["_free"]:
            value = subnet["_free"].pop()
            if value not in used:
                used.add(value)
                return str(ipaddress.ip_address(value))
        while subnet["_next"] <= subnet["_end"]:
            value = subnet["_next"]
            subnet["_next"] += 1
            if value not in used:
                used.add(value)
                return str(ipaddress.ip_address(value))
        return None

    def release_ip(self, subnet_id: str, address: str) -> None:
        subnet = self.tables["subnets"].get(subnet_id)
        if subnet is None:
            return
        value = int(ipaddress.ip_address(address))
        if value in subnet["_used"]:
            subnet["_used"].discard(value)
            subnet["_free"].append(value)

    def new_mac(self) -> str:
        n = next(self._mac_counter)
        return "fa:16:3e:" + ":".join(f"{(n >> shift) & 0xFF:02x}" for shift in (16, 8, 0))

    def create_port_locked(
        self,
        *,
        project_id: str,
        network_id: str,
        fixed_ips: list[dict[str, str]] | None = None,
        name: str = "",
        device_owner: str = "",
        device_id: str = "",
        security_groups: list[str] | None = None,
        tags: Iterable[str] = (),
        description: str = "",
        admin_state_up: bool = True,
    ) -> Record:
        """A port with one address per requested subnet (the network's first subnet when none is asked).
        Raises ``LookupError`` with Neutron's error type when no address is free."""
        network = self.tables["networks"][network_id]
        requests = (
            fixed_ips
            if fixed_ips is not None
            else ([{"subnet_id": network["subnets"][0]}] if network["subnets"] else [])
        )
        allocated: list[dict[str, str]] = []
        for request in requests:
            subnet_id = request.get("subnet_id") or (network["subnets"][0] if network["subnets"] else None)
            subnet = self.tables["subnets"].get(subnet_id or "")
            if subnet is None or subnet["network_id"] != network_id:
                self._release_all(allocated)
                raise LookupError(
                    "InvalidInput", f"Invalid input for operation: subnet {subnet_id} not found."
                )
            address = self.allocate_ip(subnet, request.get("ip_address"))
            if address is None:
                self._release_all(allocated)
                if request.get("ip_address"):
                    raise LookupError(
                        "IpAddressAlreadyAllocated",
                        f"IP address {request['ip_address']} already allocated in subnet {subnet['id']}",
                    )
                raise LookupError(
                    "IpAddressGenerationFailure", f"No more IP addresses available on network {network_id}."
                )
            allocated.append({"subnet_id": subnet["id"], "ip_address": address})
        if security_groups is None:
            security_groups = []
            if not device_owner.startswith("network:"):
                default = self.default_security_group(project_id)
                if default is not None:
                    security_groups = [default["id"]]
        stamp = now_iso()
        return self.insert(
            "ports",
            {
                "id": new_id(),
                "name": name,
                "network_id": network_id,
                "tenant_id": project_id,
                "project_id": project_id,
                "mac_address": self.new_mac(),
                "admin_state_up": admin_state_up,
                "status": "ACTIVE" if device_id else "DOWN",
                "device_id": device_id,
                "device_owner": device_owner,
                "fixed_ips": allocated,
                "allowed_address_pairs": [],
                "extra_dhcp_opts": [],
                "security_groups": list(security_groups),
                "description": description,
                "binding:vnic_type": "normal",
                "port_security_enabled": True,
                "dns_name": "",
                "dns_assignment": [],
                "tags": list(tags),
                "created_at": stamp,
                "updated_at": stamp,
                "revision_number": 1,
                "_auto": False,
            },
        )

    def _release_all(self, fixed_ips: list[dict[str, str]]) -> None:
        for fixed in fixed_ips:
            self.release_ip(fixed["subnet_id"], fixed["ip_address"])

    def delete_port_locked(self, port_id: str) -> None:
        port = self.remove("ports", port_id)
        if port is not None:
            self._release_all(port["fixed_ips"])

    def default_security_group(self, project_id: str) -> Record | None:
        for group in self.tables["security_groups"].values():
            if group["project_id"] == project_id and group["name"] == "default":
                return group
        return None

    def create_security_group_locked(
        self,
        *,
        project_id: str,
        name: str,
        description: str = "",
        tags: Iterable[str] = (),
        stateful: bool = True,
    ) -> Record:
        stamp = now_iso()
        group = self.insert(
            "security_groups",
            {
                "id": new_id(),
                "name": name,
                "stateful": stateful,
                "tenant_id": project_id,
                "project_id": project_id,
                "description": description,
                "shared": False,
                "tags": list(tags),
                "created_at": stamp,
                "updated_at": stamp,
                "revision_number": 1,
                "_rules": [],
            },
        )
        for ethertype in ("IPv4", "IPv6"):
            self.create_rule_locked(
                group=group, project_id=project_id, direction="egress", ethertype=ethertype
            )
            if name == "default":
                self.create_rule_locked(
                    group=group,
                    project_id=project_id,
                    direction="ingress",
                    ethertype=ethertype,
                    remote_group_id=group["id"],
                )
        return group

    def create_rule_locked(
        self,
        *,
        group: Record,
        project_id: str,
        direction: str,
        ethertype: str = "IPv4",
        protocol: str | None = None,
        port_range_min: int | None = None,
        port_range_max: int | None = None,
        remote_ip_prefix: str | None = None,
        remote_group_id: str | None = None,
        description: str | None = None,
    ) -> Record:
        stamp = now_iso()
        rule = self.insert(
            "security_group_rules",
            {
                "id": new_id(),
                "project_id": project_id,
                "tenant_id": project_id,
                "security_group_id": group["id"],
                "ethertype": ethertype,
                "direction": direction,
                "protocol": protocol,
                "port_range_min": port_range_min,
                "port_range_max": port_range_max,
                "remote_ip_prefix": remote_ip_prefix,
                "remote_address_group_id": None,
                "normalized_cidr": remote_ip_prefix,
                "remote_group_id": remote_group_id,
                "description": description,
                "tags": [],
                "created_at": stamp,
                "updated_at": stamp,
                "revision_number": 0,
                "belongs_to_default_sg": group["name"] == "default",
            },
        )
        group["_rules"].append(rule["id"])
        return rule

    def security_group_view(self, group: Record) -> Record:
        view = public_view(group)
        rules = self.tables["security_group_rules"]
        view["security_group_rules"] = [public_view(rules[r]) for r in group["_rules"] if r in rules]
        return view

    # ------------------------------------------------------------------------------------------ servers
    def server_record(self, server: Record) -> ServerRecord:
        addresses = tuple(
            fixed["ip_address"]
            for port_id in server["_ports"]
            if (port := self.tables["ports"].get(port_id)) is not None
            for fixed in port["fixed_ips"]
        )
        return ServerRecord(
            id=server["id"],
            name=server["name"],
            project_id=server["project_id"],
            status=server["status"],
            tags=tuple(server["tags"]),
            metadata=dict(server["metadata"]),
            user_data=server["_user_data_text"],
            host=server["_host"],
            addresses=addresses,
            fault=server["_fault"]["message"] if server["_fault"] else None,
        )

    def delete_server_locked(self, server_id: str) -> bool:
        server = self.remove("servers", server_id)
        if server is None:
            return False
        for port_id in server["_ports"]:
            port = self.tables["ports"].get(port_id)
            if port is not None and port["_auto"]:
                self.delete_port_locked(port_id)
            elif port is not None:
                port.update(device_id="", device_owner="", status="DOWN")
        self.add_usage(server["project_id"], -1, -server["_vcpus"], -server["_ram"])
        group = self.tables["server_groups"].get(server["_group"] or "")
        if group is not None and server_id in group["members"]:
            group["members"].remove(server_id)
        snapshot = self.server_record(server)
        self._notifications.append(("deleted", snapshot))
        self._wake.set()
        return True

    def add_usage(self, project_id: str, instances: int, cores: int, ram: int) -> None:
        usage = self.usage[project_id]
        usage["instances"] += instances
        usage["cores"] += cores
        usage["ram"] += ram

    def quota_for(self, project_id: str) -> Quota:
        return self.quotas.setdefault(project_id, Quota())

    @staticmethod
    def decode_user_data(encoded: str | None) -> str | None:
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded, validate=False).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            return encoded

    # ------------------------------------------------------------------------------------------ transitions
    def schedule(self, delay: float, kind: str, target: str) -> float:
        due = time.monotonic() + max(delay, 0.0)
        heapq.heappush(self._events, _Event(due, next(self._seq), kind, target))
        self._wake.set()
        return due

    def advance_locked(self) -> None:
        """Apply every transition that is due. Callers hold ``lock``."""
        now = time.monotonic()
        while self._events and self._events[0].due <= now:
            event = heapq.heappop(self._events)
            self._revision += 1
            if event.kind == "server":
                self._finish_boot(event.target)
            elif event.kind == "lb":
                self._finish_lb(event.target, now)

    def _finish_boot(self, server_id: str) -> None:
        server = self.tables["servers"].get(server_id)
        if server is None or server["status"] != "BUILD":
            return
        stamp = now_iso()
        server["updated"] = stamp
        server["OS-EXT-STS:task_state"] = None
        if server["_fault"] is not None:
            server["status"] = "ERROR"
            server["OS-EXT-STS:vm_state"] = "error"
            server["_fault"]["created"] = stamp
            return
        server["status"] = "ACTIVE"
        server["OS-EXT-STS:vm_state"] = "active"
        server["OS-EXT-STS:power_state"] = 1
        server["OS-SRV-USG:launched_at"] = stamp.replace("Z", ".000000")
        self._notifications.append(("active", self.server_record(server)))

    def _finish_lb(self, lb_id: str, now: float) -> None:
        lb = self.tables["loadbalancers"].get(lb_id)
        if lb is None or lb["_ready_at"] > now:
            return
        if lb["provisioning_status"] == "PENDING_DELETE":
            self.purge_load_balancer_locked(lb)
            return
        for kind in ("listeners", "pools", "members", "healthmonitors"):
            for child in self.lb_children(kind, lb_id):
                if child["provisioning_status"] == "PENDING_DELETE":
                    self.remove(kind, child["id"])
                    if kind == "members":
                        self._unlink_member(child)
                elif child["provisioning_status"].startswith("PENDING_"):
                    # no data plane, as in the real harness: operating_status stays OFFLINE
                    child["provisioning_status"] = "ACTIVE"
                    child["updated_at"] = now_iso()
        lb["provisioning_status"] = "ACTIVE"
        lb["updated_at"] = now_iso()

    def lb_children(self, kind: str, lb_id: str) -> list[Record]:
        return [
            self.tables[kind][i]
            for i in list(self.tables["loadbalancers"][lb_id]["_children"][kind])
            if i in self.tables[kind]
        ]

    def _unlink_member(self, member: Record) -> None:
        pool = self.tables["pools"].get(member["_pool_id"])
        if pool is not None:
            pool["members"] = [m for m in pool["members"] if m["id"] != member["id"]]

    def purge_load_balancer_locked(self, lb: Record) -> None:
        for kind in ("members", "healthmonitors", "pools", "listeners"):
            for child_id in lb["_children"][kind]:
                self.remove(kind, child_id)
        self.remove("loadbalancers", lb["id"])
        if lb["vip_port_id"]:
            self.delete_port_locked(lb["vip_port_id"])

    def advance(self) -> None:
        """Apply due transitions and call the listeners of what happened (outside the lock)."""
        with self.lock:
            self.advance_locked()
        self._deliver()

    def _deliver(self) -> None:
        with self._deliver_lock:
            while True:
                with self.lock:
                    if not self._notifications:
                        return
                    what, record = self._notifications.popleft()
                    listeners = list(self._active_listeners if what == "active" else self._deleted_listeners)
                for listener in listeners:
                    try:
                        listener(record)
                    except Exception:
                        log.exception("simcloud server listener failed for %s", record.id)

    def wake(self) -> None:
        """Tell the ticker when listeners have something to hear."""
        if self._notifications:
            self._wake.set()

    def start(self) -> None:
        """Start the daemon ticker (idempotent)."""
        if self._ticker is not None and self._ticker.is_alive():
            return
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick_loop, name="simcloud-ticker", daemon=True)
        self._ticker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the ticker and write the last snapshot (with a ``state_file``)."""
        self._stop.set()
        self._wake.set()
        if self._ticker is not None:
            self._ticker.join(timeout=timeout)
            self._ticker = None
        self.save()

    def _tick_loop(self) -> None:
        """Apply transitions as they fall due, deliver to listeners, save snapshots.

        Sleeps until the next transition is due, a request wakes it (``wake``) or, with nothing scheduled, an
        idle second passes (for a pending snapshot): a cloud at rest does not spin.
        """
        while not self._stop.is_set():
            with self.lock:
                wait = self._tick_interval if self._notifications else IDLE_TICK_SECONDS
                if self._events:
                    wait = min(wait, max(self._events[0].due - time.monotonic(), 0.0))
            self._wake.wait(timeout=wait)
            self._wake.clear()
            try:
                self.advance()
                self._save_if_due()
            except Exception:
                log.exception("simcloud ticker failed")

    # ------------------------------------------------------------------------------------------ public API
    def add_server_active_listener(self, callback: ServerListener) -> None:
        """Call ``callback(record)`` (from the ticker thread, outside the lock) when a server goes ACTIVE."""
        with self.lock:
            self._active_listeners.append(callback)

    def add_server_deleted_listener(self, callback: ServerListener) -> None:
        """Call ``callback(record)`` when a server is deleted (through the API or ``delete_server``)."""
        with self.lock:
            self._deleted_listeners.append(callback)

    def set_boot_delay(self, seconds: float) -> None:
        with self.lock:
            self.boot_delay = max(seconds, 0.0)

    def set_lb_delay(self, seconds: float) -> None:
        with self.lock:
            self.lb_delay = max(seconds, 0.0)

    def fail_next_server_creates(self, count: int) -> None:
        """The next ``count`` server creates answer Nova's 403 "Quota exceeded for instances"."""
        with self.lock:
            self._injections.quota_failures = max(count, 0)

    def error_next_servers(self, count: int, message: str = "Simulated failure") -> None:
        """The next ``count`` servers created go to ERROR (instead of ACTIVE) with this fault message."""
        with self.lock:
            self._injections.error_servers = max(count, 0)
            self._injections.error_message = message

    def take_quota_failure(self) -> bool:
        if self._injections.quota_failures > 0:
            self._injections.quota_failures -= 1
            return True
        return False

    def take_error_injection(self) -> str | None:
        if self._injections.error_servers > 0:
            self._injections.error_servers -= 1
            return self._injections.error_message
        return None

    def set_quota(
        self,
        project_name: str,
        *,
        instances: int | None = None,
        cores: int | None = None,
        ram: int | None = None,
        server_groups: int | None = None,
        server_group_members: int | None = None,
    ) -> Quota:
        with self.lock:
            quota = self.quotas[self.projects[project_name]]
            for name, value in (
                ("instances", instances),
                ("cores", cores),
                ("ram", ram),
                ("server_groups", server_groups),
                ("server_group_members", server_group_members),
            ):
                if value is not None:
                    setattr(quota, name, value)
            self.mark_changed()
            return Quota(**vars(quota))

    def delete_server(self, server_id: str) -> bool:
        """Delete a server behind kaas's back (as an operator or a failing hypervisor would)."""
        with self.lock:
            found = self.delete_server_locked(server_id)
            self.mark_changed()
        self._deliver_if_idle()
        return found

    def _deliver_if_idle(self) -> None:
        if self._ticker is None:
            self._deliver()
        else:
            self._wake.set()

    def get_server(self, server_id: str) -> ServerRecord | None:
        with self.lock:
            self.advance_locked()
            server = self.tables["servers"].get(server_id)
            return None if server is None else self.server_record(server)

    def servers(self) -> list[ServerRecord]:
        with self.lock:
            self.advance_locked()
            return [self.server_record(s) for s in self.tables["servers"].values()]

    def get_user_data(self, server_id: str) -> str | None:
        """The decoded user-data of a server (None when it has none). Raises KeyError for unknown ids."""
        with self.lock:
            return self.tables["servers"][server_id]["_user_data_text"]  # type: ignore[no-any-return]

    def inventory(self, *, include_seeded: bool = False) -> dict[str, list[Record]]:
        """Every resource of every kind in every project (for leak checks). Seeded resources (flavors,
        images, the ``public`` network, default security groups) are left out unless asked for."""
        with self.lock:
            self.advance_locked()
            result: dict[str, list[Record]] = {}
            for kind in KINDS:
                if not include_seeded and kind in ("flavors", "images"):
                    continue
                records = []
                for record in self.tables[kind].values():
                    if not include_seeded and record.get("_seeded"):
                        continue
                    view = public_view(record)
                    if kind == "servers":
                        view["status"] = record["status"]
                        view["user_data"] = record["_user_data_text"]
                        view["host"] = record["_host"]
                    records.append(view)
                result[kind] = records
            return result

    def clone_cluster(self, source_cluster_id: str, cluster_ids: Iterable[str]) -> int:
        """Copy every resource of one kaas cluster (found by its tag, by its networks, security groups and
        load balancer, by its server groups' name) once per id of ``cluster_ids``, with new resource ids,
        the new cluster's tag, names and references: a benchmark's fleet of 10,000 clusters in seconds
        instead of hours. Application credentials are not copied (the copies' rows keep the source's id).
        Returns how many records were made."""
        old_tag, old_prefix = f"kaas-cluster={source_cluster_id}", f"kaas-{source_cluster_id[:8]}"
        made = 0
        with self.lock:
            source: list[tuple[str, Record]] = []
            for kind in KINDS:
                if kind in ("images", "flavors", "application_credentials"):
                    continue
                for record in self.tables[kind].values():
                    if old_tag in record.get("tags", ()) or str(record.get("name", "")).startswith(
                        old_prefix
                    ):
                        source.append((kind, record))
            ids = {record["id"] for _kind, record in source}
            for kind in ("ports", "security_group_rules"):
                for record in self.tables[kind].values():
                    owner = record.get("network_id") if kind == "ports" else record.get("security_group_id")
                    if (
                        record["id"] not in ids
                        and owner in ids
                        and not record.get("device_owner", "").endswith("dhcp")
                    ):
                        source.append((kind, record))
                        ids.add(record["id"])
            for cluster_id in cluster_ids:
                new_ids = {old: new_id() for old in ids}

                texts = ((source_cluster_id, cluster_id), (old_prefix, f"kaas-{cluster_id[:8]}"))
                for kind, record in source:
                    copy = _renamed(record, new_ids, texts)
                    if kind == "servers":
                        copy["_seq"] = next(self.placement_counter)
                    self.insert(kind, copy)
                    made += 1
            self.mark_changed()
        return made

    def recreate_external_network(self, name: str = "public") -> str:
        """Delete the external network ``name`` and create it again with a new id, the same subnet and the
        same floating range, as an operator rebuilding the cloud's public network does; returns the new id.

        Neutron refuses to delete a network that router gateways still use, so the operator first clears
        every router's gateway on it: routers keep their interfaces and lose their external gateway.
        """
        with self.lock:
            old = next(
                (n for n in self.tables["networks"].values() if n["name"] == name and n["router:external"]),
                None,
            )
            if old is None:
                raise KeyError(f"no external network {name!r}")
            subnets = [self.tables["subnets"][s] for s in old["subnets"] if s in self.tables["subnets"]]
            for router in self.tables["routers"].values():
                if (router["external_gateway_info"] or {}).get("network_id") == old["id"]:
                    if router["_gw_port"]:
                        self.delete_port_locked(router["_gw_port"])
                    router["_gw_port"] = None
                    router["external_gateway_info"] = None
            for port in [p for p in self.tables["ports"].values() if p["network_id"] == old["id"]]:
                self.delete_port_locked(port["id"])
            for subnet in subnets:
                self.remove("subnets", subnet["id"])
            self.remove("networks", old["id"])
            network = self.create_network_locked(
                project_id=old["project_id"], name=name, external=True, shared=old["shared"]
            )
            network["_seeded"] = old.get("_seeded", False)
            for subnet in subnets:
                pool = subnet["allocation_pools"][0]
                created = self.create_subnet_locked(
                    project_id=subnet["project_id"],
                    network_id=network["id"],
                    name=subnet["name"],
                    cidr=subnet["cidr"],
                    pool=(pool["start"], pool["end"]),
                    enable_dhcp=subnet["enable_dhcp"],
                )
                created["_seeded"] = subnet.get("_seeded", False)
            self.mark_changed()
            return str(network["id"])

    def mark_seeded(self) -> None:
        """Mark every existing record as part of the seed (so ``inventory`` leaves it out)."""
        with self.lock:
            for table in self.tables.values():
                for record in table.values():
                    record["_seeded"] = True


def _peek(sim: SimCloud, attribute: str) -> int:
    """The next value of an ``itertools.count`` attribute, leaving it to hand out that value next."""
    value: int = next(getattr(sim, attribute))
    setattr(sim, attribute, itertools.count(value))
    return value
