#!/usr/bin/env bash
# The legacy demo, over IPv4 loopback by default: a TO (gserv) multicasts a
# 2 MiB file for about 6 s; TU 1 joins after 1 s, TU 2 after 2 s (both late
# joiners); each asks for a token (TU 1 0.5 s after joining, TU 2 2.5 s after)
# and sends "token data" and "good transmit" back to the TO.
#
# Checks: every TU's output is non-empty and is exactly the tail of the input
# from its join point on; the TO printed both messages of both TUs; everybody
# exited 0. Prints a summary and exits 1 on failure.
#
# Environment (all optional):
#   GSERV, GCLNT   the programs (default build/gserv, build/gclnt)
#   LOCAL, GROUP   TO address and group (default 127.0.0.1, 239.255.10.10)
#   PORT           group port (default random in 20000..39999)
#   SIZE           input bytes (default 2097152)
#   CHUNK          bytes per message (default 1024)
#   STREAM_SECS    how long the stream should last (default 6)
#   KEEP=1         keep the work directory (it is always kept on failure)
#   TREE=1         a control tree: gserv -t 1, TU 1 a repair agent (gclnt -A),
#                  TU 2 attached under it; also checks TU 2's parent is TU 1
# shellcheck disable=SC2317 # the checks are called through check()
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
GSERV=${GSERV:-$here/build/gserv}
GCLNT=${GCLNT:-$here/build/gclnt}
LOCAL=${LOCAL:-127.0.0.1}
GROUP=${GROUP:-239.255.10.10}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
SIZE=${SIZE:-2097152}
CHUNK=${CHUNK:-1024}
STREAM_SECS=${STREAM_SECS:-6}
KEEP=${KEEP:-0}
TREE=${TREE:-0}
tree_to=()
tree_ra=()
if [[ $TREE == 1 ]]; then
    tree_to=(-t 1)
    tree_ra=(-A)
fi
# Each process is killed if it hangs; the whole demo normally takes ~8 s.
LIMIT=40

for prog in "$GSERV" "$GCLNT"; do
    if [[ ! -x $prog ]]; then
        echo "demo: $prog is missing: run make first" >&2
        exit 2
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/ectp-demo.XXXXXX")
pids=()
result=1

cleanup() {
    stop_children
    if [[ $result -eq 0 && $KEEP != 1 ]]; then
        rm -rf "$work"
    else
        echo "demo: files kept in $work" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rate=$(( SIZE / 1024 / STREAM_SECS ))
(( rate > 0 )) || rate=1
head -c "$SIZE" /dev/urandom >"$work/input"

echo "demo: $SIZE bytes at $rate KiB/s from $LOCAL to $GROUP port $PORT (work dir $work)"

timeout -k 5 "$LIMIT" "$GSERV" -l "$LOCAL" -g "$GROUP" -p "$PORT" -r "$rate" -s "$CHUNK" "${tree_to[@]}" \
    "$work/input" >"$work/gserv.log" 2>"$work/gserv.err" &
gserv_pid=$!
pids+=("$gserv_pid")

sleep 1
timeout -k 5 "$LIMIT" "$GCLNT" -l "$LOCAL" -g "$GROUP" -p "$PORT" -O "$work/tu1.out" -t 500 "${tree_ra[@]}" \
    2>"$work/tu1.err" &
tu1_pid=$!
pids+=("$tu1_pid")

sleep 1
# TU 2 blocks in mrecvmsg (-b) where TU 1 polls: both ways get exercised.
timeout -k 5 "$LIMIT" "$GCLNT" -l "$LOCAL" -g "$GROUP" -p "$PORT" -O "$work/tu2.out" -t 2500 -b \
    2>"$work/tu2.err" &
tu2_pid=$!
pids+=("$tu2_pid")

gserv_rc=0; wait "$gserv_pid" || gserv_rc=$?
tu1_rc=0; wait "$tu1_pid" || tu1_rc=$?
tu2_rc=0; wait "$tu2_pid" || tu2_rc=$?
pids=()

failures=0
check() {   # check <what> <command...>: runs the command, prints PASS/FAIL
    local what=$1
    shift
    if "$@"; then
        printf '  PASS  %s\n' "$what"
    else
        printf '  FAIL  %s\n' "$what"
        failures=$((failures + 1))
    fi
}

is_zero() { [[ $1 -eq 0 ]]; }
grep_q() { grep -qE -- "$1" "$2"; }

# The output of a TU is exactly the input from a message boundary on.
is_tail() {
    local out=$1 n
    n=$(wc -c <"$out")
    [[ $n -gt 0 ]] || return 1
    (( (SIZE - n) % CHUNK == 0 )) || return 1
    tail -c "$n" "$work/input" | cmp -s - "$out"
}

reported_bytes() {   # what gclnt said it received
    sed -n 's/^gclnt: connection ended, received \([0-9]*\) bytes$/\1/p' "$1"
}

user_id() {
    sed -n 's/^gclnt: joined as user \([0-9]*\)$/\1/p;T;q' "$1"
}

echo "demo: what the TO printed for the SUs' messages:"
grep 'says:' "$work/gserv.log" | sed 's/^/  gserv: /' || true
echo "demo: results"
check "gserv exited 0 (exit $gserv_rc)" is_zero "$gserv_rc"
check "gserv sent the whole input" \
    grep_q "^gserv: sent $SIZE bytes in $(( (SIZE + CHUNK - 1) / CHUNK )) messages$" "$work/gserv.err"

for tu in 1 2; do
    rc_var=tu${tu}_rc
    rc=${!rc_var}
    out=$work/tu$tu.out
    err=$work/tu$tu.err
    bytes=0
    [[ -f $out ]] && bytes=$(wc -c <"$out")
    id=$(user_id "$err")
    reported=$(reported_bytes "$err")
    echo "  TU $tu: user ${id:-?}, received $bytes bytes (gclnt says ${reported:-?}), exit $rc"
    check "TU $tu exited 0" is_zero "$rc"
    check "TU $tu output is non-empty and is the input's last $bytes bytes" is_tail "$out"
    check "TU $tu reported the bytes it wrote" [ "$reported" = "$bytes" ]
    if [[ -n $id ]]; then
        check "gserv printed TU $id's \"token data\"" \
            grep_q "^TU $id \\(token [0-9]+\\) says: token data$" "$work/gserv.log"
        check "gserv printed TU $id's \"good transmit\"" \
            grep_q "^TU $id \\(token [0-9]+\\) says: good transmit$" "$work/gserv.log"
    else
        check "TU $tu printed its user id" false
    fi
done

if [[ $TREE == 1 ]]; then
    ra=$(user_id "$work/tu1.err")
    check "TU 2 attached under TU 1, the repair agent (user ${ra:-?})" \
        grep_q "^gclnt: in the tree at level 2, parent user ${ra:-x}$" "$work/tu2.err"
fi

if [[ $failures -eq 0 ]]; then
    result=0
    echo "demo: PASS"
else
    echo "demo: FAIL ($failures checks failed)"
    for f in gserv.err gserv.log tu1.err tu2.err; do
        echo "---- $f (last 20 lines)"
        tail -n 20 "$work/$f" || true
    done
fi
exit "$result"
