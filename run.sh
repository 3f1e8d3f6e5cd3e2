#!/usr/bin/env bash
# Build once (release), then run the harness with "$@" (default: the whole suite).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release -p cluster -p harness
exec ./target/release/harness --cluster-bin ./target/release/cluster "$@"
