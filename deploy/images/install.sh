#!/bin/sh
# Build wheels of the given source folders and install them, with their dependencies from PyPI, into a new
# virtual environment. The one install step of both images (server.Dockerfile, agent.Dockerfile) and
# of the test that stands in for an image build where none can run (tests/deploy/test_images.py).
#   install.sh VENV SOURCE [SOURCE...]
set -eu
venv=$1
shift
wheels=$(mktemp -d)
python3 -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet --upgrade pip
# --no-deps: only our own distributions become wheels here; their dependencies come from the index below
"$venv/bin/pip" wheel --no-cache-dir --disable-pip-version-check --quiet --no-deps --wheel-dir "$wheels" "$@"
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet "$wheels"/*.whl
# nothing of pip is needed at run time, and an image without it has less to patch
"$venv/bin/pip" uninstall --yes --quiet pip
rm -rf "$wheels"
