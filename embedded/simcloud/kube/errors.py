"""The stand-in's error tree: every failure a client sees is a Kubernetes ``Status`` object.

Owned by the Kubernetes stand-in; raised by the store, the authenticator, the RBAC evaluator and the HTTP
layer, and rendered once by ``simcloud.kube.server``. Messages follow kube-apiserver's wording because
kubectl prints them verbatim and kaas's agent will relay them to users.
"""

from __future__ import annotations

from typing import Any


def qualified_resource(resource: str, group: str) -> str:
    """``configmaps`` for the core group, ``roles.rbac.authorization.k8s.io`` otherwise (as GroupResource)."""
    return f"{resource}.{group}" if group else resource


class KubeStatusError(Exception):
    """A failed request, carrying everything needed for a ``kind: Status`` answer."""

    def __init__(
        self,
        *,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _details(*, resource: str, group: str, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": resource}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return details


def not_found(*, resource: str, group: str, name: str) -> KubeStatusError:
    return KubeStatusError(
        code=404,
        reason="NotFound",
        message=f'{qualified_resource(resource, group)} "{name}" not found',
        details=_details(resource=resource, group=group, name=name),
    )


def path_not_found() -> KubeStatusError:
    return KubeStatusError(
        code=404, reason="NotFound", message="the server could not find the requested resource"
    )


def already_exists(*, resource: str, group: str, name: str) -> KubeStatusError:
    return KubeStatusError(
        code=409,
        reason="AlreadyExists",
        message=f'{qualified_resource(resource, group)} "{name}" already exists',
        details=_details(resource=resource, group=group, name=name),
    )


def conflict(*, resource: str, group: str, name: str) -> KubeStatusError:
    return KubeStatusError(
        code=409,
        reason="Conflict",
        message=(
            f'Operation cannot be fulfilled on {qualified_resource(resource, group)} "{name}": '
            "the object has been modified; please apply your changes to the latest version and try again"
        ),
        details=_details(resource=resource, group=group, name=name),
    )


def forbidden(*, resource: str, group: str, name: str, reason: str) -> KubeStatusError:
    subject = qualified_resource(resource, group)
    if name:
        subject = f'{subject} "{name}"'
    return KubeStatusError(
        code=403,
        reason="Forbidden",
        message=f"{subject} is forbidden: {reason}",
        details=_details(resource=resource, group=group, name=name),
    )


def forbidden_path(reason: str) -> KubeStatusError:
    return KubeStatusError(code=403, reason="Forbidden", message=f"forbidden: {reason}", details={})


def unauthorized() -> KubeStatusError:
    return KubeStatusError(code=401, reason="Unauthorized", message="Unauthorized")


def bad_request(message: str) -> KubeStatusError:
    return KubeStatusError(code=400, reason="BadRequest", message=message)


def invalid(*, kind: str, group: str, name: str, message: str) -> KubeStatusError:
    return KubeStatusError(
        code=422,
        reason="Invalid",
        message=f'{kind} "{name}" is invalid: {message}',
        details={"name": name, "group": group, "kind": kind},
    )


def method_not_allowed(verb: str, resource: str) -> KubeStatusError:
    return KubeStatusError(
        code=405,
        reason="MethodNotAllowed",
        message=f"{verb} is not supported on resources of kind {resource!r}",
    )


def unsupported_media_type(content_type: str) -> KubeStatusError:
    return KubeStatusError(
        code=415,
        reason="UnsupportedMediaType",
        message=(
            "the body of the request was in an unknown format - accepted media types include: "
            f"application/merge-patch+json, application/strategic-merge-patch+json (got {content_type!r})"
        ),
    )


def internal_error(message: str) -> KubeStatusError:
    return KubeStatusError(
        code=500, reason="InternalError", message=f"Internal error occurred: {message}",
        details={"causes": [{"message": message}]},
    )


def gone(message: str) -> KubeStatusError:
    return KubeStatusError(code=410, reason="Expired", message=message)


def timeout(message: str) -> KubeStatusError:
    return KubeStatusError(code=504, reason="Timeout", message=message)
