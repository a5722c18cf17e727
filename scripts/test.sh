#!/usr/bin/env bash
# The whole test suite, setting up what it needs itself: node modules, the build, the standard tools
# (gpg, GNU tar, sha256sum) and the Python venv with huggingface_hub, transformers and CPU torch
# that the interop tests load models with. Pass test files to run a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci
npm run build --silent
bash scripts/ensure-tools.sh
bash scripts/ensure-python.sh
npx tsc -p test/tsconfig.json --noEmit
# The whole suite also lints (ESLint + typescript-eslint, type-aware; zero warnings): a subset run skips it.
if [ "$#" -eq 0 ]; then npm run lint --silent; fi
if [ "$#" -gt 0 ]; then files=("$@"); else files=(test/unit/*.test.ts test/e2e/*.test.ts); fi
exec node --import tsx --test --test-concurrency=2 --test-reporter=spec "${files[@]}"
