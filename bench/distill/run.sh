#!/usr/bin/env bash
# The distillation bench (results: bench/results/distill.md): SpamAssassin classification, then short
# generation (synthetic date normalisation, seq2seq students; no download).
#   bench/distill/run.sh [extra retort-bench-distill arguments, e.g. --students linear/small,mlp/tiny,
#                         --sections generation, --gen-students seq2seq/tiny,seq2seq/small]
# Fetches the corpus with `retort data fetch-spam` (once), installs scikit-learn for the baseline into
# bench/distill/.venv (once), then runs the bench and writes bench/out/distill.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
data=bench/out/spam
if [[ ! -f $data/teacher.jsonl ]]; then
    cargo run -q -p retort -- data fetch-spam --out "$data"
fi
venv=bench/distill/.venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import sklearn' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet scikit-learn
fi
cargo run -q -p retort-bench-distill -- --data "$data" --python "$venv/bin/python" --out bench/out/distill.md "$@"
