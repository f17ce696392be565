#!/usr/bin/env bash
# The C tests of libectp: the example programs against the real library.
# Prints "ok - name", "FAIL - name" (followed by the test's log) or
# "skip - name (why)" per test, then one line "N passed, M failed"
# (", K skipped" added when some were skipped). Exits 1 if any test failed.
#
# Environment: BUILD (default build/ beside this script), KEEP=1 keeps the
# work directory, TESTS="name ..." runs only those tests (see the list at
# the bottom).
# shellcheck disable=SC2317 # the tests and helpers are called indirectly
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
B=${BUILD:-$here/build}
KEEP=${KEEP:-0}
LIMIT=40   # seconds any one process may run before it is killed

work=$(mktemp -d "${TMPDIR:-/tmp}/ectp-ctest.XXXXXX")
pids=()
passed=0
failed=0
skipped=0

cleanup() {
    stop_children
    if [[ $failed -eq 0 && $KEEP != 1 ]]; then
        rm -rf "$work"
    elif [[ -d $work ]]; then
        echo "# files kept in $work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rand_port() { echo $((20000 + RANDOM % 20000)); }

# Starts a program in the background under a time limit; its pid is in $last_pid.
start() {
    timeout -k 5 "$LIMIT" "$@" &
    last_pid=$!
    pids+=("$last_pid")
}

# Waits for a background program; its exit status is in $last_rc.
finish() {
    local pid rest=()
    last_rc=0
    wait "$1" || last_rc=$?
    for pid in "${pids[@]}"; do
        [[ $pid == "$1" ]] || rest+=("$pid")
    done
    pids=("${rest[@]}")
}

# The output file is non-empty and is exactly the input's tail.
is_tail() {   # is_tail <input> <output>
    local n
    n=$(wc -c <"$2")
    if [[ $n -eq 0 ]]; then
        echo "$2 is empty"
        return 1
    fi
    if ! tail -c "$n" "$1" | cmp -s - "$2"; then
        echo "$2 ($n bytes) is not the last $n bytes of $1"
        return 1
    fi
    echo "$2: the last $n of $(wc -c <"$1") bytes, as it should"
}

show() {   # show <file>...: a log's content, for the test's log
    local f
    for f in "$@"; do
        echo "---- $(basename "$f")"
        cat "$f" 2>/dev/null || true
    done
}

# A process exited non-zero by itself (not killed by timeout).
failed_by_itself() {
    [[ $1 -ne 0 && $1 -ne 124 && $1 -ne 137 ]]
}

expect() {   # expect <description> <command...>
    local what=$1
    shift
    if "$@"; then
        echo "ok: $what"
    else
        echo "NOT: $what"
        return 1
    fi
}

# ---- the tests; each runs in its own directory $1 and returns 0 if it passed

# (1) the demo scenario, with the shared-library programs
t_demo_shared() {
    GSERV=$B/gserv GCLNT=$B/gclnt TMPDIR=$1 "$here/demo.sh"
}

# (2) the same, with the programs linked against libectp.a
t_demo_static() {
    GSERV=$B/gserv-static GCLNT=$B/gclnt-static TMPDIR=$1 "$here/demo.sh"
}

# (3) the TO refuses every join: mjoin fails with ECONNREFUSED
t_refused_join() {
    local d=$1 port gs ok=0
    port=$(rand_port)
    head -c 300000 /dev/urandom >"$d/input"
    start "$B/gserv" -p "$port" -R join -r 200 -w 200 "$d/input" >"$d/gserv.log" 2>"$d/gserv.err"
    gs=$last_pid
    sleep 0.5
    start "$B/gclnt" -p "$port" -O "$d/tu.out" 2>"$d/tu.err"
    finish "$last_pid"
    local tu_rc=$last_rc
    finish "$gs"
    local gs_rc=$last_rc
    show "$d/gserv.err" "$d/tu.err"
    expect "gclnt exited non-zero, not killed (exit $tu_rc)" failed_by_itself "$tu_rc" || ok=1
    expect "gclnt said Connection refused" grep -q "Connection refused" "$d/tu.err" || ok=1
    expect "gserv reported the join request" grep -q "^join request: user " "$d/gserv.err" || ok=1
    expect "gserv exited 0 (exit $gs_rc)" test "$gs_rc" -eq 0 || ok=1
    return $ok
}

# (4) the TO refuses every token: mtoken_get fails with EACCES, the TU still
# receives the data and exits 0 at the end
t_refused_token() {
    local d=$1 port gs ok=0
    port=$(rand_port)
    head -c 1000000 /dev/urandom >"$d/input"
    start "$B/gserv" -p "$port" -R token -r 400 -w 500 "$d/input" >"$d/gserv.log" 2>"$d/gserv.err"
    gs=$last_pid
    sleep 0.5
    start "$B/gclnt" -p "$port" -O "$d/tu.out" -t 100 2>"$d/tu.err"
    finish "$last_pid"
    local tu_rc=$last_rc
    finish "$gs"
    local gs_rc=$last_rc
    show "$d/gserv.err" "$d/gserv.log" "$d/tu.err"
    expect "gclnt exited 0 (exit $tu_rc)" test "$tu_rc" -eq 0 || ok=1
    expect "gclnt reported the refusal (Permission denied)" \
        grep -q "mtoken_get: Permission denied" "$d/tu.err" || ok=1
    expect "gserv reported the token request" grep -q "^token request: user " "$d/gserv.err" || ok=1
    expect "gserv printed no TU message" test ! -s "$d/gserv.log" || ok=1
    expect "gserv exited 0 (exit $gs_rc)" test "$gs_rc" -eq 0 || ok=1
    is_tail "$d/input" "$d/tu.out" || ok=1
    return $ok
}

# (5) no TO: mjoin gives up (ETIMEDOUT) and gclnt exits non-zero in time
t_join_no_to() {
    local d=$1 port rc=0 t0 t1 ok=0
    port=$(rand_port)
    t0=$(date +%s%N)
    timeout -k 2 20 "$B/gclnt" -p "$port" -O "$d/tu.out" 2>"$d/tu.err" || rc=$?
    t1=$(date +%s%N)
    show "$d/tu.err"
    echo "gclnt took $(( (t1 - t0) / 1000000 )) ms"
    expect "gclnt exited non-zero, by itself (exit $rc)" failed_by_itself "$rc" || ok=1
    expect "gclnt said the join timed out" grep -q "timed out" "$d/tu.err" || ok=1
    return $ok
}

# (6) the header from C++98 and C++17
t_cxx() {
    local d=$1 std out ok=0
    for std in 98 17; do
        out=$("$B/cxx_check$std" 2>"$d/cxx$std.err")
        local rc=$?
        show "$d/cxx$std.err"
        echo "cxx_check$std: exit $rc, printed: $out"
        expect "cxx_check$std exited 0" test "$rc" -eq 0 || ok=1
        expect "cxx_check$std printed cxx_check: ok" test "$out" = "cxx_check: ok" || ok=1
    done
    return $ok
}

# (7) the input from standard input (a pipe); the TU is started first and the
# TO has a creation phase (-c), so the TU should get it all; at least it must
# get a tail of it
t_stdin() {
    local d=$1 port gs tu ok=0
    port=$(rand_port)
    head -c 300000 /dev/urandom >"$d/input"
    start "$B/gclnt" -p "$port" -O "$d/tu.out" 2>"$d/tu.err"
    tu=$last_pid
    sleep 0.3
    # shellcheck disable=SC2002 # the point is a pipe, not a file, on stdin
    cat "$d/input" | timeout -k 5 "$LIMIT" "$B/gserv" -p "$port" -c 1500 -r 200 -w 500 - \
        >"$d/gserv.log" 2>"$d/gserv.err" &
    gs=$!
    pids+=("$gs")
    finish "$tu"
    local tu_rc=$last_rc
    finish "$gs"
    local gs_rc=$last_rc
    show "$d/gserv.err" "$d/tu.err"
    expect "gclnt exited 0 (exit $tu_rc)" test "$tu_rc" -eq 0 || ok=1
    expect "gserv exited 0 (exit $gs_rc)" test "$gs_rc" -eq 0 || ok=1
    expect "gserv read all of standard input" \
        grep -q "^gserv: sent 300000 bytes in 293 messages$" "$d/gserv.err" || ok=1
    is_tail "$d/input" "$d/tu.out" || ok=1
    if cmp -s "$d/input" "$d/tu.out"; then
        echo "the TU got the whole input"
    else
        echo "note: the TU did not get the whole input (joined late?)"
    fi
    return $ok
}

# gserv -v and gclnt -v: a progress line every second, a summary at the end
t_verbose() {
    local d=$1 port tu gs ok=0
    port=$(rand_port)
    head -c 3000000 /dev/urandom >"$d/input"
    start "$B/gclnt" -v -p "$port" -O "$d/tu.out" 2>"$d/tu.err"
    tu=$last_pid
    sleep 0.3
    # 3 MB at 1000 KiB/s: about three seconds, three progress lines or so.
    start "$B/gserv" -v -q -c 300 -r 1000 -w 200 -p "$port" "$d/input" 2>"$d/gserv.err"
    gs=$last_pid
    finish "$gs"
    local gs_rc=$last_rc
    finish "$tu"
    local tu_rc=$last_rc
    show "$d/gserv.err" "$d/tu.err"
    local line='[0-9]+\.[0-9] s, [0-9]+\.[0-9]{2} MB %s, [0-9]+\.[0-9]{2} MB/s%s, repairs [0-9]+ asked [0-9]+ sent, rtt [0-9]+\.[0-9]{2} ms$'
    # shellcheck disable=SC2059 # the pattern is the format
    expect "gserv printed progress lines" \
        grep -Eq "^gserv: $(printf "$line" sent ', 1 members')" "$d/gserv.err" || ok=1
    # shellcheck disable=SC2059
    expect "gclnt printed progress lines" \
        grep -Eq "^gclnt: $(printf "$line" received '')" "$d/tu.err" || ok=1
    expect "gserv's summary has every byte" \
        grep -Eq '^gserv: summary: [0-9.]+ s, 3\.00 MB sent' "$d/gserv.err" || ok=1
    expect "gserv's summary counts the member" \
        grep -q '^gserv: summary: members 1 joined, 0 left, 0 ejected, 0 failed$' "$d/gserv.err" || ok=1
    expect "gclnt's summary has every byte" \
        grep -Eq '^gclnt: summary: [0-9.]+ s, 3\.00 MB received' "$d/tu.err" || ok=1
    expect "both exited 0 ($gs_rc, $tu_rc)" test "$gs_rc" -eq 0 -a "$tu_rc" -eq 0 || ok=1
    expect "the TU got it all" cmp -s "$d/input" "$d/tu.out" || ok=1
    return $ok
}

# ECTP_LOG: the library's log lines on standard error, and none without it
t_log() {
    local d=$1 port tu gs ok=0
    port=$(rand_port)
    head -c 20000 /dev/urandom >"$d/input"
    ECTP_LOG=info start "$B/gclnt" -q -p "$port" -O "$d/tu.out" 2>"$d/tu.err"
    tu=$last_pid
    sleep 0.3
    ECTP_LOG=info start "$B/gserv" -q -c 300 -w 100 -p "$port" "$d/input" 2>"$d/gserv.err"
    gs=$last_pid
    finish "$gs"
    finish "$tu"
    port=$(rand_port)
    start "$B/gclnt" -q -p "$port" -O "$d/tu2.out" 2>"$d/tu2.err"
    tu=$last_pid
    sleep 0.3
    ECTP_LOG=loud start "$B/gserv" -q -c 300 -w 100 -p "$port" "$d/input" 2>"$d/gserv2.err"
    gs=$last_pid
    finish "$gs"
    finish "$tu"
    show "$d/gserv.err" "$d/tu.err" "$d/gserv2.err" "$d/tu2.err"
    expect "the TO logs the connection and the join" \
        grep -Eq '^ectp: info: member [0-9]+ at 127\.0\.0\.1:[0-9]+ joined under parent 0$' "$d/gserv.err" || ok=1
    expect "the TO logs the creation" grep -q '^ectp: info: TO .* created connection' "$d/gserv.err" || ok=1
    expect "without ECTP_LOG, no log lines" sh -c "! grep -q '^ectp: ' '$d/tu2.err'" || ok=1
    expect "a bad ECTP_LOG is said once, then silence" \
        test "$(grep -c '^ectp: ' "$d/gserv2.err")" -eq 1 || ok=1
    expect "and names the levels" grep -q 'ECTP_LOG="loud" is not a level' "$d/gserv2.err" || ok=1
    return $ok
}

# (8) IPv6: the demo in a network namespace, over a veth pair
ipv6_possible() {
    [[ $(id -u) -eq 0 ]] || return 1
    command -v unshare >/dev/null || return 1
    command -v ip >/dev/null || return 1
    unshare -n sh -c 'ip link add va type veth peer name vb' >/dev/null 2>&1
}

t_ipv6() {
    local d=$1
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare -n bash -c '
        set -e
        ip link set lo up
        ip link add va type veth peer name vb
        ip link set va up
        ip link set vb up
        ip -6 addr add fd00::1/64 dev va nodad
        for _ in $(seq 50); do
            ip link show va | grep -q LOWER_UP && break
            sleep 0.1
        done
        ip -6 route show table all | grep -q "^multicast ff00::/8 dev va" \
            || ip -6 route add multicast ff00::/8 dev va table local
        exec env LOCAL=fd00::1 GROUP=ff15::ec7b "$@"
    ' ipv6 env GSERV="$B/gserv" GCLNT="$B/gclnt" TMPDIR="$d" "$here/demo.sh"
}

# The demo with a control tree: TU 1 a repair agent, TU 2 under it.
t_demo_tree() {
    TREE=1 GSERV="$B/gserv" GCLNT="$B/gclnt" TMPDIR="$1" "$here/demo.sh"
}

# (9) video: a 6 s test video streamed at its bitrate to two late TUs, each
# piped into a real decoder (ffmpeg; TU 2 into mpv when installed); each must
# decode every frame from the first keyframe after its join point
video_possible() {
    command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null
}

t_video() {
    DURATION=6 JOIN1=1 JOIN2=2.5 INSTALL=0 FRAME="$1/frame.png" GSERV="$B/gserv" GCLNT="$B/gclnt" \
        TMPDIR="$1" "$here/video-demo.sh"
}

# ---- the runner

run() {   # run <name> <function>
    local name=$1 fn=$2 dir
    dir=$work/$name
    mkdir -p "$dir"
    if "$fn" "$dir" >"$dir/log" 2>&1; then
        echo "ok - $name"
        passed=$((passed + 1))
    else
        echo "FAIL - $name"
        sed 's/^/#   /' "$dir/log"
        failed=$((failed + 1))
    fi
}

skip() {   # skip <name> <why>
    echo "skip - $1 ($2)"
    skipped=$((skipped + 1))
}

selected() {
    [[ -z ${TESTS:-} ]] && return 0
    [[ " $TESTS " == *" $1 "* ]]
}

for prog in gserv gclnt gserv-static gclnt-static cxx_check98 cxx_check17; do
    if [[ ! -x $B/$prog ]]; then
        echo "ctest: $B/$prog is missing: run make first" >&2
        exit 2
    fi
done

selected demo-shared && run demo-shared t_demo_shared
selected demo-static && run demo-static t_demo_static
selected demo-tree && run demo-tree t_demo_tree
selected refused-join && run refused-join t_refused_join
selected refused-token && run refused-token t_refused_token
selected join-no-to && run join-no-to t_join_no_to
selected cxx && run cxx t_cxx
selected stdin && run stdin t_stdin
selected verbose && run verbose t_verbose
selected log && run log t_log
if selected ipv6; then
    if ipv6_possible; then
        run ipv6 t_ipv6
    else
        skip ipv6 "needs root and unshare"
    fi
fi
if selected video; then
    if video_possible; then
        run video t_video
    else
        skip video "needs ffmpeg and ffprobe: apt-get install ffmpeg"
    fi
fi

cleanup
trap - EXIT
if [[ $skipped -gt 0 ]]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[[ $failed -eq 0 ]]
