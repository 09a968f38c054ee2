#!/usr/bin/env bash
# Brings up the all-in-one fogshell stack on this machine: a coordinator on loopback with
# SQLite, the default shell image, a local agent, and a development login. One command, from
# a fresh clone (Debian 12; as root for containers, otherwise host shells):
#
#   scripts/up.sh                 # then open the console it prints, or in another terminal:
#                                 #   target/release/fogshell-coordinator shell
#
# Extra arguments go to `fogshell-coordinator up` (see its --help). Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --run
echo "building the console…"
scripts/build-console.sh
echo "building fogshell (release; the first build takes a few minutes)…"
cargo build --release --locked --bins -p fogshell-coordinator -p fogshell-agent
images/build.sh >/dev/null
exec target/release/fogshell-coordinator up --image-layout images/out/default "$@"
