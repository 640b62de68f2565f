# The kaas agent image (agents/ alone, the kaas-agent distribution): what runs in every user cluster.
# Build from the repository's root:  buildah build -f deploy/images/agent.Dockerfile -t kaas/kaas-agent:0.1.0 .
# Its Deployment (deploy/agent/deployment.yaml) mounts the config at /etc/kaas/agent.yaml.

# --- build: the agent's wheel installed into a venv, with the Python the runtime image has (Debian 12's 3.11)
FROM docker.io/library/debian:12.11-slim AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY agents/ /src/agents/
COPY deploy/images/install.sh /usr/local/bin/kaas-install
RUN kaas-install /opt/kaas-agent /src/agents

# --- run: distroless (no shell, no package manager), numeric non-root user, read-only root filesystem
FROM gcr.io/distroless/python3-debian12:nonroot
# checkov:skip=CKV_DOCKER_2:Kubernetes probes check the process; a HEALTHCHECK would need a shell or curl
COPY --from=build /opt/kaas-agent /opt/kaas-agent
ENV PATH=/opt/kaas-agent/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["/opt/kaas-agent/bin/kaas-agent"]
CMD ["--config", "/etc/kaas/agent.yaml"]
