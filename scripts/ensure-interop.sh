#!/usr/bin/env bash
# Installs the independent implementations the interop tests run against (tests/interop):
# node-opcua from npm into tests/interop/node_modules, at the versions of tests/interop/package-lock.json.
# Needs node and npm (scripts/ensure-system-deps.sh installs them). Does nothing when already installed.
set -euo pipefail
cd "$(dirname "$0")/../tests/interop"
stamp=node_modules/.package-lock.json
if [ -f "$stamp" ] && [ "$stamp" -nt package-lock.json ]; then exit 0; fi
echo "installing node-opcua for the interop tests (npm ci in tests/interop)"
npm ci --no-audit --no-fund --loglevel=error
