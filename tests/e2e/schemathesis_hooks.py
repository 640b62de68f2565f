"""Schemathesis hooks for fuzzing a running ``kaas up`` (``SCHEMATHESIS_HOOKS=tests.e2e.schemathesis_hooks``,
which ``schemathesis.toml`` at the repository's root sets). Used by ``tests/e2e/test_openapi_conformance.py``
and by the long run the README describes.

- The stateful phase links ``GET /v1/tokens`` to ``DELETE /v1/tokens/{token_id}`` and so, sooner or later,
  revokes the very token the run authenticates with: every request after that is a (correct) 401 and the
  rest of the run tests nothing. The token ids in ``KAAS_FUZZ_KEEP_TOKEN_IDS`` (comma-separated) are
  swapped for an id that names no token, so that operation is still exercised (it answers 404).
- ``format: cidr`` (kaas's own format, ``kaas_api.validation.CIDR_FORMAT``) gets a generator of networks.
- Two kinds of failure are dropped, each shown by schemathesis as "dropped by filter_failure":
  the k8s proxy's documented 503 for a cluster whose agent has not connected yet (a 5xx, so
  ``not_a_server_error`` flags it), and a ``positive_data_acceptance`` failure whose 422 names only rules
  JSON Schema cannot state (``kaas_api.errors.RULES_BEYOND_SCHEMA``: a flavor the region does not offer,
  overlapping CIDRs). A 422 for anything the schema does state still fails the run.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

from kaas_api.errors import RULES_BEYOND_SCHEMA
from kaas_api.validation import CIDR_FORMAT

NO_SUCH_TOKEN = "00000000-0000-0000-0000-000000000000"
AGENT_NOT_CONNECTED = "is not connected"
_KEEP = frozenset(filter(None, os.environ.get("KAAS_FUZZ_KEEP_TOKEN_IDS", "").split(",")))


_CIDRS = st.one_of(
    st.builds(
        lambda address, prefix: str(ipaddress.IPv4Network((address, prefix), strict=False)),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda address, prefix: str(ipaddress.IPv6Network((address, prefix), strict=False)),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    ),
)
schemathesis.openapi.format(CIDR_FORMAT, _CIDRS)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() == "DELETE" and case.path_parameters.get("token_id") in _KEEP:
        case.path_parameters["token_id"] = NO_SUCH_TOKEN


def _json(response: Any) -> Any:
    try:
        return json.loads(response.content or b"null")
    except ValueError:
        return None


def is_agent_not_connected(case: Any, response: Any) -> bool:
    """The k8s proxy's documented 503 for a cluster whose agent has not connected yet."""
    if response.status_code != 503 or not case.path.startswith("/k8s/clusters/"):
        return False
    if case.method.upper() == "HEAD":
        return True  # no body to tell; the same route answered the same 503 with a body to GET
    body = _json(response)
    if not isinstance(body, dict) or body.get("kind") != "Status":
        return False
    return AGENT_NOT_CONNECTED in str(body.get("message", ""))


def is_rule_beyond_schema(response: Any) -> bool:
    """A 422 whose every problem is a rule JSON Schema cannot state."""
    body = _json(response)
    if response.status_code != 422 or not isinstance(body, dict) or not isinstance(body.get("detail"), list):
        return False
    types = {problem.get("type") for problem in body["detail"] if isinstance(problem, dict)}
    return bool(types) and types <= RULES_BEYOND_SCHEMA


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """False drops the failure."""
    code = getattr(failure, "code", "")
    if code == "ST101" and is_agent_not_connected(case, response):
        return False
    return not (code == "ST202" and is_rule_beyond_schema(response))
