#!/usr/bin/env bash
# The whole test suite: installs what the interop tests need (coturn, Chromium,
# playwright-core), then runs every test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-test-deps.sh
cargo test --locked "$@"
