#!/usr/bin/env bash
# Builds the browser console into console/dist (npm ci from the committed lockfile, then
# esbuild), which the coordinator embeds when it is compiled. scripts/up.sh and
# scripts/test.sh run it before building the coordinator.
set -euo pipefail
cd "$(dirname "$0")/../console"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
