"""Keystone v3 under ``/identity``: version discovery, password and application-credential auth with a
service catalog, projects, and a user's application credentials (``/v3/users/{user_id}/
application_credentials``, as Keystone serves them: a user manages only their own, names are unique per
user, the secret is shown once, at creation).

Called by ``simcloud.app``. The catalog points every service at this same server, devstack style
(``/compute/v2.1``, ``/network``, ``/image``, ``/load-balancer``, ``/identity``), built from the address the
client used, so the simulator works behind any loopback port.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.responses import Response

from simcloud.errors import keystone_error
from simcloud.http import Ctx, Router, empty, json_response
from simcloud.state import Identity, Record, new_id, now_iso

REGION = "RegionOne"
SERVICES = (
    ("identity", "keystone", "/identity"),
    ("compute", "nova", "/compute/v2.1"),
    ("network", "neutron", "/network"),
    ("image", "glance", "/image"),
    ("load-balancer", "octavia", "/load-balancer"),
)


def _v3_doc(base: str) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }


def versions(ctx: Ctx) -> Response:
    return json_response({"versions": {"values": [_v3_doc(ctx.base_url)]}}, 300)


def version_v3(ctx: Ctx) -> Response:
    return json_response({"version": _v3_doc(ctx.base_url)})


def catalog(base: str) -> list[dict[str, Any]]:
    entries = []
    for index, (service_type, name, path) in enumerate(SERVICES):
        url = base + path
        entries.append(
            {
                "id": f"{index:032x}",
                "type": service_type,
                "name": name,
                "endpoints": [
                    {
                        "id": f"{index:030x}{n:02x}",
                        "interface": interface,
                        "region": REGION,
                        "region_id": REGION,
                        "url": url,
                    }
                    for n, interface in enumerate(("public", "internal", "admin"))
                ],
            }
        )
    return entries


def token_body(identity: Identity, base: str) -> dict[str, Any]:
    domain = {"id": "default", "name": "Default"}
    return {
        "token": {
            "methods": ["password"],
            "user": {
                "domain": domain,
                "id": identity.user_id,
                "name": identity.user_name,
                "password_expires_at": None,
            },
            "audit_ids": [identity.token[-22:]],
            "expires_at": identity.expires_at,
            "issued_at": now_iso().replace("Z", ".000000Z"),
            "project": {"domain": domain, "id": identity.project_id, "name": identity.project_name},
            "is_domain": False,
            "roles": [{"id": f"{abs(hash(role)):032x}"[:32], "name": role} for role in identity.roles],
            "catalog": catalog(base),
        }
    }


def issue_token(ctx: Ctx) -> Response:
    auth = (ctx.body or {}).get("auth", {})
    identity_part = auth.get("identity", {})
    if "application_credential" in identity_part.get("methods", []):
        credential = identity_part.get("application_credential") or {}
        subject = ctx.sim.authenticate_application_credential(
            credential_id=credential.get("id"),
            name=credential.get("name"),
            user_id=(credential.get("user") or {}).get("id"),
            secret=str(credential.get("secret", "")),
        )
        if subject is None:
            raise keystone_error(401, "The request you have made requires authentication.")
        body = token_body(subject, ctx.base_url)
        body["token"]["methods"] = ["application_credential"]
        return json_response(body, 201, {"X-Subject-Token": subject.token})
    if "password" not in identity_part.get("methods", []):
        raise keystone_error(401, "The request you have made requires authentication.")
    user = identity_part.get("password", {}).get("user", {})
    username = user.get("name") or _user_name_by_id(ctx, user.get("id"))
    project = (auth.get("scope") or {}).get("project") or {}
    project_name = project.get("name") or _project_name_by_id(ctx, project.get("id"))
    identity = ctx.sim.authenticate(
        username=username or "", password=user.get("password", ""), project_name=project_name
    )
    if identity is None:
        raise keystone_error(401, "The request you have made requires authentication.")
    return json_response(token_body(identity, ctx.base_url), 201, {"X-Subject-Token": identity.token})


def _user_name_by_id(ctx: Ctx, user_id: str | None) -> str | None:
    for user in ctx.sim._users.values():
        if user.id == user_id:
            return user.name
    return None


def _project_name_by_id(ctx: Ctx, project_id: str | None) -> str | None:
    for name, pid in ctx.sim.projects.items():
        if pid == project_id:
            return name
    return None


def validate_token(ctx: Ctx) -> Response:
    subject = ctx.sim.identify(ctx.headers.get("x-subject-token"))
    if subject is None:
        raise keystone_error(404, "Could not find token.")
    return json_response(token_body(subject, ctx.base_url), 200, {"X-Subject-Token": subject.token})


def _project(name: str, pid: str) -> dict[str, Any]:
    return {
        "id": pid,
        "name": name,
        "domain_id": "default",
        "enabled": True,
        "is_domain": False,
        "parent_id": "default",
        "description": "",
        "tags": [],
        "options": {},
    }


def list_projects(ctx: Ctx) -> Response:
    me = ctx.who
    projects = [
        _project(name, pid) for name, pid in ctx.sim.projects.items() if me.is_admin or pid == me.project_id
    ]
    name = ctx.arg("name")
    if name is not None:
        projects = [p for p in projects if p["name"] == name]
    return json_response({"projects": projects, "links": {"self": None, "next": None, "previous": None}})


def get_project(ctx: Ctx, project_id: str) -> Response:
    for name, pid in ctx.sim.projects.items():
        if pid == project_id and (ctx.who.is_admin or pid == ctx.who.project_id):
            return json_response({"project": _project(name, pid)})
    raise keystone_error(404, f"Could not find project: {project_id}.")


def _credential_view(record: Record, base: str) -> dict[str, Any]:
    view = {key: value for key, value in record.items() if not key.startswith("_") and key != "tags"}
    view["links"] = {
        "self": f"{base}/identity/v3/users/{record['_user_id']}/application_credentials/{record['id']}"
    }
    return view


def _own_user(ctx: Ctx, user_id: str) -> None:
    # Keystone: a user manages their own application credentials (admins too, through their own user)
    if ctx.who.user_id != user_id:
        raise keystone_error(403, "You are not authorized to perform the requested action.")


def create_application_credential(ctx: Ctx, user_id: str) -> Response:
    _own_user(ctx, user_id)
    spec = (ctx.body or {}).get("application_credential") or {}
    name = spec.get("name")
    if not isinstance(name, str) or not name or len(name) > 255:
        raise keystone_error(400, "Invalid input for field 'name'.")
    owned = [r for r in ctx.sim.tables["application_credentials"].values() if r["_user_id"] == user_id]
    if any(r["name"] == name for r in owned):
        raise keystone_error(
            409, "Conflict occurred attempting to store application_credential - Duplicate entry."
        )
    secret = spec.get("secret") or secrets.token_urlsafe(64)
    roles = spec.get("roles") or [{"name": role} for role in ctx.who.roles]
    known = set(ctx.who.roles)
    if any(role.get("name") not in known for role in roles):
        raise keystone_error(403, "The application credential asks for roles the user does not have.")
    with ctx.sim.lock:
        record = ctx.sim.insert(
            "application_credentials",
            {
                "id": new_id().replace("-", ""),
                "name": name,
                "description": spec.get("description"),
                "project_id": ctx.who.project_id,
                "roles": [
                    {"id": f"{abs(hash(r['name'])):032x}"[:32], "name": r["name"], "domain_id": None}
                    for r in roles
                ],
                "expires_at": spec.get("expires_at"),
                "unrestricted": bool(spec.get("unrestricted", False)),
                "access_rules": list(spec.get("access_rules") or []),
                "_user_id": user_id,
                "_secret": secret,
            },
        )
        ctx.sim.mark_changed()
    return json_response(
        {"application_credential": {**_credential_view(record, ctx.base_url), "secret": secret}}, 201
    )


def list_application_credentials(ctx: Ctx, user_id: str) -> Response:
    _own_user(ctx, user_id)
    name = ctx.arg("name")
    found = [
        _credential_view(r, ctx.base_url)
        for r in ctx.sim.tables["application_credentials"].values()
        if r["_user_id"] == user_id and (name is None or r["name"] == name)
    ]
    return json_response(
        {"application_credentials": found, "links": {"self": None, "next": None, "previous": None}}
    )


def _owned_credential(ctx: Ctx, user_id: str, credential_id: str) -> Record:
    _own_user(ctx, user_id)
    record = ctx.sim.tables["application_credentials"].get(credential_id)
    if record is None or record["_user_id"] != user_id:
        raise keystone_error(404, f"Could not find Application Credential: {credential_id}.")
    return record


def get_application_credential(ctx: Ctx, user_id: str, credential_id: str) -> Response:
    record = _owned_credential(ctx, user_id, credential_id)
    return json_response({"application_credential": _credential_view(record, ctx.base_url)})


def delete_application_credential(ctx: Ctx, user_id: str, credential_id: str) -> Response:
    record = _owned_credential(ctx, user_id, credential_id)
    with ctx.sim.lock:
        ctx.sim.remove("application_credentials", record["id"])
        # tokens issued through it die with it, as in Keystone
        ctx.sim.mark_changed()
    return empty(204)


def register(router: Router) -> None:
    s = "identity"
    router.add("GET", "/identity", versions, service=s, public=True)
    router.add("GET", "/identity/v3", version_v3, service=s, public=True)
    router.add("POST", "/identity/v3/auth/tokens", issue_token, service=s, public=True)
    router.add("GET", "/identity/v3/auth/tokens", validate_token, service=s)
    router.add("GET", "/identity/v3/projects", list_projects, service=s)
    router.add("GET", "/identity/v3/auth/projects", list_projects, service=s)
    router.add("GET", "/identity/v3/projects/{project_id}", get_project, service=s)
    credentials = "/identity/v3/users/{user_id}/application_credentials"
    router.add("POST", credentials, create_application_credential, service=s)
    router.add("GET", credentials, list_application_credentials, service=s)
    router.add("GET", credentials + "/{credential_id}", get_application_credential, service=s)
    router.add("DELETE", credentials + "/{credential_id}", delete_application_credential, service=s)
