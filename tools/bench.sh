#!/usr/bin/env bash
# Build and run the throughput benchmark (examples/bench.rs); the arguments go
# to it. See tools/README.md. Examples:
#   tools/bench.sh matrix --net lo --tus 1,4 --tco flat,tree --bytes 16M
#   sudo tools/bench.sh matrix --net ns --tus 2 --loss 0,5 --tco flat --bytes 32M
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example bench >&2
exec target/release/examples/bench "$@"
