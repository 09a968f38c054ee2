#!/usr/bin/env bash
# Fuzz the parsers that face the network (docs/fuzzing.md).
#
#   scripts/fuzz.sh list                 the targets
#   scripts/fuzz.sh run TARGET [SECONDS] fuzz one target (default 60 s); crashes land in
#                                        fuzz/artifacts/TARGET/ and fail the run
#   scripts/fuzz.sh smoke [SECONDS]      every target for SECONDS each (default 15), as CI does
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers, coverage instrumentation). This
# machine has only the stable toolchain, so RUSTC_BOOTSTRAP=1 unlocks them on stable; the
# fuzz crate builds in its own target dir, away from the workspace's.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(ws_frame wire api_body)

ensure_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)…"
    cargo install cargo-fuzz --locked --quiet
  fi
}

run_target() {
  local target=$1 seconds=$2
  local corpus=fuzz/corpus/$target
  mkdir -p "$corpus"
  if [[ $target == wire ]]; then
    cargo run --quiet --locked -p fogshell-shared --example wire_seeds -- "$corpus" >/dev/null
  fi
  local seeds=()
  [[ -d fuzz/seeds/$target ]] && seeds=(fuzz/seeds/"$target")
  echo "fuzzing $target for ${seconds}s"
  local log=fuzz/artifacts/$target.log status=0
  mkdir -p fuzz/artifacts
  # -rss_limit_mb: a decoder that allocates without bound fails here, not in production.
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
  if [[ $status -ne 0 ]]; then
    tail -n 40 "$log" >&2
    echo "FAIL: fuzz target $target found a failure (exit $status); see $log and fuzz/artifacts/$target/" >&2
    return 1
  fi
}

case ${1:-} in
  list) printf '%s\n' "${targets[@]}" ;;
  run)
    target=${2:?usage: scripts/fuzz.sh run TARGET [SECONDS]}
    [[ " ${targets[*]} " == *" $target "* ]] || { echo "unknown target $target (have: ${targets[*]})" >&2; exit 2; }
    ensure_cargo_fuzz
    run_target "$target" "${3:-60}"
    ;;
  smoke)
    ensure_cargo_fuzz
    for t in "${targets[@]}"; do run_target "$t" "${2:-15}"; done
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
