#!/usr/bin/env bash
# Fuzz the packet parser and whole TO and TU nodes (fuzz/, cargo-fuzz on the
# nightly toolchain) for SECONDS each (default 20: the bounded run of CI).
#   tools/fuzz.sh            # CI: 20 s per target
#   tools/fuzz.sh 3600       # an hour per target
#   tools/fuzz.sh 600 owner  # one target
# Starts from the corpus committed in fuzz/corpus/<target> and adds what it
# finds there (commit it when it grew usefully: `cargo +nightly fuzz cmin`).
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script;
# replay it with `cargo +nightly fuzz run <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse owner user)

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz $t for ${secs}s"
    # -timeout: an input that takes 10 s is a failure (a node must never loop).
    set +e
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -timeout=10 >"$log" 2>&1
    rc=$?
    set -e
    grep -E '^(#[0-9]+ *DONE|Done |==[0-9]+== ERROR|SUMMARY|thread .* panicked)' "$log" || true
    if [ $rc -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz $t: FAILED (exit $rc); a crashing input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzz: every target ran ${secs}s without a failure"
