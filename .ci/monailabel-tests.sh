#!/usr/bin/env bash
# The MONAI Label tests (tests/monailabel/): builds .venv-monailabel/ when it is missing (.ci/monailabel-env.sh),
# then runs them in it: both bundles in the repository's app (monailabel/lesionseg_app), in-process and through
# a real server started by monailabel/start.sh on 127.0.0.1. About 1.5 minutes on 2 CPU cores once the environment exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/monailabel-env.sh
echo "+ .venv-monailabel/bin/python -m pytest -q tests/monailabel"
exec .venv-monailabel/bin/python -m pytest -q tests/monailabel
