#!/usr/bin/env bash
# The gateway benchmark: direct vs floor vs Retort vs LiteLLM, one command.
#
#   bench/gateway/run.sh            full run (~10 min): writes bench/results/gateway.md and gateway.json
#   bench/gateway/run.sh --smoke    a few seconds, no LiteLLM: writes bench/out/gateway-smoke.md
#
# Any other arguments go to the `bench` binary (e.g. --soak-secs 60; see `bench --help`).
# LITELLM_SPEC overrides the pip requirement LiteLLM is installed from.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/bench/.venv-litellm"
spec="${LITELLM_SPEC:-litellm[proxy]}"

smoke=0
for a in "$@"; do
  [[ "$a" == "--smoke" ]] && smoke=1
done

cd "$root"
cargo build --release -p retort -p retort-sim -p retort-bench-gateway

target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo "$root/target")"
bench="$target_dir/release/bench"

extra=()
if [[ $smoke -eq 0 ]]; then
  if [[ ! -x "$venv/bin/litellm" ]]; then
    echo "[run.sh] creating the LiteLLM venv at $venv (a few minutes)" >&2
    mkdir -p "$root/bench/out"
    log="$root/bench/out/litellm-install.log"
    if { python3 -m venv "$venv" \
      && "$venv/bin/pip" install --upgrade pip \
      && "$venv/bin/pip" install "$spec"; } >"$log" 2>&1; then
      echo "[run.sh] LiteLLM installed: $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')" >&2
    else
      why="$(grep -E 'ERROR|Error' "$log" | tail -n 1 | cut -c1-300)"
      echo "[run.sh] LiteLLM could not be installed ($why); the bench runs without it" >&2
      extra+=(--note "pip install '$spec' failed: ${why:-see bench/out/litellm-install.log}")
    fi
  fi
  extra+=(--litellm --litellm-venv "$venv")
fi

exec "$bench" "${extra[@]}" "$@"
