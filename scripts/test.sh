#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Go: installs what the
# tests need (scripts/test-deps.sh: redis-server, the Node validators), then
# vets and runs every Go test. .ci/run calls this script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/test-deps.sh

echo "test: go vet ./..."
go vet ./...

echo "test: go test ./..."
# -count=1: never report cached results; the suite talks to real processes.
go test -count=1 -timeout 40m "$@" ./...
