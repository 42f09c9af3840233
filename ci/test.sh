#!/usr/bin/env bash
# The project's test command: every test, with real clang/lld, a real BuildGrid server and a
# real kernel tree. Needs the packages .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/buildgrid.sh install
cargo test --workspace --release
