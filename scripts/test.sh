#!/usr/bin/env bash
# Runs every fogshell check and test, as CI does (.ci/run calls exactly this):
# prerequisites, formatting, lints, a short fuzzing pass over each network parser, then every
# test in the workspace. Run as root: the container tests need it. Tests that need root or a
# service fail loudly when it is missing; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/test.sh runs the container tests, which need root: run it as root (CI does)" >&2
  exit 1
fi

step "prerequisites"
scripts/install-deps.sh
# Room to build and run in, for whoever reads a failed run's log.
df -h . /tmp | sed 's/^/    /'

step "build the console (npm ci from the lockfile; the coordinator embeds it)"
scripts/build-console.sh

step "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the binaries the end-to-end tests start"
cargo build --workspace --bins --locked

step "fuzz every network parser briefly (scripts/fuzz.sh; longer runs: docs/fuzzing.md)"
scripts/fuzz.sh smoke "${FOGSHELL_FUZZ_SECONDS:-15}"

step "build the default shell image the container tests run (images/build.sh)"
images/build.sh

step "doc tests"
cargo test --workspace --doc --locked

step "tests"
cargo nextest run --workspace --locked --no-fail-fast
