# The kaas server image: one image, five entry points (the Deployments and the Job pick one by their args):
#   kaas api --host 0.0.0.0 --port 8000 | kaas worker --region R ... | kaas beat | kaas tunnel | kaas db upgrade
# Build from the repository's root:  buildah build -f deploy/images/server.Dockerfile -t kaas/kaas:0.1.0 .
# Settings come from KAAS_* environment variables (kaas_core.settings); see deploy/README.md.

# --- build: wheels of kaas installed into a venv, with the Python the runtime image has (Debian 12's 3.11)
FROM docker.io/library/debian:12.11-slim AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kaas_core/ kaas_core/
COPY kaas_api/ kaas_api/
COPY provider/ provider/
COPY kaas_tunnel/ kaas_tunnel/
COPY kaas_cli/ kaas_cli/
COPY agents/ agents/
COPY deploy/agent/ deploy/agent/
COPY deploy/images/install.sh /usr/local/bin/kaas-install
RUN kaas-install /opt/kaas /src

# --- run: distroless (no shell, no package manager), numeric non-root user, nothing written but /tmp
FROM gcr.io/distroless/python3-debian12:nonroot
# checkov:skip=CKV_DOCKER_2:Kubernetes probes check the processes (deploy/kustomize); a HEALTHCHECK would need a shell or curl
COPY --from=build /opt/kaas /opt/kaas
ENV PATH=/opt/kaas/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/opt/kaas/bin/kaas"]
CMD ["--help"]
