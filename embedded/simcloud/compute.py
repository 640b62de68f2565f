"""Nova (compute v2.1, microversions 2.1 to 2.100) under ``/compute``: flavors, servers, server tags, server
groups with a three-host scheduler, limits and quotas.

Called by ``simcloud.app``. Behaviour copied from Nova: creates answer 202 with a minimal body and the server
goes BUILD → ACTIVE after the boot delay; a strict anti-affinity group spreads its members over the hosts and
a member that fits nowhere goes to ERROR "No valid host was found"; quota overruns answer 403 with Nova's
message; admins see ``OS-EXT-SRV-ATTR:*`` and list every project with ``all_tenants``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import secrets
from typing import Any

from starlette.responses import Response

from simcloud.errors import ApiError, nova_error
from simcloud.http import NOVA_MAX_VERSION, NOVA_MIN_VERSION, Ctx, Router, empty, json_response
from simcloud.state import NO_VALID_HOST, Record, SimCloud, now_iso, public_view

POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
FALSE_WORDS = ("0", "false", "no", "off", "f", "n")


# ---------------------------------------------------------------------------------------------- discovery
def _version_doc(ctx: Ctx) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": "{}.{}".format(*NOVA_MAX_VERSION),
        "min_version": "{}.{}".format(*NOVA_MIN_VERSION),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{ctx.base_url}/compute/v2.1/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}
        ],
    }


def versions(ctx: Ctx) -> Response:
    return json_response({"versions": [_version_doc(ctx)]})


def version(ctx: Ctx) -> Response:
    return json_response({"version": _version_doc(ctx)})


def _links(ctx: Ctx, kind: str, item_id: str) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{ctx.base_url}/compute/v2.1/{kind}/{item_id}"},
        {"rel": "bookmark", "href": f"{ctx.base_url}/compute/{kind}/{item_id}"},
    ]


# ---------------------------------------------------------------------------------------------- flavors
def _flavor_view(ctx: Ctx, flavor: Record, *, detail: bool) -> dict[str, Any]:
    if not detail:
        return {"id": flavor["id"], "name": flavor["name"], "links": _links(ctx, "flavors", flavor["id"])}
    view: dict[str, Any] = {
        "id": flavor["id"],
        "name": flavor["name"],
        "ram": flavor["ram"],
        "disk": flavor["disk"],
        "swap": 0 if ctx.mv_at_least(2, 75) else "",
        "OS-FLV-EXT-DATA:ephemeral": 0,
        "OS-FLV-DISABLED:disabled": False,
        "vcpus": flavor["vcpus"],
        "os-flavor-access:is_public": True,
        "rxtx_factor": 1.0,
        "links": _links(ctx, "flavors", flavor["id"]),
    }
    if ctx.mv_at_least(2, 55):
        view["description"] = None
    if ctx.mv_at_least(2, 61):
        view["extra_specs"] = {}
    return view


def list_flavors(ctx: Ctx) -> Response:
    flavors = sorted(ctx.sim.tables["flavors"].values(), key=lambda f: (f["ram"], f["id"]))
    return json_response({"flavors": [_flavor_view(ctx, f, detail=False) for f in flavors]})


def list_flavors_detail(ctx: Ctx) -> Response:
    flavors = sorted(ctx.sim.tables["flavors"].values(), key=lambda f: (f["ram"], f["id"]))
    return json_response({"flavors": [_flavor_view(ctx, f, detail=True) for f in flavors]})


def get_flavor(ctx: Ctx, flavor_id: str) -> Response:
    flavor = ctx.sim.tables["flavors"].get(flavor_id)
    if flavor is None:
        raise nova_error(404, f"Flavor {flavor_id} could not be found.")
    return json_response({"flavor": _flavor_view(ctx, flavor, detail=True)})


# ---------------------------------------------------------------------------------------------- servers
def _server_or_404(ctx: Ctx, server_id: str) -> Record:
    server = ctx.sim.tables["servers"].get(server_id)
    if server is None or (not ctx.who.is_admin and server["project_id"] != ctx.who.project_id):
        raise nova_error(404, f"Instance {server_id} could not be found.")
    return server


def _addresses(sim: SimCloud, server: Record) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {}
    for port_id in server["_ports"]:
        port = sim.tables["ports"].get(port_id)
        if port is None:
            continue
        network = sim.tables["networks"].get(port["network_id"])
        name = network["name"] if network else port["network_id"]
        for fixed in port["fixed_ips"]:
            result.setdefault(name, []).append(
                {
                    "version": 6 if ":" in fixed["ip_address"] else 4,
                    "addr": fixed["ip_address"],
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                }
            )
    return result


def _server_view(ctx: Ctx, server: Record) -> dict[str, Any]:
    sim = ctx.sim
    flavor = server["_flavor"]
    view: dict[str, Any] = {
        "id": server["id"],
        "name": server["name"],
        "status": server["status"],
        "tenant_id": server["project_id"],
        "user_id": server["user_id"],
        "metadata": dict(server["metadata"]),
        "hostId": server["_host_id"],
        "created": server["created"],
        "updated": server["updated"],
        "addresses": _addresses(sim, server),
        "accessIPv4": "",
        "accessIPv6": "",
        "links": _links(ctx, "servers", server["id"]),
        "OS-DCF:diskConfig": "MANUAL",
        "progress": 0,
        "OS-EXT-AZ:availability_zone": "nova" if server["_host"] else "",
        "config_drive": "",
        "key_name": server["key_name"],
        "OS-SRV-USG:launched_at": server["OS-SRV-USG:launched_at"],
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-STS:task_state": server["OS-EXT-STS:task_state"],
        "OS-EXT-STS:vm_state": server["OS-EXT-STS:vm_state"],
        "OS-EXT-STS:power_state": server["OS-EXT-STS:power_state"],
        "os-extended-volumes:volumes_attached": [],
        "image": {
            "id": server["_image_id"],
            "links": [{"rel": "bookmark", "href": f"{ctx.base_url}/compute/images/{server['_image_id']}"}],
        },
    }
    if server["status"] == "ERROR" and server["_fault"] is not None:
        fault = dict(server["_fault"])
        if not ctx.who.is_admin:
            fault.pop("details", None)
        view["fault"] = fault
    if server["_port_sg_names"]:
        view["security_groups"] = [{"name": name} for name in server["_port_sg_names"]]
    if ctx.mv_at_least(2, 47):
        view["flavor"] = {
            "vcpus": flavor["vcpus"],
            "ram": flavor["ram"],
            "disk": flavor["disk"],
            "ephemeral": 0,
            "swap": 0,
            "original_name": flavor["name"],
            "extra_specs": {},
        }
    else:
        view["flavor"] = {
            "id": flavor["id"],
            "links": [{"rel": "bookmark", "href": f"{ctx.base_url}/compute/flavors/{flavor['id']}"}],
        }
    if ctx.mv_at_least(2, 9):
        view["locked"] = False
    if ctx.mv_at_least(2, 73):
        view["locked_reason"] = None
    if ctx.mv_at_least(2, 19):
        view["description"] = None
    if ctx.mv_at_least(2, 26):
        view["tags"] = list(server["tags"])
    if ctx.mv_at_least(2, 63):
        view["trusted_image_certificates"] = None
    if ctx.mv_at_least(2, 71):
        view["server_groups"] = [server["_group"]] if server["_group"] else []
    if ctx.mv_at_least(2, 96):
        view["pinned_availability_zone"] = None
    if ctx.mv_at_least(2, 100):
        view["scheduler_hints"] = dict(server["_hints"])
    if ctx.who.is_admin:
        view["OS-EXT-SRV-ATTR:host"] = server["_host"]
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = server["_host"]
        view["OS-EXT-SRV-ATTR:instance_name"] = server["_instance_name"]
        if ctx.mv_at_least(2, 3):
            view["OS-EXT-SRV-ATTR:user_data"] = server["_user_data"]
            view["OS-EXT-SRV-ATTR:hostname"] = re.sub(r"[^a-z0-9-]", "-", server["name"].lower())[:63]
            view["OS-EXT-SRV-ATTR:reservation_id"] = server["_reservation_id"]
            view["OS-EXT-SRV-ATTR:launch_index"] = 0
            view["OS-EXT-SRV-ATTR:kernel_id"] = ""
            view["OS-EXT-SRV-ATTR:ramdisk_id"] = ""
            view["OS-EXT-SRV-ATTR:root_device_name"] = "/dev/vda"
    return view


def _filter_servers(ctx: Ctx) -> list[Record]:
    """Nova's listing: newest first, filtered, then ``marker``/``limit``. It walks the cached order
    (``SimCloud.server_order``) from the marker and stops at the limit, so a page of a 30,000-server project
    costs about its own size."""
    sim = ctx.sim
    tags = _split_all(ctx, "tags")
    tags_any = _split_all(ctx, "tags-any")
    tagged = sim.candidates("servers", all_tags=tags, any_tags=tags_any) if tags or tags_any else None
    flag = ctx.arg("all_tenants") if ctx.arg("all_tenants") is not None else ctx.arg("all_projects")
    all_tenants = ctx.who.is_admin and flag is not None and flag.lower() not in FALSE_WORDS
    project_filter = ctx.arg("project_id") or ctx.arg("tenant_id")
    project: str | None = None
    if not all_tenants:
        project = project_filter if (ctx.who.is_admin and project_filter) else ctx.who.project_id
    elif project_filter:
        project = project_filter
    name = ctx.arg("name")
    try:
        pattern = re.compile(name) if name else None
    except re.error as exc:
        raise nova_error(400, f"Invalid name filter: {exc}") from exc
    status = (ctx.arg("status") or "").upper()
    not_tags = set(_split_all(ctx, "not-tags"))
    not_tags_any = set(_split_all(ctx, "not-tags-any"))
    host = ctx.arg("host") if ctx.who.is_admin else None

    def wanted(server: Record) -> bool:
        return not (
            (project is not None and server["project_id"] != project)
            or (pattern is not None and not pattern.search(server["name"]))
            or (status and server["status"] != status)
            or (not_tags and not_tags <= set(server["tags"]))
            or (not_tags_any and not_tags_any & set(server["tags"]))
            or (host and server["_host"] != host)
        )

    if tagged is not None:  # a tag filter: its few servers, not a walk over the whole table
        tagged.sort(key=lambda s: (s["created"], s["_seq"]), reverse=True)
        order = [s["id"] for s in tagged]
        position = {server_id: i for i, server_id in enumerate(order)}
    else:
        order, position = sim.server_order()
    start = 0
    marker = ctx.arg("marker")
    if marker:
        if marker not in position:
            raise nova_error(400, f"marker [{marker}] not found")
        start = position[marker] + 1
    limit_arg = ctx.arg("limit")
    limit = int(limit_arg) if limit_arg and limit_arg.isdigit() else None
    table = sim.tables["servers"]
    found: list[Record] = []
    for server_id in itertools.islice(order, start, None):
        if limit is not None and len(found) >= limit:
            break
        server = table[server_id]
        if wanted(server):
            found.append(server)
    return found


def _paginate(ctx: Ctx, items: list[Record]) -> list[Record]:
    marker = ctx.arg("marker")
    if marker:
        ids = [i["id"] for i in items]
        if marker not in ids:
            raise nova_error(400, f"marker [{marker}] not found")
        items = items[ids.index(marker) + 1 :]
    limit = ctx.arg("limit")
    if limit and limit.isdigit():
        items = items[: int(limit)]
    return items


def _split_all(ctx: Ctx, name: str) -> list[str]:
    """A tag filter given as ``a,b`` or as ``name=a&name=b`` (openstacksdk sends lists the second way)."""
    return [part for value in ctx.args(name) for part in value.split(",") if part]


def list_servers(ctx: Ctx) -> Response:
    servers = _filter_servers(ctx)
    return json_response(
        {
            "servers": [
                {"id": s["id"], "name": s["name"], "links": _links(ctx, "servers", s["id"])} for s in servers
            ]
        }
    )


def list_servers_detail(ctx: Ctx) -> Response:
    return json_response({"servers": [_server_view(ctx, s) for s in _filter_servers(ctx)]})


def get_server(ctx: Ctx, server_id: str) -> Response:
    return json_response({"server": _server_view(ctx, _server_or_404(ctx, server_id))})


def delete_server(ctx: Ctx, server_id: str) -> Response:
    server = _server_or_404(ctx, server_id)
    ctx.sim.delete_server_locked(server["id"])
    return empty(204)


CONSOLE_LINES_KEPT = 1000


def server_action(ctx: Ctx, server_id: str) -> Response:
    """``POST /servers/{id}/action``: ``os-getConsoleOutput`` (``{"length": n}``: the last n lines, all
    without it), what openstacksdk's ``get_server_console_output`` sends. The console holds what the
    server's boot wrote there (nodesim writes it through ``/_sim/servers/{id}/console``: there is no VM)."""
    server = _server_or_404(ctx, server_id)
    body = ctx.body if isinstance(ctx.body, dict) else {}
    if "os-getConsoleOutput" not in body:
        message = "simcloud serves only os-getConsoleOutput"
        raise ApiError(400, {"badRequest": {"code": 400, "message": message}})
    request = body["os-getConsoleOutput"] or {}
    length = request.get("length") if isinstance(request, dict) else None
    lines: list[str] = list(server.get("_console") or [])
    if length is not None:
        try:
            count = int(length)
        except (TypeError, ValueError):
            message = "length must be an integer"
            raise ApiError(400, {"badRequest": {"code": 400, "message": message}}) from None
        if count >= 0:
            lines = lines[-count:] if count else []
    return json_response({"output": "".join(f"{line}\n" for line in lines)})


def _ref_id(ref: Any) -> str:
    return str(ref).rstrip("/").rsplit("/", 1)[-1]


def _resolve_security_groups(ctx: Ctx, project_id: str, requested: list[Any]) -> list[Record]:
    groups = []
    table = ctx.sim.tables["security_groups"]
    for item in requested:
        key = item.get("name") if isinstance(item, dict) else None
        if not key:
            raise nova_error(400, "Invalid input for field/attribute security_groups.")
        found = table.get(key)
        if found is None or found["project_id"] != project_id:
            matches = [g for g in table.values() if g["name"] == key and g["project_id"] == project_id]
            if len(matches) > 1:
                raise nova_error(
                    409,
                    f"Multiple security_group matches found for name '{key}', use an ID to be more specific.",
                )
            found = matches[0] if matches else None
        if found is None:
            raise nova_error(400, f"Security group {key} not found for project {project_id}.")
        groups.append(found)
    return groups


def _check_quota(ctx: Ctx, project_id: str, flavor: Record) -> None:
    sim = ctx.sim
    if sim.take_quota_failure():
        used = sim.usage[project_id]["instances"]
        raise nova_error(
            403, f"Quota exceeded for instances: Requested 1, but already used {used} of {used} instances"
        )
    quota = sim.quota_for(project_id)
    usage = sim.usage[project_id]
    for resource, requested, limit in (
        ("instances", 1, quota.instances),
        ("cores", flavor["vcpus"], quota.cores),
        ("ram", flavor["ram"], quota.ram),
    ):
        if limit >= 0 and usage[resource] + requested > limit:
            raise nova_error(
                403,
                f"Quota exceeded for {resource}: Requested {requested}, but already used "
                f"{usage[resource]} of {limit} {resource}",
            )


def _place(sim: SimCloud, group: Record | None) -> str | None:
    """The host for a new server, or None when the group's policy leaves none ("No valid host")."""
    start = next(sim.placement_counter)
    hosts = [sim.hosts[(start + i) % len(sim.hosts)] for i in range(len(sim.hosts))]
    if group is None:
        return hosts[0]
    member_hosts = [
        sim.tables["servers"][m]["_host"]
        for m in group["members"]
        if m in sim.tables["servers"] and sim.tables["servers"][m]["_host"]
    ]
    policy = group["_policy"]
    if policy == "anti-affinity":
        free = [h for h in hosts if h not in member_hosts]
        return free[0] if free else None
    if policy == "soft-anti-affinity":
        return min(hosts, key=member_hosts.count)
    if policy in ("affinity", "soft-affinity"):
        return member_hosts[0] if member_hosts else hosts[0]
    return hosts[0]


def create_server(ctx: Ctx) -> Response:
    sim = ctx.sim
    body = ctx.body or {}
    spec = body.get("server")
    if not isinstance(spec, dict):
        raise nova_error(400, "Invalid input for field/attribute server.")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise nova_error(400, "Invalid input for field/attribute name.")
    project_id = ctx.who.project_id
    flavor = sim.tables["flavors"].get(_ref_id(spec.get("flavorRef", "")))
    if flavor is None:
        raise nova_error(400, f"Flavor {spec.get('flavorRef')} could not be found.")
    image_id = _ref_id(spec.get("imageRef", ""))
    if image_id not in sim.tables["images"]:
        raise nova_error(400, f"Image {spec.get('imageRef')} could not be found.")
    user_data = spec.get("user_data")
    if user_data is not None:
        try:
            base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise nova_error(400, "User data needs to be valid base 64.") from exc
    metadata = spec.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise nova_error(400, "Invalid input for field/attribute metadata.")
    tags = spec.get("tags") or []
    if tags and not ctx.mv_at_least(2, 52):
        raise nova_error(400, "Additional properties are not allowed ('tags' was unexpected)")
    if len(tags) > 50:
        raise nova_error(400, "Invalid input for field/attribute tags.")
    hints = body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {}
    group: Record | None = None
    if hints.get("group"):
        group = sim.tables["server_groups"].get(hints["group"])
        if group is None or group["project_id"] != project_id:
            raise nova_error(400, f"Invalid server group {hints['group']}")
    networks = spec.get("networks")
    if networks is None and ctx.mv_at_least(2, 37):
        raise nova_error(400, "Invalid input for field/attribute networks.")
    if networks in ("none",):
        networks = []
    elif networks in ("auto", None):
        own = [
            n
            for n in sim.tables["networks"].values()
            if n["project_id"] == project_id and not n["router:external"]
        ]
        networks = [{"uuid": own[0]["id"]}] if own else []
    groups = _resolve_security_groups(ctx, project_id, spec.get("security_groups") or [{"name": "default"}])
    requested_ports: list[tuple[str, dict[str, Any]]] = []
    for item in networks:
        if not isinstance(item, dict):
            raise nova_error(400, "Invalid input for field/attribute networks.")
        if item.get("port"):
            port = sim.tables["ports"].get(item["port"])
            if port is None or port["project_id"] != project_id:
                raise nova_error(400, f"Port id {item['port']} could not be found.")
            if port["device_id"]:
                raise nova_error(409, f"Port {item['port']} is still in use.")
            requested_ports.append(("port", item))
        else:
            network = sim.tables["networks"].get(item.get("uuid", ""))
            if network is None or not (network["project_id"] == project_id or network["shared"]):
                raise nova_error(400, f"Network {item.get('uuid')} could not be found.")
            requested_ports.append(("network", item))
    _check_quota(ctx, project_id, flavor)
    if group is not None:
        quota = sim.quota_for(project_id)
        if 0 <= quota.server_group_members <= len(group["members"]):
            raise nova_error(403, "Quota exceeded, too many servers in group")

    server_id = _new_uuid()
    stamp = now_iso()
    host = _place(sim, group)
    fault: dict[str, Any] | None = None
    if host is None:
        fault = {
            "code": 500,
            "created": stamp,
            "message": NO_VALID_HOST,
            "details": "Traceback: nova.exception.NoValidHost",
        }
    else:
        injected = sim.take_error_injection()
        if injected is not None:
            fault = {"code": 500, "created": stamp, "message": injected, "details": injected}
    port_ids: list[str] = []
    try:
        for kind, item in requested_ports:
            if kind == "port":
                port = sim.tables["ports"][item["port"]]
                port.update(device_id=server_id, device_owner="compute:nova", status="ACTIVE")
            else:
                fixed = [{"ip_address": item["fixed_ip"]}] if item.get("fixed_ip") else None
                if fixed:
                    subnet_ids = sim.tables["networks"][item["uuid"]]["subnets"]
                    fixed[0]["subnet_id"] = subnet_ids[0] if subnet_ids else ""
                port = sim.create_port_locked(
                    project_id=project_id,
                    network_id=item["uuid"],
                    fixed_ips=fixed,
                    device_owner="compute:nova",
                    device_id=server_id,
                    security_groups=[g["id"] for g in groups],
                )
                port["_auto"] = True
            port_ids.append(port["id"])
    except LookupError as exc:
        for port_id in port_ids:
            if sim.tables["ports"].get(port_id, {}).get("_auto"):
                sim.delete_port_locked(port_id)
        raise nova_error(400, str(exc.args[-1])) from exc
    server: Record = {
        "id": server_id,
        "name": name,
        "project_id": project_id,
        "user_id": ctx.who.user_id,
        "status": "BUILD",
        "metadata": dict(metadata),
        "tags": list(dict.fromkeys(tags)),
        "created": stamp,
        "updated": stamp,
        "key_name": spec.get("key_name"),
        "OS-SRV-USG:launched_at": None,
        "OS-EXT-STS:task_state": "scheduling",
        "OS-EXT-STS:vm_state": "building",
        "OS-EXT-STS:power_state": 0,
        "_flavor": dict(flavor),
        "_vcpus": flavor["vcpus"],
        "_ram": flavor["ram"],
        "_image_id": image_id,
        "_user_data": user_data,
        "_user_data_text": SimCloud.decode_user_data(user_data),
        "_console": [],  # what the boot writes (nodesim), served by os-getConsoleOutput
        "_host": host,
        "_host_id": secrets.token_hex(28) if host else "",
        "_fault": fault,
        "_ports": port_ids,
        "_port_sg_names": [g["name"] for g in groups],
        "_group": group["id"] if group else None,
        "_hints": dict(hints),
        "_instance_name": f"instance-{len(sim.tables['servers']) + 1:08x}",
        "_reservation_id": "r-" + secrets.token_hex(4),
        "_seq": next(sim.placement_counter),
    }
    sim.insert("servers", server)
    sim.add_usage(project_id, 1, flavor["vcpus"], flavor["ram"])
    if group is not None:
        group["members"].append(server_id)
    sim.schedule(sim.boot_delay, "server", server_id)
    headers = {"Location": f"{ctx.base_url}/compute/v2.1/servers/{server_id}"}
    return json_response(
        {
            "server": {
                "id": server_id,
                "links": _links(ctx, "servers", server_id),
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": [{"name": g["name"]} for g in groups],
                "adminPass": secrets.token_urlsafe(9),
            }
        },
        202,
        headers,
    )


def _new_uuid() -> str:
    import uuid

    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------- server tags
def _tagged_server(ctx: Ctx, server_id: str) -> Record:
    if not ctx.mv_at_least(2, 26):
        raise nova_error(404, "The resource could not be found.")
    return _server_or_404(ctx, server_id)


def list_server_tags(ctx: Ctx, server_id: str) -> Response:
    return json_response({"tags": list(_tagged_server(ctx, server_id)["tags"])})


def replace_server_tags(ctx: Ctx, server_id: str) -> Response:
    server = _tagged_server(ctx, server_id)
    tags = (ctx.body or {}).get("tags")
    if not isinstance(tags, list) or len(tags) > 50:
        raise nova_error(400, "Invalid input for field/attribute tags.")
    ctx.sim.set_tags("servers", server, tags)
    return json_response({"tags": list(server["tags"])})


def delete_server_tags(ctx: Ctx, server_id: str) -> Response:
    ctx.sim.set_tags("servers", _tagged_server(ctx, server_id), [])
    return empty(204)


def check_server_tag(ctx: Ctx, server_id: str, tag: str) -> Response:
    if tag not in _tagged_server(ctx, server_id)["tags"]:
        raise nova_error(404, f"Tag {tag} could not be found.")
    return empty(204)


def add_server_tag(ctx: Ctx, server_id: str, tag: str) -> Response:
    server = _tagged_server(ctx, server_id)
    headers = {"Location": f"{ctx.base_url}/compute/v2.1/servers/{server_id}/tags/{tag}"}
    if tag in server["tags"]:
        return empty(204, headers)
    if len(server["tags"]) >= 50:
        raise nova_error(400, "The number of tags exceeded the per-server limit 50")
    ctx.sim.add_tag("servers", server, tag)
    return empty(201, headers)


def delete_server_tag(ctx: Ctx, server_id: str, tag: str) -> Response:
    server = _tagged_server(ctx, server_id)
    if tag not in server["tags"]:
        raise nova_error(404, f"Tag {tag} could not be found.")
    ctx.sim.remove_tag("servers", server, tag)
    return empty(204)


# ------------------------------------------------------------------------------------------- server metadata
MAX_METADATA_ITEMS = 128  # Nova's default metadata_items quota
MAX_METADATA_LENGTH = 255


def list_server_metadata(ctx: Ctx, server_id: str) -> Response:
    return json_response({"metadata": dict(_server_or_404(ctx, server_id)["metadata"])})


def update_server_metadata(ctx: Ctx, server_id: str) -> Response:
    """``POST /servers/{id}/metadata``: merge the given items into the server's (Nova's "update")."""
    server = _server_or_404(ctx, server_id)
    items = (ctx.body or {}).get("metadata")
    if not isinstance(items, dict) or not all(
        isinstance(k, str)
        and isinstance(v, str)
        and 0 < len(k) <= MAX_METADATA_LENGTH
        and len(v) <= MAX_METADATA_LENGTH
        for k, v in items.items()
    ):
        raise nova_error(400, "Invalid input for field/attribute metadata.")
    merged = {**server["metadata"], **items}
    if len(merged) > MAX_METADATA_ITEMS:
        raise nova_error(403, "Quota exceeded for metadata_items: Requested 1, but already used 128")
    server["metadata"] = merged
    return json_response({"metadata": dict(merged)})


def delete_server_metadata_item(ctx: Ctx, server_id: str, key: str) -> Response:
    server = _server_or_404(ctx, server_id)
    if key not in server["metadata"]:
        raise nova_error(404, "Metadata item was not found")
    server["metadata"] = {k: v for k, v in server["metadata"].items() if k != key}
    return empty(204)


# ---------------------------------------------------------------------------------------------- server groups
def _group_view(ctx: Ctx, group: Record) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": group["id"],
        "name": group["name"],
        "members": [m for m in group["members"] if m in ctx.sim.tables["servers"]],
    }
    if ctx.mv_at_least(2, 64):
        view["policy"] = group["_policy"]
        view["rules"] = {}
    else:
        view["policies"] = [group["_policy"]]
        view["metadata"] = {}
    if ctx.mv_at_least(2, 13):
        view["project_id"] = group["project_id"]
        view["user_id"] = group["user_id"]
    return view


def _group_or_404(ctx: Ctx, group_id: str) -> Record:
    group = ctx.sim.tables["server_groups"].get(group_id)
    if group is None or (not ctx.who.is_admin and group["project_id"] != ctx.who.project_id):
        raise nova_error(404, f"Instance group {group_id} could not be found.")
    return group


def create_server_group(ctx: Ctx) -> Response:
    spec = (ctx.body or {}).get("server_group")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise nova_error(400, "Invalid input for field/attribute server_group.")
    if ctx.mv_at_least(2, 64):
        policy = spec.get("policy")
        if "policies" in spec:
            raise nova_error(400, "Additional properties are not allowed ('policies' was unexpected)")
    else:
        policies = spec.get("policies")
        if "policy" in spec or not isinstance(policies, list) or len(policies) != 1:
            raise nova_error(400, "Invalid input for field/attribute policies.")
        policy = policies[0]
    allowed = POLICIES if ctx.mv_at_least(2, 15) else POLICIES[:2]
    if policy not in allowed:
        raise nova_error(400, f"Invalid input for field/attribute policy. Value: {policy}.")
    project_id = ctx.who.project_id
    quota = ctx.sim.quota_for(project_id)
    used = sum(1 for g in ctx.sim.tables["server_groups"].values() if g["project_id"] == project_id)
    if 0 <= quota.server_groups <= used:
        raise nova_error(403, "Quota exceeded, too many server groups.")
    group = ctx.sim.insert(
        "server_groups",
        {
            "id": _new_uuid(),
            "name": spec["name"],
            "project_id": project_id,
            "user_id": ctx.who.user_id,
            "members": [],
            "_policy": policy,
        },
    )
    return json_response({"server_group": _group_view(ctx, group)})


def list_server_groups(ctx: Ctx) -> Response:
    everything = ctx.who.is_admin and ctx.arg("all_projects") is not None
    groups = [
        g
        for g in ctx.sim.tables["server_groups"].values()
        if everything or g["project_id"] == ctx.who.project_id
    ]
    # Nova pages server groups by offset and limit (no marker); openstacksdk's own paging sends markers
    offset = ctx.arg("offset")
    if offset and offset.isdigit():
        groups = groups[int(offset) :]
    return json_response({"server_groups": [_group_view(ctx, g) for g in _paginate(ctx, groups)]})


def get_server_group(ctx: Ctx, group_id: str) -> Response:
    return json_response({"server_group": _group_view(ctx, _group_or_404(ctx, group_id))})


def delete_server_group(ctx: Ctx, group_id: str) -> Response:
    group = _group_or_404(ctx, group_id)
    ctx.sim.remove("server_groups", group["id"])
    for member in group["members"]:
        server = ctx.sim.tables["servers"].get(member)
        if server is not None:
            server["_group"] = None
    return empty(204)


# ------------------------------------------------------------------------------------------ limits, quotas
def _target_project(ctx: Ctx) -> str:
    wanted = ctx.arg("tenant_id") or ctx.arg("project_id")
    if wanted and ctx.who.is_admin:
        return wanted
    return ctx.who.project_id


def get_limits(ctx: Ctx) -> Response:
    project_id = _target_project(ctx)
    quota = ctx.sim.quota_for(project_id)
    usage = ctx.sim.usage[project_id]
    groups_used = sum(1 for g in ctx.sim.tables["server_groups"].values() if g["project_id"] == project_id)
    absolute: dict[str, int] = {
        "maxTotalCores": quota.cores,
        "maxTotalInstances": quota.instances,
        "maxTotalRAMSize": quota.ram,
        "maxTotalKeypairs": 100,
        "maxServerMeta": 128,
        "maxImageMeta": 128,
        "maxServerGroups": quota.server_groups,
        "maxServerGroupMembers": quota.server_group_members,
        "totalCoresUsed": usage["cores"],
        "totalInstancesUsed": usage["instances"],
        "totalRAMUsed": usage["ram"],
        "totalServerGroupsUsed": groups_used,
    }
    if not ctx.mv_at_least(2, 57):
        absolute.update(maxPersonality=5, maxPersonalitySize=10240)
    if not ctx.mv_at_least(2, 36):
        absolute.update(
            maxTotalFloatingIps=-1,
            maxSecurityGroups=-1,
            maxSecurityGroupRules=-1,
            totalFloatingIpsUsed=0,
            totalSecurityGroupsUsed=0,
        )
    return json_response({"limits": {"rate": [], "absolute": absolute}})


def _quota_set(ctx: Ctx, project_id: str) -> dict[str, Any]:
    quota = ctx.sim.quota_for(project_id)
    return {
        "id": project_id,
        "instances": quota.instances,
        "cores": quota.cores,
        "ram": quota.ram,
        "server_groups": quota.server_groups,
        "server_group_members": quota.server_group_members,
        "key_pairs": 100,
        "metadata_items": 128,
    }


def get_quota_set(ctx: Ctx, project_id: str) -> Response:
    if not ctx.who.is_admin and project_id != ctx.who.project_id:
        raise nova_error(403, "Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.")
    return json_response({"quota_set": _quota_set(ctx, project_id)})


def update_quota_set(ctx: Ctx, project_id: str) -> Response:
    if not ctx.who.is_admin:
        raise nova_error(403, "Policy doesn't allow os_compute_api:os-quota-sets:update to be performed.")
    values = (ctx.body or {}).get("quota_set") or {}
    quota = ctx.sim.quota_for(project_id)
    for key in ("instances", "cores", "ram", "server_groups", "server_group_members"):
        if key in values:
            setattr(quota, key, int(values[key]))
    view = _quota_set(ctx, project_id)
    view.pop("id")
    return json_response({"quota_set": view})


def register(router: Router) -> None:
    s = "compute"
    p = "/compute/v2.1"
    router.add("GET", "/compute", versions, service="compute-root", public=True)
    router.add("GET", p, version, service="compute-root", public=True)
    router.add("GET", f"{p}/flavors", list_flavors, service=s)
    router.add("GET", f"{p}/flavors/detail", list_flavors_detail, service=s)
    router.add("GET", f"{p}/flavors/{{flavor_id}}", get_flavor, service=s)
    router.add("GET", f"{p}/servers", list_servers, service=s)
    router.add("POST", f"{p}/servers", create_server, service=s)
    router.add("GET", f"{p}/servers/detail", list_servers_detail, service=s)
    router.add("GET", f"{p}/servers/{{server_id}}", get_server, service=s)
    router.add("DELETE", f"{p}/servers/{{server_id}}", delete_server, service=s)
    router.add("POST", f"{p}/servers/{{server_id}}/action", server_action, service=s)
    router.add("GET", f"{p}/servers/{{server_id}}/metadata", list_server_metadata, service=s)
    router.add("POST", f"{p}/servers/{{server_id}}/metadata", update_server_metadata, service=s)
    router.add(
        "DELETE", f"{p}/servers/{{server_id}}/metadata/{{key}}", delete_server_metadata_item, service=s
    )
    router.add("GET", f"{p}/servers/{{server_id}}/tags", list_server_tags, service=s)
    router.add("PUT", f"{p}/servers/{{server_id}}/tags", replace_server_tags, service=s)
    router.add("DELETE", f"{p}/servers/{{server_id}}/tags", delete_server_tags, service=s)
    router.add("GET", f"{p}/servers/{{server_id}}/tags/{{tag}}", check_server_tag, service=s)
    router.add("PUT", f"{p}/servers/{{server_id}}/tags/{{tag}}", add_server_tag, service=s)
    router.add("DELETE", f"{p}/servers/{{server_id}}/tags/{{tag}}", delete_server_tag, service=s)
    router.add("GET", f"{p}/os-server-groups", list_server_groups, service=s)
    router.add("POST", f"{p}/os-server-groups", create_server_group, service=s)
    router.add("GET", f"{p}/os-server-groups/{{group_id}}", get_server_group, service=s)
    router.add("DELETE", f"{p}/os-server-groups/{{group_id}}", delete_server_group, service=s)
    router.add("GET", f"{p}/limits", get_limits, service=s)
    router.add("GET", f"{p}/os-quota-sets/{{project_id}}", get_quota_set, service=s)
    router.add("PUT", f"{p}/os-quota-sets/{{project_id}}", update_quota_set, service=s)


__all__ = ["public_view", "register"]
