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
    if [[ -n ${qt_netns:-} ]]; then
        ip netns del "$qt_netns" 2>/dev/null || true
    fi
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

# (8) IPv6: the demo in a network namespace, over a veth pair
ipv6_possible() {
    [[ $(id -u) -eq 0 ]] || return 1
    command -v unshare >/dev/null || return 1
    command -v ip >/dev/null || return 1
    unshare -n sh -c 'ip link add va type veth peer name vb' >/dev/null 2>&1
}

netns_possible() {
    [[ $(id -u) -eq 0 ]] || return 1
    command -v ip >/dev/null || return 1
    local ns=ectp-probe-$$-$RANDOM
    ip netns add "$ns" >/dev/null 2>&1 || return 1
    ip netns del "$ns" >/dev/null 2>&1
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

# The Qt example (qt/): configured and built here, with -Werror.
qt_src=$here/qt
qt_bin=$work/qt-build/qtclnt

# cmake finds Qt 6 (Core): a throwaway project, so that a missing Qt is a
# skip and any other trouble with the example a failure.
qt6_found() {
    local probe=$work/qt6-probe
    mkdir -p "$probe"
    printf '%s\n' 'cmake_minimum_required(VERSION 3.16)' 'project(qt6_probe LANGUAGES CXX)' \
        'find_package(Qt6 REQUIRED COMPONENTS Core)' >"$probe/CMakeLists.txt"
    cmake -S "$probe" -B "$probe/build" >"$probe/log" 2>&1
}

qt_build() {   # builds $qt_bin once; prints the build's output
    [[ -x $qt_bin ]] && return 0
    cmake -S "$qt_src" -B "$work/qt-build" -DECTP_QT_WERROR=ON && cmake --build "$work/qt-build"
}

wait_for_line() {   # wait_for_line <file> <regex> <seconds>: 0 once it is there
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no line matching '$2' in $1 after $3 s"
    return 1
}

qt_user_id() {   # the id a qtclnt reported
    sed -n 's/^qtclnt: joined as user \([0-9]*\)$/\1/p;T;q' "$1"
}

# (9) the Qt TU against gserv: A takes a token 300 ms after joining and sends
# two messages, then runs to the end of the connection (exit 0, output the
# tail of the input); B leaves after 800 ms (-x: exit 0, the TO saw it
# leave); E gets SIGINT (exit 130, the TO saw it leave); C's TO is killed
# (exit 3, ECONNRESET). Every program runs under the
# command prefix in the array qt_pre (empty, or ip netns exec NAME).
qt_pre=()
qt_scenario() {   # qt_scenario <dir> <owner> <group>
    local d=$1 owner=$2 group=$3 port port2 gs gs2 a b c e ok=0
    qt_build || return 1
    port=$(rand_port)
    port2=$(( port == 39999 ? 20000 : port + 1 ))
    head -c 2000000 /dev/urandom >"$d/input"
    start "${qt_pre[@]}" "$B/gserv" -l "$owner" -g "$group" -p "$port" -r 500 -w 1500 \
        "$d/input" >"$d/gserv.log" 2>"$d/gserv.err"
    gs=$last_pid
    # A TO that is killed (SIGKILL) once C has joined, for C. Not under
    # timeout: $! is gserv itself (ip netns exec execs it); it ends by
    # itself after 7 s anyway. Bash notes the kill in the log ("Killed").
    "${qt_pre[@]}" "$B/gserv" -l "$owner" -g "$group" -p "$port2" -r 300 -H 100 -F 3 \
        "$d/input" >"$d/gserv2.log" 2>"$d/gserv2.err" &
    gs2=$!
    pids+=("$gs2")
    sleep 0.5
    start "${qt_pre[@]}" "$qt_bin" -l "$owner" -g "$group" -p "$port" -O "$d/a.out" -t 300 \
        -T "hello from Qt,,second message" 2>"$d/a.err"
    a=$last_pid
    start "${qt_pre[@]}" "$qt_bin" -l "$owner" -g "$group" -p "$port" -O "$d/b.out" -x 800 \
        2>"$d/b.err"
    b=$last_pid
    start "${qt_pre[@]}" "$qt_bin" -l "$owner" -g "$group" -p "$port2" -O "$d/c.out" 2>"$d/c.err"
    c=$last_pid
    # --foreground: timeout passes a SIGINT on to qtclnt only, not also to its
    # process group, which would make it two, and qtclnt dies of the second.
    timeout --foreground -k 5 "$LIMIT" "${qt_pre[@]}" "$qt_bin" -l "$owner" -g "$group" \
        -p "$port" -O "$d/e.out" 2>"$d/e.err" &
    e=$!
    pids+=("$e")
    # SIGINT to E once it has joined; SIGKILL to C's TO once C has joined.
    wait_for_line "$d/e.err" '^qtclnt: joined as user ' 20
    kill -INT "$e"
    wait_for_line "$d/c.err" '^qtclnt: joined as user ' 20
    kill -KILL "$gs2"
    finish "$e"
    local e_rc=$last_rc
    finish "$a"
    local a_rc=$last_rc
    finish "$b"
    local b_rc=$last_rc
    finish "$c"
    local c_rc=$last_rc
    finish "$gs"
    local gs_rc=$last_rc
    finish "$gs2"
    show "$d/gserv.err" "$d/gserv.log" "$d/a.err" "$d/b.err" "$d/e.err" "$d/gserv2.err" "$d/c.err"
    local ida idb ide
    ida=$(qt_user_id "$d/a.err")
    idb=$(qt_user_id "$d/b.err")
    ide=$(qt_user_id "$d/e.err")
    expect "gserv exited 0 (exit $gs_rc)" test "$gs_rc" -eq 0 || ok=1
    expect "TU A exited 0 (exit $a_rc)" test "$a_rc" -eq 0 || ok=1
    expect "TU A printed its user id (${ida:-none})" test -n "$ida" || ok=1
    is_tail "$d/input" "$d/a.out" || ok=1
    expect "TU A got and returned a token" grep -q "^qtclnt: returned token$" "$d/a.err" || ok=1
    expect "gserv printed TU A's first message" \
        grep -Eq "^TU ${ida:-x} \\(token [0-9]+\\) says: hello from Qt$" "$d/gserv.log" || ok=1
    expect "gserv printed TU A's second message" \
        grep -Eq "^TU ${ida:-x} \\(token [0-9]+\\) says: second message$" "$d/gserv.log" || ok=1
    expect "gserv printed no other TU message (the empty item was skipped)" \
        test "$(grep -c 'says:' "$d/gserv.log")" -eq 2 || ok=1
    expect "TU B exited 0 after -x (exit $b_rc)" test "$b_rc" -eq 0 || ok=1
    expect "TU B wrote data before leaving" test -s "$d/b.out" || ok=1
    expect "gserv reported that TU B (${idb:-none}) left" \
        grep -q "^user ${idb:-x} left$" "$d/gserv.err" || ok=1
    expect "TU E exited 130 after SIGINT (exit $e_rc)" test "$e_rc" -eq 130 || ok=1
    expect "TU E left by itself (it printed its summary)" \
        grep -q "^qtclnt: [0-9]* messages, " "$d/e.err" || ok=1
    expect "gserv reported that TU E (${ide:-none}) left" \
        grep -q "^user ${ide:-x} left$" "$d/gserv.err" || ok=1
    expect "TU C exited 3 when its TO died (exit $c_rc)" test "$c_rc" -eq 3 || ok=1
    expect "TU C reported ECONNRESET" \
        grep -q "^qtclnt: mrecvmsg: Connection reset by peer" "$d/c.err" || ok=1
    return $ok
}

t_qt() {
    qt_pre=()
    qt_scenario "$1" 127.0.0.1 239.255.10.10
}

# The same over IPv6, in a named network namespace over a veth pair (see
# t_ipv6); cleanup() deletes it if the test is interrupted.
qt_netns=
t_qt_ipv6() {
    local rc=0
    qt_netns=ectp-qt-$$-$RANDOM
    ip netns add "$qt_netns" || return 1
    # shellcheck disable=SC2016 # expanded by the inner shell
    ip netns exec "$qt_netns" bash -c '
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
    ' || rc=1
    if [[ $rc -eq 0 ]]; then
        qt_pre=(ip netns exec "$qt_netns")
        qt_scenario "$1" fd00::1 ff15::ec7b || rc=1
        qt_pre=()
    fi
    ip netns del "$qt_netns" || rc=1
    qt_netns=
    return $rc
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
if selected ipv6; then
    if ipv6_possible; then
        run ipv6 t_ipv6
    else
        skip ipv6 "needs root and unshare"
    fi
fi
if selected qt || selected qt-ipv6; then
    if ! command -v cmake >/dev/null 2>&1; then
        qt_missing="needs cmake"
    elif ! qt6_found; then
        qt_missing="needs Qt 6 for CMake: qt6-base-dev"
    else
        qt_missing=
    fi
    if selected qt; then
        if [[ -z $qt_missing ]]; then run qt t_qt; else skip qt "$qt_missing"; fi
    fi
    if selected qt-ipv6; then
        if [[ -n $qt_missing ]]; then
            skip qt-ipv6 "$qt_missing"
        elif ! netns_possible; then
            skip qt-ipv6 "needs root and ip netns"
        else
            run qt-ipv6 t_qt_ipv6
        fi
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
