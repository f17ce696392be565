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

netns_possible() {
    [[ $(id -u) -eq 0 ]] || return 1
    command -v ip >/dev/null || return 1
    local ns=ectp-probe-$$-$RANDOM
    ip netns add "$ns" >/dev/null 2>&1 || return 1
    ip netns del "$ns" >/dev/null 2>&1
}

# Run in a fresh network namespace (bash -c): lo up, a veth pair va/vb with
# fd00::1 on va, and IPv6 multicast routed by va.
# shellcheck disable=SC2016 # expanded by the inner shell
V6_SETUP='
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
'

t_ipv6() {
    local d=$1
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare -n bash -c "$V6_SETUP"'
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

# (10) the Wireshark dissector (tools/wireshark/ectp.lua): real traffic of a
# tree connection and of a keyed one captured on lo in a network namespace
# (dissector_capture.sh), plus malformed datagrams; tshark decodes it and
# every packet type seen must come out with its fields, every malformed
# datagram as malformed, and nothing as a Lua error.
dissector_possible() {
    [[ $(id -u) -eq 0 ]] || { echo "needs root to capture"; return 1; }
    command -v tshark >/dev/null || { echo "needs tshark"; return 1; }
    command -v dumpcap >/dev/null || { echo "needs dumpcap"; return 1; }
    command -v ip >/dev/null || { echo "needs ip"; return 1; }
    unshare -n true 2>/dev/null || { echo "needs unshare -n"; return 1; }
}

# PDML (tshark -T pdml) -> one line per ECTP packet (a UDP GSO message gives
# several): tab-separated key=value, keys frame, outer (the frame's IP
# protocol), dst, sport, dport, seg, then the ectp.* fields without "ectp."
# (bytes as hex; repeated fields joined by ","), malformed (the reasons),
# bug (a dissector error).
dissector_records() {
    awk '
    function attr(s, k,   i, r) {
        i = index(s, " " k "=\"")
        if (i == 0) return ""
        r = substr(s, i + length(k) + 3)
        return substr(r, 1, index(r, "\"") - 1)
    }
    function put(k, v) {
        if (k in seen) rec[k] = rec[k] "," v
        else { seen[k] = 1; keys[++nk] = k; rec[k] = v }
    }
    function flush(   i, line) {
        if (!open) return
        line = "frame=" frame "\touter=" outer "\tdst=" dst "\tsport=" sport "\tdport=" dport "\tseg=" seg
        for (i = 1; i <= nk; i++) line = line "\t" keys[i] "=" rec[keys[i]]
        print line
        open = 0
    }
    function reset(   k) { for (k in rec) delete rec[k]; for (k in seen) delete seen[k]; nk = 0 }
    /^<packet>/ { flush(); frame = outer = dst = sport = dport = ""; seg = 0; next }
    /<proto name="ectp"/ { flush(); reset(); open = 1; seg++; next }
    /<field name="num"/ && frame == "" { frame = attr($0, "show"); next }
    /<field name="ip.proto"/ && outer == "" { outer = attr($0, "show") }
    /<field name="ip.dst"/ && dst == "" { dst = attr($0, "show") }
    /<field name="udp.srcport"/ && sport == "" { sport = attr($0, "show") }
    /<field name="udp.dstport"/ && dport == "" { dport = attr($0, "show") }
    !open { next }
    /<field name="ectp.malformed"/ { v = attr($0, "showname"); sub(/^Malformed ECTP packet: /, "", v); put("malformed", v); next }
    /<field name="ectp.dissector_bug"/ { put("bug", attr($0, "showname")); next }
    /<field name="ectp\./ {
        n = attr($0, "name"); sub(/^ectp\./, "", n)
        if (n ~ /^(data|ciphertext|padding|undecoded|key\.salt|key\.public|auth\.tag|ack\.bitmap)$/) put(n, attr($0, "value"))
        else put(n, attr($0, "show"))
    }
    END { flush() }
    '
}

not() { ! "$@"; }

t_dissector() {
    local d=$1 port kport lua tu1 tu2 tu3 tu4 tok mss n name rc ok=0
    lua=$(cd "$here/.." && pwd)/tools/wireshark/ectp.lua
    port=$(rand_port)
    kport=$((port + 1))
    if ! unshare -n "$here/dissector_capture.sh" "$B" "$d" "$port" "$kport" >"$d/capture.log" 2>&1; then
        show "$d/capture.log" "$d/dumpcap.err"
        echo "NOT: the capture ran"
        return 1
    fi
    show "$d/rc" "$d/gserv.err" "$d/gserv_keyed.err" "$d/tu1.err" "$d/tu2.err" "$d/tu3.err" "$d/tu4.err"
    while read -r name rc; do
        expect "$name exited 0 (exit $rc)" test "$rc" -eq 0 || ok=1
    done <"$d/rc"
    is_tail "$d/input" "$d/tu1.out" || ok=1
    expect "TU 3 (keyed, creation phase) got all of input2" cmp -s "$d/input2" "$d/tu3.out" || ok=1
    is_tail "$d/input2" "$d/tu4.out" || ok=1
    tu1=$(sed -n 's/^gclnt: joined as user //p' "$d/tu1.err")
    tu2=$(sed -n 's/^gclnt: joined as user //p' "$d/tu2.err")
    tu3=$(sed -n 's/^gclnt: joined as user //p' "$d/tu3.err")
    tu4=$(sed -n 's/^gclnt: joined as user //p' "$d/tu4.err")
    tok=$(sed -n 's/^gclnt: got token //p' "$d/tu1.err")
    mss=$(sed -n 's/.* mss=\([0-9]*\).*/\1/p' "$d/tu1.err")
    echo "users: tu1 $tu1 tu2 $tu2 tu3 $tu3 tu4 $tu4, token $tok, mss $mss"

    # The group port of the tree connection is the preference; everything
    # else (the keyed connection, the tree's packets between TUs) is found by
    # the heuristic, tried first.
    local ts=(tshark -r "$d/cap.pcapng" -X "lua_script:$lua" -o "ectp.udp_port:$port"
              -o udp.try_heuristic_first:TRUE)
    n=0
    "${ts[@]}" -T pdml >"$d/cap.pdml" 2>"$d/tshark.err" || n=$?
    show "$d/tshark.err"
    expect "tshark -T pdml exited 0 (exit $n)" test "$n" -eq 0 || ok=1
    "${ts[@]}" >"$d/cap.txt" 2>>"$d/tshark.err" || ok=1
    expect "no Lua error from tshark" \
        not grep -qi "lua error" "$d/tshark.err" "$d/cap.pdml" "$d/cap.txt" || ok=1
    expect "no dissector internal error" \
        not grep -q "ectp.dissector_bug\|dissector internal error" "$d/cap.pdml" "$d/cap.txt" || ok=1
    dissector_records <"$d/cap.pdml" >"$d/records"
    echo "$(wc -l <"$d/records") ECTP packets decoded in $(grep -c '^<packet>' "$d/cap.pdml") frames;" \
        "$(grep -c 'UDP GSO' "$d/cap.txt") frames were UDP GSO messages of several packets"

    awk -F '\t' -v port="$port" -v kport="$kport" -v tu1="$tu1" -v tu2="$tu2" -v tu3="$tu3" \
        -v tu4="$tu4" -v tok="$tok" -v mss="$mss" -v d="$d" '
    function load(   i, kv, p) {
        for (k in R) delete R[k]
        for (i = 1; i <= NF; i++) { p = index($i, "="); R[substr($i, 1, p - 1)] = substr($i, p + 1) }
    }
    function has(k) { return (k in R) && R[k] != "" }
    function check(what, cond) { if (cond) print "ok: " what; else { print "NOT: " what; bad = 1 } }
    function count(what, n, total) { check(what " (" n " of " total ")", total > 0 && n == total) }
    function class(   c) {
        if ((R["outer"] + 0) == 1) return "icmp"          # quoted in an ICMP error
        if (R["dst"] == "127.0.0.2") return "inj"
        # By the connection id; by the group port only for the LJR (id 0): the
        # ephemeral port of a TU may be the group port of the other connection.
        if (R["connid"] == tcid) return "tree"
        if (R["connid"] == kcid) return "keyed"
        if (R["sport"] == port || R["dport"] == port) return "tree"
        if (R["sport"] == kport || R["dport"] == kport) return "keyed"
        return "other"
    }
    NR == FNR {
        load()
        if ((R["type"] + 0) == 1 && R["sport"] == port) tcid = R["connid"]
        if ((R["type"] + 0) == 1 && R["sport"] == kport) kcid = R["connid"]
        next
    }
    {
        load(); c = class(); t = R["type_name"]
        if (c == "icmp") next
        if (c == "inj") {
            if (R["dport"] == port) { ninj++; inj[ninj] = R["malformed"]; injtype[ninj] = R["type_name"] }
            else {
                nheur++
                if (t == "CTR" && !has("malformed")) heur_ctr++
                if (t == "LJC" && !has("malformed") && R["addr.family"] == 6 && R["addr.ipv6"] == "fd00::1" && R["addr.port"] == 8080 && R["f"] == 1) heur_ljc++
            }
            next
        }
        seen[c, t]++; total[c]++
        if (!(c SUBSEP t in listed)) { listed[c SUBSEP t] = 1; types[c] = types[c] " " t }
        if (has("malformed")) { malf[c]++; if (malf[c] <= 3) print "malformed " c " packet, frame " R["frame"] ": " R["malformed"] }
        if (R["checksum.status"] == 1) cks[c]++
        if (has("type_name") && has("connid") && has("psn") && has("f") && has("token") && has("data.len")) hdr[c]++
        if (c == "other") next
        if (c == "keyed") {
            if (R["auth.kind"] ~ /^[1-4]$/ && R["element"] ~ /(^|,)8$/) kauth++
            if (t == "CCR" && length(R["key.public"]) == 64 && length(R["key.salt"]) == 32) kccr++
            if (t == "LJR" && length(R["key.public"]) == 64 && has("ciphertext")) kljr++
            if (t == "DATA") { kdata++; if (has("ciphertext") && !has("data") && (R["data.len"] + 0) > 0) kdata_ok++
                               if (kfirst == "") kfirst = R["ciphertext"] }
            next
        }
        if (t == "CCR") { ccr++; if (R["conn.tco"] == 1 && R["conn.ro"] == 2 && R["conn.hgt"] == 100 && R["conn.mss"] == mss && R["conn.cc"] == 1) ccr_ok++; isn = R["psn"] }
        if (t == "CCC") { ccc++; if (has("member.id")) ccc_m++; if (R["member.id"] == tu1 && !has("timestamp")) ccc_ok++
                          if (has("timestamp")) ccc_rtt++ }
        if (t == "TJR") { tjr++; if (has("member.id")) tjr_ok++; if (R["member.id"] ~ "(^|,)" tu2 "(,|$)") tjr_tu2++
                          if (R["f"] == 1 && R["addr.ipv4"] == "127.0.0.1" && has("addr.port")) tjr_notice++ }
        if (t == "TJC") { tjc++; if (has("member.id") && has("member.level")) tjc_ok++; if (R["f"] == 1 && R["member.id"] ~ "(^|,)" tu2 "(,|$)") tjc_tu2++ }
        if (t == "DATA" && R["token"] == 0) {
            data++; if (R["psn"] != 0 && (R["data.len"] + 0) > 0 && length(R["data"]) == 2 * R["data.len"]) data_ok++
            if (!(R["psn"] in payload)) { payload[R["psn"]] = R["data"]; print R["data"] > (d "/data.hex"); last = R["psn"]; if (first == "") first = R["psn"] }
        }
        if (t == "DATA" && R["token"] != 0) {
            sdata++; if (R["token"] == tok) sdata_ok++
            if (!(R["psn"] in spayload)) { spayload[R["psn"]] = 1; su = su (su == "" ? "" : ",") R["data"]; if (sfirst == "") sfirst = R["psn"] }
        }
        if (t == "RDATA") { rdata++; if (R["token"] == 0) { to_rdata++; if ((R["psn"] in payload) && payload[R["psn"]] == R["data"]) rdata_ok++ } }
        if (t == "NDATA") { ndata++; if (R["psn"] != 0 && (R["data.len"] + 0) == 0) ndata_ok++; nlast = R["psn"] }
        if (t == "ACK") { ack++; if (has("ack.lsn") && has("ack.adn") && has("ack.stable") && has("member.id")) ack_ok++
                          if (has("ack.missing")) ack_missing++; if (has("report.member") && has("report.recv")) ack_report++ }
        if (t == "HB") { hb++; if (has("timestamp") || has("rate.rate")) hb_ok++; if ((R["rate.rate"] + 0) > 0) hb_rate++ }
        if (t == "HBACK") { hback++; if (has("timestamp") || has("ack.lsn")) hback_ok++ }
        if (t == "LJR") { ljr++; if (R["padding"] != "" && (R["data.len"] + 0) >= 80 && R["f"] == 0) ljr_ok++ }
        if (t == "LJC") { ljc++; if (R["f"] == 1 && R["member.id"] == tu2 && R["conn.mss"] == mss && R["addr.ipv4"] == "127.0.0.1" && has("addr.port")) ljc_ok++ }
        if (t == "ULR") { ulr++; if (R["member.id"] == tu2 && R["f"] == 1) ulr_ok++ }
        if (t == "CTR") { ctr++; if (R["f"] == 0) ctr_f++; ctr_psn = R["psn"] }
        if (t == "TGR") { tgr++; tgr_psn = R["psn"] }
        if (t == "TGC") { tgc++; if (R["f"] == 1 && R["token"] == tok) tgc_ok++ }
        if (t == "TRR") { trr++; if (R["token"] == tok) trr_ok++ }
        if (t == "TRC") { trc++; if (R["token"] == tok) trc_ok++ }
    }
    END {
        print "tree connection types:" types["tree"] " (" total["tree"] " packets)"
        print "keyed connection types:" types["keyed"] " (" total["keyed"] " packets)"
        check("the tree connection and the keyed one were found (" tcid ", " kcid ")", tcid != "" && kcid != "")
        check("no ECTP packet of another connection", total["other"] == 0)
        for (c in total) if (c != "other") {
            count(c ": not malformed", total[c] - malf[c], total[c])
            count(c ": checksum good", cks[c], total[c])
            count(c ": every header field decoded", hdr[c], total[c])
        }
        split("CCR CCC TJR TJC DATA NDATA RDATA ACK HB HBACK LJR LJC ULR CTR TGR TGC TRR TRC", all, " ")
        missing = ""
        for (i = 1; i <= 18; i++) if (!((("tree") SUBSEP all[i]) in seen)) missing = missing " " all[i]
        check("all 18 packet types in the tree connection" (missing == "" ? "" : "; missing:" missing), missing == "")
        count("CCR: Connection element tree, reliable, HGT 100, MSS " mss ", TFMCC", ccr_ok, ccr)
        check("CCR: the initial PSN is the first DATA PSN (" isn ")", isn != "" && isn == first)
        count("CCC: Membership", ccc_m, ccc)
        check("CCC: one from TU 1 (" ccc_ok "; RTT reports with a Timestamp: " ccc_rtt + 0 ")", ccc_ok > 0)
        count("TJR: Membership", tjr_ok, tjr)
        check("TJR: one for TU 2 (" tjr_tu2 "), an admission notice with its Address (" tjr_notice ")", tjr_tu2 > 0 && tjr_notice > 0)
        count("TJC: Membership", tjc_ok, tjc)
        check("TJC: TU 2 accepted (F=1) by its parent", tjc_tu2 > 0)
        count("DATA (TO): PSN, user data of its length", data_ok, data)
        count("DATA (SU): token " tok, sdata_ok, sdata)
        check("DATA (SU): the two messages, in order", su == "746f6b656e2064617461,676f6f64207472616e736d6974")
        check("DATA (SU): the first PSN is the TGR PSN (" tgr_psn ")", tgr_psn != "" && tgr_psn == sfirst)
        count("RDATA (TO): the same user data as the DATA of that PSN", rdata_ok, to_rdata)
        count("NDATA: a PSN, no data", ndata_ok, ndata)
        check("NDATA: the last one announces the PSN after the last DATA", nlast != "" && nlast + 0 == (last + 0 == 4294967295 ? 1 : last + 1))
        count("ACK: Acknowledgement and Membership", ack_ok, ack)
        check("ACK: some report missing PSNs (" ack_missing ")", ack_missing > 0)
        check("ACK: some carry a Rate Report (" ack_report ")", ack_report > 0)
        count("HB: Timestamp or Rate", hb_ok, hb)
        check("HB: some carry a Rate element with a rate (" hb_rate ")", hb_rate > 0)
        count("HBACK: Timestamp or Acknowledgement", hback_ok, hback)
        count("LJR: F=0, padding of at least 80 bytes", ljr_ok, ljr)
        count("LJC: accepted TU 2, Connection (MSS), Address of its parent", ljc_ok, ljc)
        check("ULR: TU 2 leaving, F=1 (" ulr_ok " of " ulr ")", ulr_ok > 0)
        count("CTR: normal (F=0)", ctr_f, ctr)
        check("CTR: the PSN is the last DATA PSN (" last ")", ctr_psn != "" && ctr_psn == last)
        count("TGC: granted (F=1), token " tok, tgc_ok, tgc)
        count("TRR: token " tok, trr_ok, trr)
        count("TRC: token " tok, trc_ok, trc)
        count("keyed: every packet ends with an Authentication element of kind 1-4", kauth, total["keyed"])
        check("keyed: CCR with the TO Key element (" kccr ")", kccr > 0)
        check("keyed: LJR with a Key element and encrypted padding (" kljr ")", kljr > 0)
        count("keyed: DATA shown as encrypted user data", kdata_ok, kdata)
        print kfirst > (d "/keyed-first.hex")
        # the malformed datagrams, in the order sent
        while ((getline line < (d "/inject.expect")) > 0) {
            m++; split(line, e, "\t")
            got = inj[m]
            cond = got != "" && index(got, e[1]) > 0 && (e[2] != "ok" || index(got, "bad checksum") == 0)
            check("malformed datagram " m ": \"" got "\" (expected \"" e[1] "\"" (e[2] == "ok" ? ", checksum right" : "") ")", cond)
        }
        check("as many malformed datagrams decoded as sent (" ninj " of " m ")", ninj == m)
        check("heuristic, another port: the text left alone, the CTR and the LJC with an IPv6 Address decoded (" nheur " ECTP)", nheur == 2 && heur_ctr == 1 && heur_ljc == 1)
        exit bad
    }' "$d/records" "$d/records" || ok=1

    # The TO's DATA user data, in the order sent, is the input; the keyed
    # connection's is not its input.
    expect "the DATA user data (tree connection) is the input, byte for byte" \
        cmp -s <(tr -d '\n' <"$d/data.hex") <(od -An -v -tx1 "$d/input" | tr -d ' \n') || ok=1
    local cipher plain
    cipher=$(tr -d '\n' <"$d/keyed-first.hex")
    plain=$(head -c 1024 "$d/input2" | od -An -v -tx1 | tr -d ' \n')
    expect "the keyed DATA user data (${#cipher} hex digits) is not the plaintext" \
        test -n "$cipher" -a "$cipher" != "$plain" || ok=1
    return $ok
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
    ip netns exec "$qt_netns" bash -c "$V6_SETUP" || rc=1
    if [[ $rc -eq 0 ]]; then
        qt_pre=(ip netns exec "$qt_netns")
        qt_scenario "$1" fd00::1 ff15::ec7b || rc=1
        qt_pre=()
    fi
    ip netns del "$qt_netns" || rc=1
    qt_netns=
    return $rc
}

# (11) `make install` of the top-level Makefile, into temporary prefixes: the
# files, links, SONAME and exported symbols; programs built against the
# installed tree with pkg-config (C, C++, static), with CMake (shared,
# static, and from a staged DESTDIR tree), and one linking a second Rust
# static library beside libectp.a, each run; then `make uninstall`.
install_tools_missing() {
    local t
    for t in make cc c++ pkg-config cmake readelf objcopy ld ar nm od cargo rustc; do
        command -v "$t" >/dev/null || { echo "$t"; return; }
    done
}

# The header's functions, one per line, sorted (prototypes are one line each).
header_functions() {
    grep -E '^[A-Za-z_].*\);$' "$1" | grep -v '^typedef' | sed -E 's/\(.*//; s/.*[ *]//' | sort
}

# make at the top, without the variables of an outer make (make -C c-examples test).
top_make() {
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$here/.." "$@"
}

# Runs one of the built programs on a port of its own; says what it printed.
run_prog() {   # run_prog <program> [args...]: the port is added
    local out rc=0
    out=$(timeout -k 5 "$LIMIT" "$@" "$(rand_port)" 2>&1) || rc=$?
    echo "$(basename "$1"): exit $rc: $out"
    [[ $rc -eq 0 && $out == *": ok "* ]]
}

needs_libectp_so() {   # needs_libectp_so <program> <soname>: its NEEDED lists the SONAME
    readelf -d "$1" | grep -q "(NEEDED).*\[$2\]"
}

needs_no_libectp_so() {   # needs_no_libectp_so <program>: linked without any libectp.so
    ! readelf -d "$1" | grep -q "(NEEDED).*\[libectp\.so"
}

t_install() {
    local d=$1 ok=0 root="$here/.." src="$here/install-test" version major p f
    version=$(awk -F'"' '/^\[/ { p = ($0 == "[package]") } p && /^version *=/ { print $2; exit }' "$root/Cargo.toml")
    major=${version%%.*}
    echo "Cargo.toml version $version, SONAME libectp.so.$major"

    # A staged install (DESTDIR), with LIBDIR relative to the prefix: the
    # multiarch directory where there is one (CMake looks there on Debian,
    # not in lib64), else lib64.
    local arch libdir_rel
    arch=$(cc -print-multiarch 2>/dev/null || true)
    libdir_rel=${arch:+lib/$arch}
    libdir_rel=${libdir_rel:-lib64}
    if ! top_make install DESTDIR="$d/stage" PREFIX=/usr LIBDIR="$libdir_rel" LDCONFIG= \
        >"$d/stage.log" 2>&1; then
        show "$d/stage.log"
        echo "NOT: make install DESTDIR=... failed"
        return 1
    fi
    p=$d/stage/usr
    expect "DESTDIR: the library is in \$DESTDIR/usr/$libdir_rel" test -f "$p/$libdir_rel/libectp.so.$version" || ok=1
    expect "DESTDIR: nothing outside \$DESTDIR/usr" \
        test "$(find "$d/stage" -mindepth 1 -maxdepth 1)" = "$d/stage/usr" || ok=1
    expect "DESTDIR: ectp.pc says prefix=/usr" grep -qx 'prefix=/usr' "$p/$libdir_rel/pkgconfig/ectp.pc" || ok=1
    # shellcheck disable=SC2016 # ${prefix} is pkg-config's
    expect "DESTDIR: ectp.pc says libdir=\${prefix}/$libdir_rel" \
        grep -qx 'libdir=${prefix}/'"$libdir_rel" "$p/$libdir_rel/pkgconfig/ectp.pc" || ok=1
    expect "DESTDIR: the CMake files are in $libdir_rel/cmake/ectp" \
        test -f "$p/$libdir_rel/cmake/ectp/ectpConfig.cmake" \
        -a -f "$p/$libdir_rel/cmake/ectp/ectpConfigVersion.cmake" || ok=1
    # The CMake package finds itself when the tree is not at its prefix.
    if cmake -S "$src" -B "$d/cmake-stage" -DCMAKE_PREFIX_PATH="$p" >"$d/cmake-stage.log" 2>&1 \
        && cmake --build "$d/cmake-stage" >>"$d/cmake-stage.log" 2>&1; then
        expect "CMake, staged tree: the include directory is the staged one" \
            grep -q "ectp $version: $p/include\$" "$d/cmake-stage.log" || ok=1
        run_prog "$d/cmake-stage/loopback_cmake" || ok=1
    else
        show "$d/cmake-stage.log"
        echo "NOT: CMake against the staged tree"
        ok=1
    fi
    top_make uninstall DESTDIR="$d/stage" PREFIX=/usr LIBDIR="$libdir_rel" >"$d/unstage.log" 2>&1 || ok=1
    expect "DESTDIR: make uninstall left no file" test -z "$(find "$d/stage" ! -type d)" || ok=1
    expect "DESTDIR: make uninstall removed $libdir_rel/cmake/ectp" test ! -e "$p/$libdir_rel/cmake/ectp" || ok=1

    # The install used from here on: PREFIX a temporary directory.
    p=$d/prefix
    if ! top_make install PREFIX="$p" LDCONFIG= >"$d/install.log" 2>&1; then
        show "$d/install.log"
        echo "NOT: make install PREFIX=$p failed"
        return 1
    fi
    grep '^installed ' "$d/install.log"
    local lib=$p/lib
    expect "libectp.so.$version is a file" test -f "$lib/libectp.so.$version" -a ! -L "$lib/libectp.so.$version" || ok=1
    expect "libectp.so.$major -> libectp.so.$version" test "$(readlink "$lib/libectp.so.$major")" = "libectp.so.$version" || ok=1
    expect "libectp.so -> libectp.so.$major" test "$(readlink "$lib/libectp.so")" = "libectp.so.$major" || ok=1
    expect "libectp.a is there" test -f "$lib/libectp.a" || ok=1
    expect "include/ectp.h is the tree's header" cmp -s "$root/include/ectp.h" "$p/include/ectp.h" || ok=1
    expect "lib/pkgconfig/ectp.pc is there" test -f "$lib/pkgconfig/ectp.pc" || ok=1
    expect "lib/cmake/ectp has both files" \
        test -f "$lib/cmake/ectp/ectpConfig.cmake" -a -f "$lib/cmake/ectp/ectpConfigVersion.cmake" || ok=1
    shopt -s nullglob
    local man=("$root"/docs/man/man3/*.3 "$root"/docs/man/man7/*.7)
    shopt -u nullglob
    echo "${#man[@]} man pages in docs/man"
    expect "there are man pages" test "${#man[@]}" -ge 20 || ok=1
    for f in "${man[@]}"; do
        local sect
        sect=$(basename "$(dirname "$f")")
        expect "man page $sect/$(basename "$f") installed" cmp -s "$f" "$p/share/man/$sect/$(basename "$f")" || ok=1
    done
    if command -v man >/dev/null; then
        expect "man 3 mtoken_return (a .so link page) renders from the prefix" \
            sh -c "MANPATH='$p/share/man' man -P cat 3 mtoken_return 2>/dev/null | grep -q mtoken_get" || ok=1
    fi
    if [[ -f $root/docs/api.md ]]; then
        expect "docs/api.md installed" cmp -s "$root/docs/api.md" "$p/share/doc/ectp/api.md" || ok=1
    fi

    local soname
    soname=$(readelf -d "$lib/libectp.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    expect "SONAME is libectp.so.$major (readelf: $soname)" test "$soname" = "libectp.so.$major" || ok=1

    # Exported: exactly the header's functions, each under version ECTP_<major>.
    header_functions "$root/include/ectp.h" >"$d/api.txt"
    nm -D --defined-only "$lib/libectp.so.$version" >"$d/so-syms.txt"
    awk '$2 != "A" { print $3 }' "$d/so-syms.txt" | sort >"$d/so-names.txt"
    echo "$(wc -l <"$d/api.txt") functions in ectp.h; the .so defines $(wc -l <"$d/so-names.txt") dynamic symbols"
    if ! expect "the .so exports exactly the header's functions, under ECTP_$major" \
        cmp -s "$d/so-names.txt" <(sed "s/\$/@@ECTP_$major/" "$d/api.txt"); then
        diff <(sed "s/\$/@@ECTP_$major/" "$d/api.txt") "$d/so-names.txt" || true
        ok=1
    fi
    expect "the only other dynamic symbol is the version node ECTP_$major" \
        test "$(awk '$2 == "A" { print $3 }' "$d/so-syms.txt")" = "ECTP_$major" || ok=1
    expect "every exported symbol is a function (T)" \
        test -z "$(awk '$2 != "A" && $2 != "T"' "$d/so-syms.txt")" || ok=1
    # The static library: the header's functions are its only global symbols.
    readelf -sW "$lib/libectp.a" | awk '$1 ~ /^[0-9]+:$/ && $5 != "LOCAL" && $7 != "UND" { print $8 }' \
        | sort >"$d/a-names.txt"
    echo "libectp.a: $(wc -l <"$d/a-names.txt") global symbols defined"
    if ! expect "libectp.a defines no global symbol but the header's functions" \
        cmp -s "$d/a-names.txt" "$d/api.txt"; then
        diff "$d/api.txt" "$d/a-names.txt" | head -20 || true
        ok=1
    fi

    # pkg-config: C and C++ against the shared library, C against libectp.a.
    export PKG_CONFIG_PATH="$lib/pkgconfig"
    local cflags libs slibs libdir
    if ! { cflags=$(pkg-config --cflags ectp) && libs=$(pkg-config --libs ectp) \
        && slibs=$(pkg-config --static --libs ectp) && libdir=$(pkg-config --variable=libdir ectp); }; then
        echo "NOT: pkg-config ectp"
        return 1
    fi
    echo "pkg-config --cflags: $cflags; --libs: $libs; --static --libs: $slibs"
    expect "pkg-config: the version is $version" test "$(pkg-config --modversion ectp)" = "$version" || ok=1
    expect "pkg-config --static lists the native libraries" test "$slibs" != "$libs" || ok=1
    # shellcheck disable=SC2086 # the flags are words
    if cc -std=c99 -Wall -Wextra -Werror -pedantic -o "$d/lb_c" "$src/loopback.c" $cflags $libs \
        -Wl,-rpath,"$libdir" 2>"$d/cc.err"; then
        expect "C: needs libectp.so.$major" needs_libectp_so "$d/lb_c" "libectp.so.$major" || ok=1
        run_prog "$d/lb_c" || ok=1
    else
        show "$d/cc.err"; echo "NOT: C program with pkg-config"; ok=1
    fi
    # shellcheck disable=SC2086
    if c++ -std=c++17 -Wall -Wextra -Werror -o "$d/lb_cxx" "$src/loopback.cpp" $cflags $libs \
        -Wl,-rpath,"$libdir" 2>"$d/cxx.err"; then
        expect "C++: needs libectp.so.$major" needs_libectp_so "$d/lb_cxx" "libectp.so.$major" || ok=1
        run_prog "$d/lb_cxx" || ok=1
    else
        show "$d/cxx.err"; echo "NOT: C++ program with pkg-config"; ok=1
    fi
    # With both libraries in LIBDIR, -lectp means the shared one: -l:libectp.a
    # picks the static one; the rest is Libs.private.
    # shellcheck disable=SC2086
    if cc -std=c99 -Wall -Wextra -Werror -o "$d/lb_static" "$src/loopback.c" $cflags \
        ${slibs/-lectp/-l:libectp.a} 2>"$d/static.err"; then
        expect "static: does not need libectp.so" needs_no_libectp_so "$d/lb_static" || ok=1
        run_prog "$d/lb_static" || ok=1
    else
        show "$d/static.err"; echo "NOT: static C program with pkg-config --static"; ok=1
    fi
    unset PKG_CONFIG_PATH

    # CMake: find_package(ectp) with CMAKE_PREFIX_PATH.
    if cmake -S "$src" -B "$d/cmake" -DCMAKE_PREFIX_PATH="$p" >"$d/cmake.log" 2>&1 \
        && cmake --build "$d/cmake" >>"$d/cmake.log" 2>&1; then
        grep "ectp $version:" "$d/cmake.log" || true
        expect "CMake ectp::ectp: needs libectp.so.$major" \
            needs_libectp_so "$d/cmake/loopback_cmake" "libectp.so.$major" || ok=1
        expect "CMake ectp::ectp_static: does not need libectp.so" \
            needs_no_libectp_so "$d/cmake/loopback_cmake_static" || ok=1
        run_prog "$d/cmake/loopback_cmake" || ok=1
        run_prog "$d/cmake/loopback_cmake_static" || ok=1
        run_prog "$d/cmake/loopback_cmake_cxx" || ok=1
    else
        show "$d/cmake.log"; echo "NOT: CMake find_package(ectp)"; ok=1
    fi
    # A version that does not fit is refused.
    mkdir -p "$d/cmake-v"
    printf 'cmake_minimum_required(VERSION 3.13)\nproject(v C)\nfind_package(ectp %s REQUIRED)\n' \
        "$((major + 1)).0" >"$d/cmake-v/CMakeLists.txt"
    if cmake -S "$d/cmake-v" -B "$d/cmake-v/build" -DCMAKE_PREFIX_PATH="$p" >"$d/cmake-v.log" 2>&1; then
        echo "NOT: CMake accepted find_package(ectp $((major + 1)).0)"
        ok=1
    else
        expect "CMake: find_package(ectp $((major + 1)).0) is refused, naming the version found" \
            grep -q "$p/lib/cmake/ectp/ectpConfig.cmake, version: $version" "$d/cmake-v.log" || ok=1
    fi

    # Two Rust static libraries, each with its standard library, in one program.
    if rustc --edition 2024 -O --crate-type staticlib --crate-name other -o "$d/libother.a" \
        "$src/other.rs" 2>"$d/rustc.err"; then
        # shellcheck disable=SC2086
        if cc -std=c99 -Wall -Wextra -Werror -o "$d/two_rust" "$src/two_rust.c" -I"$p/include" \
            "$lib/libectp.a" "$d/libother.a" ${slibs/-lectp/} 2>"$d/two.err"; then
            local out rc=0
            out=$(timeout -k 5 "$LIMIT" "$d/two_rust" 2>&1) || rc=$?
            echo "two_rust: exit $rc: $out"
            expect "libectp.a and another Rust static library in one program" \
                test "$rc" -eq 0 -a "${out#two_rust: ok }" != "$out" || ok=1
        else
            head -20 "$d/two.err"; echo "NOT: libectp.a and another Rust static library in one program"; ok=1
        fi
    else
        show "$d/rustc.err"; echo "NOT: rustc other.rs"; ok=1
    fi

    top_make uninstall PREFIX="$p" >"$d/uninstall.log" 2>&1 || { show "$d/uninstall.log"; ok=1; }
    expect "make uninstall left no file in the prefix" test -z "$(find "$p" ! -type d)" || ok=1
    return $ok
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
        # A long log may be cut in the middle where it is shown: the failed
        # checks once more, last.
        grep '^NOT' "$dir/log" | sed 's/^/#   failed: /'
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
if selected dissector; then
    if why=$(dissector_possible); then
        run dissector t_dissector
    else
        skip dissector "$why"
    fi
fi
if selected install; then
    missing=$(install_tools_missing)
    if [[ -z $missing ]]; then
        run install t_install
    else
        skip install "needs $missing"
    fi
fi
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
