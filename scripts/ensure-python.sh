#!/usr/bin/env bash
# Ensure .venv (repo root) has torch 2.13.0+cpu, transformers 5.x and huggingface_hub >=1.5,<2 for the tests
# that check our output with the real Python libraries. Idempotent: does nothing when they already import.
# pip uses the preconfigured local wheel index (pip.conf); --retries 0 because the default index is offline.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="$venv/bin/python"
packages=('torch==2.13.0+cpu' 'transformers>=5' 'huggingface_hub>=1.5,<2' 'gguf' 'joblib')

log() { printf 'ensure-python: %s\n' "$*" >&2; }

check() {
  [ -x "$py" ] || return 1
  "$py" - <<'EOF' 2>/dev/null
import re, sys
from importlib.metadata import version
import torch, transformers, huggingface_hub  # noqa: F401  (must import, not just be listed)
import gguf, joblib  # noqa: F401  (content-analysis tests: a real GGUF writer, compressed joblib)

def parts(v):
    return tuple(int(m.group()) for m in (re.match(r"\d+", p) for p in v.split("+")[0].split(".")) if m)

ok = (
    version("torch") == "2.13.0+cpu"
    and parts(version("transformers")) >= (5,)
    and (1, 5) <= parts(version("huggingface_hub")) < (2,)
)
sys.exit(0 if ok else 1)
EOF
}

# Serialise concurrent runs (e.g. parallel test jobs) on one lock file next to the venv.
# The lock lives inside .venv (git-ignored); `python3 -m venv` accepts the existing directory.
if command -v flock >/dev/null 2>&1; then
  mkdir -p "$venv"
  exec 9>"$venv/.ensure-python.lock"
  flock 9
fi

if check; then
  log "$venv is ready (torch, transformers, huggingface_hub import); nothing to do"
  exit 0
fi

if [ ! -x "$py" ]; then
  command -v python3 >/dev/null 2>&1 || { log "python3 not found on PATH"; exit 1; }
  log "creating $venv with $(python3 --version 2>&1)"
  python3 -m venv "$venv"
fi

log "installing ${packages[*]} into $venv"
"$py" -m pip install --retries 0 "${packages[@]}" >&2 || {
  log "pip install failed (is the local wheel index in pip.conf reachable?)"
  exit 1
}

if ! check; then
  log "packages installed but the version/import check still fails:"
  "$py" -c 'import torch, transformers, huggingface_hub; print(torch.__version__, transformers.__version__, huggingface_hub.__version__)' >&2 || true
  exit 1
fi
log "$venv is ready"
