#!/usr/bin/env bash
# The web client's tests: unit tests under node, then end-to-end tests in
# Debian's headless Chromium against the real launcher (target/debug/meetease).
#
#   web/tests/run.sh                  build the launcher, install what is missing, run everything
#   web/tests/run.sh e2e/pages.test.mjs   only some test files
#   UPDATE_SCREENSHOTS=1 web/tests/run.sh  also refresh docs/screenshots/*.png
#
# It installs Chromium (apt), playwright-core (npm ci) and the OpenID provider of
# auth's tests (npm ci in auth/tests/oidc) when missing; it never
# downloads a browser of its own.
set -euo pipefail
cd "$(dirname "$0")"
repo="$(cd ../.. && pwd)"

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\nweb/tests/run.sh: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null || die "node is not installed (apt-get install -y nodejs npm)"
if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  say "installing chromium"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
    || die "could not install chromium"
fi

if [ -z "${MEETEASE_BIN:-}" ] && [ "${SKIP_CARGO_BUILD:-0}" != 1 ]; then
  say "cargo build -p meetease"
  (cd "$repo" && cargo build -p meetease --locked)
fi

say "npm ci (web/tests)"
npm ci --no-audit --no-fund --loglevel=error

# e2e/oauth.test.mjs runs auth's test OpenID provider (oidc-provider, from its lockfile).
if [ ! -f "$repo/auth/tests/oidc/node_modules/oidc-provider/package.json" ]; then
  say "npm ci (auth/tests/oidc)"
  (cd "$repo/auth/tests/oidc" && npm ci --no-audit --no-fund --loglevel=error) \
    || die "could not install auth/tests/oidc's npm packages (npm ci in auth/tests/oidc)"
fi

say "web client tests"
if [ $# -gt 0 ]; then
  node --test --test-concurrency=1 "$@"
else
  node --test --test-concurrency=1 unit/ e2e/
fi
