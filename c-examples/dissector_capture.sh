#!/usr/bin/env bash
# The traffic of the dissector test (ctest.sh, t_dissector), captured on lo:
# run it as root in a network namespace of its own (unshare -n), where lo
# carries nothing else.
#
#   dissector_capture.sh BUILD_DIR WORK_DIR PORT KEYED_PORT
#
# Two connections at once, captured by dumpcap into WORK_DIR/cap.pcapng:
#   - on PORT (group 239.255.10.10), a control tree (gserv -t 1) with a
#     creation phase and HGT 100 ms: TU 1 is there first and becomes a repair
#     agent (gclnt -A), takes a token after 500 ms (gclnt -t) and, once joined
#     (so that its CCR is never the one dropped), drops 5 % of
#     what it receives (gclnt -L 5: ACKs with holes, RDATA); TU 2 joins late,
#     attaches under TU 1, drops 5 % too and leaves after 1.2 s (gclnt -x);
#   - on KEYED_PORT (group 239.255.10.12), a flat connection with a group key
#     (gserv -K, gclnt -K): TU 3 in the creation phase, TU 4 late.
# Meanwhile it sends the malformed datagrams of WORK_DIR/inject.expect (one
# line each: the reason the dissector must give, then whether the checksum
# is right) to 127.0.0.2:PORT, where nobody listens, then to 127.0.0.2:PORT+7
# a datagram that is not ECTP and two well-formed packets (for the heuristic).
# Exit codes of the programs go to WORK_DIR/rc ("name code" lines).
set -euo pipefail

B=$1
d=$2
port=$3
kport=$4
limit=40
group=239.255.10.10
kgroup=239.255.10.12

ip link set lo up

head -c 800000 /dev/urandom >"$d/input"
head -c 300000 /dev/urandom >"$d/input2"
head -c 32 /dev/urandom >"$d/key"
: >"$d/rc"
: >"$d/inject.expect"

# ---- crafted datagrams

# hdr NE TYPE PAYLOAD_LEN FLAGS TOKEN: a base header (hex) with checksum 0,
# connection id 0x0ec70003, PSN 7.
hdr() {
    printf '%02x%02x00000ec7000300000007%04x%02x%02x' $(($1 * 16 + 2)) "$2" "$3" "$4" "$5"
}

# with_checksum HEX: HEX with its Checksum field (bytes 2-3) computed anew.
with_checksum() {
    local h="${1:0:4}0000${1:8}" s=0 i
    local p=$h
    ((${#p} % 4 == 0)) || p+=00
    for ((i = 0; i < ${#p}; i += 4)); do
        s=$((s + 16#${p:i:4}))
    done
    while ((s > 0xFFFF)); do
        s=$(((s & 0xFFFF) + (s >> 16)))
    done
    printf '%s%04x%s' "${h:0:4}" $((~s & 0xFFFF)) "${h:8}"
}

send_hex() {   # send_hex HOST PORT HEX: one datagram (printf may write in
    # pieces, cat writes a small file at once)
    local i esc=
    for ((i = 0; i < ${#3}; i += 2)); do
        esc+="\\x${3:i:2}"
    done
    # shellcheck disable=SC2059 # the format is the \x escapes of the bytes
    printf "$esc" >"$d/datagram"
    cat "$d/datagram" >"/dev/udp/$1/$2"
}

# inject REASON CHECKSUM_OK HEX: sends HEX as one datagram to the group port
# at 127.0.0.2 and records what the dissector must say about it.
inject() {
    printf '%s\t%s\n' "$1" "$2" >>"$d/inject.expect"
    send_hex 127.0.0.2 "$port" "$3"
    sleep 0.05
}

member=00010002000000050000000a           # Membership: level 1, child 2, member 5, parent 10
inject_all() {
    local ctr
    ctr=$(with_checksum "$(hdr 0 14 0 0 0)")
    inject "shorter than the 16-byte header" bad 68656c6c6f
    inject "shorter than the 16-byte header" bad "${ctr:0:20}"
    inject "Payload Length 100, but 0 bytes follow the header" ok "$(with_checksum "$(hdr 0 14 100 0 0)")"
    inject "bad checksum" bad "${ctr:0:4}dead${ctr:8}"
    inject "Version 1, not 0" ok "$(with_checksum "06${ctr:2}")"
    inject "connection type is not duplex" ok "$(with_checksum "01${ctr:2}")"
    inject "unknown packet type 51" ok "$(with_checksum "$(hdr 0 51 0 0 0)")"
    inject "unknown element code 5" ok "$(with_checksum "$(hdr 5 9 12 0 0)000000000000000000000000")"
    inject "unknown element code 11" ok "$(with_checksum "$(hdr 3 9 16 0 0)b${member:1}00000000")"
    inject "Connection element truncated" ok "$(with_checksum "$(hdr 1 1 6 0 0)020803000578")"
    inject "duplicate Membership element" ok "$(with_checksum "$(hdr 3 13 24 128 0)3${member:1}$member")"
    inject "Address element: family 5 is neither 4 nor 6" ok \
        "$(with_checksum "$(hdr 6 12 8 128 0)000513887f000001")"
    inject "Authentication element is not the last" ok \
        "$(with_checksum "$(hdr 8 14 44 0 0)30020000000000000000000000000001$(printf '%032d' 0)$member")"
    inject "Authentication element: kind 9 is invalid" ok \
        "$(with_checksum "$(hdr 8 14 32 0 0)00090000000000000000000000000001$(printf '%032d' 0)")"
    inject "Acknowledgement element: padding bits are not zero" ok \
        "$(with_checksum "$(hdr 2 8 20 0 0)0001000000000064000000010000006440000001")"
    inject "Acknowledgement element truncated" ok \
        "$(with_checksum "$(hdr 2 8 20 0 0)004000000000006400000001000000648fffffff")"
    inject "Connection element: TCO 3 is invalid" ok \
        "$(with_checksum "$(hdr 1 1 12 0 0)0e08030105780000000000c8")"
    printf '%s\t%s\n' "" any >>"$d/inject.expect"
    head -c 200 /dev/urandom >"/dev/udp/127.0.0.2/$port"
    sleep 0.05
    # Not for the group port: the heuristic must leave the first alone and
    # take the other two (well-formed: a CTR, an LJC with an IPv6 Address
    # element, [fd00::1]:8080).
    printf 'this is not an ECTP packet, just some text' >"/dev/udp/127.0.0.2/$((port + 7))"
    sleep 0.05
    send_hex 127.0.0.2 $((port + 7)) "$ctr"
    sleep 0.05
    send_hex 127.0.0.2 $((port + 7)) \
        "$(with_checksum "$(hdr 6 12 20 128 0)00061f90fd000000000000000000000000000001")"
}

# ---- the capture and the programs

pids=()
names=()
stop_all() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    [[ -z ${dc:-} ]] || kill -INT "$dc" 2>/dev/null || true
    wait
}
trap stop_all EXIT

dumpcap -q -i lo -w "$d/cap.pcapng" 2>"$d/dumpcap.err" &
dc=$!
# dumpcap writes the file's header once it captures.
for _ in $(seq 100); do
    [[ -s $d/cap.pcapng ]] && break
    sleep 0.05
done
sleep 0.3

run() {   # run NAME PROGRAM ARGS...: in the background, stderr to NAME.err
    local name=$1
    shift
    timeout -k 5 "$limit" "$@" >"$d/$name.log" 2>"$d/$name.err" &
    pids+=($!)
    names+=("$name")
}

run tu1 "$B/gclnt" -p "$port" -g "$group" -A -t 500 -L 5 -O "$d/tu1.out"
run tu3 "$B/gclnt" -p "$kport" -g "$kgroup" -K "$d/key" -O "$d/tu3.out"
sleep 0.3
run gserv "$B/gserv" -p "$port" -g "$group" -t 1 -c 1000 -H 100 -r 200 -w 500 "$d/input"
run gserv_keyed "$B/gserv" -p "$kport" -g "$kgroup" -K "$d/key" -c 800 -H 200 -r 150 -w 300 "$d/input2"
sleep 1.7
run tu2 "$B/gclnt" -p "$port" -g "$group" -L 5 -x 1200 -O "$d/tu2.out"
run tu4 "$B/gclnt" -p "$kport" -g "$kgroup" -K "$d/key" -O "$d/tu4.out"
inject_all

for i in "${!pids[@]}"; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    echo "${names[$i]} $rc" >>"$d/rc"
done
pids=()
sleep 0.3
kill -INT "$dc"
wait "$dc" || true
dc=
