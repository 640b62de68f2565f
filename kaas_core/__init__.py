"""kaas_core: what every server-side deployable shares (the API, the provider workers, the tunnel server).

The data model and its sessions (``db``), the settings base and its one production check (``settings``),
secrets at rest and token hashing (``security``), the task-name table (``tasks``), the request-id context
(``request_context``), logging (``logs``), the webhook egress policy (``egress``), the tunnel registry, the
signed internal hop of the k8s proxy (``internal_hop``), bounded HTTP input (``serving``) and the schema's
migrations (``migrations``, package data). It imports none of the deployables: an import-linter ``layers``
contract in pyproject.toml keeps it below them.
"""
