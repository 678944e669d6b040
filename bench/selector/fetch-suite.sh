#!/usr/bin/env bash
# Builds the selector's task suite (13 distillation tasks from Debian and PyPI packages) into DIR:
#   bench/selector/fetch-suite.sh --out DIR [--only TASK ...]
# Installs what it reads: Debian wordnet-base, fortunes, dict-vera, unicode-data, iso-codes (apt, as
# root) and the PyPI packages num2words, inflect, vaderSentiment (pinned, into bench/selector/.venv).
# Deterministic for the same package versions; DIR/SHA256SUMS lists every file it wrote.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
packages=(wordnet-base fortunes dict-vera unicode-data iso-codes)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# The debian-section task reads the package index itself (apt-cache dumpavail): it needs fresh lists.
apt-get update -qq >&2
if ((${#missing[@]})); then
    echo "fetch-suite: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
requirements=('num2words==0.5.14' 'inflect==7.6.0' 'vaderSentiment==3.3.2')
venv=$here/.venv
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${requirements[@]}"
exec "$venv/bin/python" "$here/fetch_suite.py" "$@"
