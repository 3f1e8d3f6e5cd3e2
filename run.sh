#!/usr/bin/env bash
# Release build, then the harness with "$@" (default: the whole suite). The harness picks Docker
# when an engine answers (building the node image itself), else local processes, and prints
# where the report is.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -eq 0 ]; then
  set -- --phases all
fi
exec cargo run --release -p harness -- "$@"
