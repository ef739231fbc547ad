#!/usr/bin/env bash
# Installs what the interoperability tests need besides the Rust toolchain:
#   - coturn   (turnserver, turnutils_uclient) from Debian
#   - chromium (/usr/bin/chromium) from Debian, driven headless by the browser test
#   - libnss3-tools (certutil) from Debian: the browser test trusts its test CA for
#     turns: through an NSS database it makes with certutil
#   - systemd (systemd-analyze) from Debian: tests/systemd.rs verifies the unit file
#   - tests/browser/node_modules (playwright-core, pinned in tests/browser/package-lock.json)
#
# Idempotent and non-interactive: anything already present is left alone, and
# `apt-get update` runs only when a package actually has to be installed.
# Run from anywhere; expects root (or password-less sudo) for apt-get, and node >= 20 + npm.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser_dir="$repo_root/tests/browser"

log() { printf 'install-test-deps: %s\n' "$*"; }
die() { printf 'install-test-deps: error: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
export CI="${CI:-true}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root to run: $*"
  fi
}

# --- Debian packages ---------------------------------------------------------------
missing=()
if ! command -v turnserver >/dev/null 2>&1 || ! command -v turnutils_uclient >/dev/null 2>&1; then
  missing+=(coturn)
fi
if ! command -v chromium >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then
  missing+=(chromium)
fi
if ! command -v certutil >/dev/null 2>&1; then
  missing+=(libnss3-tools)
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  missing+=(systemd)
fi

apt_lists_present() {
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

apt_install() {
  as_root apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" </dev/null
}

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} by hand"
  updated=no
  if ! apt_lists_present; then
    log "apt package lists are empty; running apt-get update"
    as_root apt-get update </dev/null
    updated=yes
  fi
  if ! apt_install "${missing[@]}"; then
    [ "$updated" = yes ] && die "apt-get install ${missing[*]} failed"
    log "apt-get install failed (package lists may be stale); running apt-get update and retrying"
    as_root apt-get update </dev/null
    apt_install "${missing[@]}"
  fi
else
  log "coturn, chromium, certutil and systemd-analyze already installed"
fi

command -v turnserver >/dev/null 2>&1 || die "turnserver still missing after installing coturn"
command -v turnutils_uclient >/dev/null 2>&1 || die "turnutils_uclient still missing after installing coturn"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium still missing after installing chromium"
command -v certutil >/dev/null 2>&1 || die "certutil still missing after installing libnss3-tools"
command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze still missing after installing systemd"

# --- Node packages for tests/browser ----------------------------------------------------
command -v node >/dev/null 2>&1 || die "node not found; install Node.js >= 20 (with npm)"
command -v npm >/dev/null 2>&1 || die "npm not found; install npm"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old; playwright-core needs Node.js >= 20"

# Installed playwright-core must be the version package.json pins.
node_modules_ok() {
  (cd "$browser_dir" && node -e '
    const want = require("./package.json").dependencies["playwright-core"];
    let have;
    try { have = require("./node_modules/playwright-core/package.json").version; } catch { process.exit(1); }
    process.exit(have === want ? 0 : 1);
  ') >/dev/null 2>&1
}

if node_modules_ok; then
  log "tests/browser/node_modules already up to date"
else
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the tests use Debian's chromium; never fetch a browser.
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  if [ -f "$browser_dir/package-lock.json" ]; then
    log "running npm ci in tests/browser"
    npm ci --prefix "$browser_dir" --no-audit --no-fund --loglevel=error </dev/null
  else
    log "no package-lock.json; running npm install in tests/browser"
    npm install --prefix "$browser_dir" --no-audit --no-fund --loglevel=error </dev/null
  fi
  node_modules_ok || die "tests/browser/node_modules/playwright-core does not match package.json after npm"
fi

log "ready: $(/usr/bin/chromium --version 2>/dev/null | head -n1); coturn $(turnserver --version 2>/dev/null | head -n1 || true); playwright-core $(cd "$browser_dir" && node -p 'require("./node_modules/playwright-core/package.json").version')"
