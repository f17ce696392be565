#!/usr/bin/env bash
# Every test of the project, as CI runs it (see README.md):
#   1. the Rust unit tests, the protocol simulation and the integration tests
#      over real sockets (the IPv6 ones re-run themselves in a private network
#      namespace when run as root, and skip otherwise); then every simulated
#      scenario again on a keyed connection (ECTP_SIM_KEY);
#   2. the C programs and C tests (c-examples/ctest.sh), against both
#      libectp.so and libectp.a.
# The last line sums everything up as "all: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use, installed by the project itself.
need=()
for tool in cc:gcc c++:g++ make:make ip:iproute2 unshare:util-linux iptables:iptables \
            ffmpeg:ffmpeg groff:groff-base tshark:tshark cmake:cmake pkg-config:pkg-config; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
# Qt 6 for CMake (the Qt example): qt6-base-dev has no program to look for.
compgen -G '/usr/lib/*/cmake/Qt6Core/Qt6CoreConfig.cmake' >/dev/null || need+=(qt6-base-dev)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    # tshark's wireshark-common asks whether non-root users may capture: no.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections 2>/dev/null || true
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
cargo test --all-targets --no-fail-fast 2>&1 | tee "$log" || status=1
ECTP_SIM_KEY=1 cargo test --lib proto:: 2>&1 | tee -a "$log" || status=1
make -C c-examples test 2>&1 | tee -a "$log" || status=1

passed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) n += $i } END { print n + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^failed/) n += $i } END { print n + 0 }' "$log")
cpass=$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed.*/\1/p' "$log" | tail -1)
cfail=$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed.*/\2/p' "$log" | tail -1)
total_pass=$(( ${passed:-0} + ${cpass:-0} ))
total_fail=$(( ${failed:-0} + ${cfail:-0} ))
[ "$total_fail" -eq 0 ] || status=1
echo "all: $total_pass passed, $total_fail failed"
exit $status
