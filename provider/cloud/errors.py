"""Our own cloud error tree. The driver wraps every openstacksdk error into one of these (``from exc``).

The reconciler only needs to know which kind it is: a temporary error is retried with backoff and shown on
a condition; a permanent one fails the operation with its message, which must tell a user what to fix.
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error a cloud driver raises."""


class CloudTemporaryError(CloudError):
    """Retry later: timeouts, 5xx, a resource not ready yet, rate limits."""


class CloudQuotaExceeded(CloudTemporaryError):
    """The cloud project's quota is used up; freeing resources or raising the quota will let it go on."""


class CloudTimeout(CloudTemporaryError):
    """A bounded wait ran out."""


class CloudTokenRefused(CloudTemporaryError):
    """A service answered 401 to a token the identity service had just issued: a token expired or revoked
    (an identity service restarted with new keys), or a service still catching up with such a restart. The
    driver authenticates afresh and retries once before it lets this out."""


class CloudPermanentError(CloudError):
    """Retrying cannot help: unknown flavor or image, invalid request, a resource in ERROR too often."""


class CloudCredentialsRefused(CloudPermanentError):
    """The identity service refuses the region's credentials themselves, on a fresh authentication: an
    operator must fix them (clouds.yaml or the user in the cloud). Not the cluster's fault: the reconciler
    shows it on the cluster's conditions and keeps retrying instead of failing the operation."""


class CloudNotFound(CloudPermanentError):
    """A named thing the spec refers to (flavor, image, external network) does not exist in the cloud."""
