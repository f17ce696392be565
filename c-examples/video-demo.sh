#!/usr/bin/env bash
# The legacy library's video use, as a demo over IPv4 loopback: ffmpeg makes
# a test video (testsrc2, 25 fps, H.264 in MPEG-TS, a keyframe every second),
# gserv multicasts it at its own bitrate, and two TUs join late (TU 1 after
# JOIN1 s, TU 2 after JOIN2 s), each piping what it receives into a real
# decoder: TU 1 into ffmpeg, TU 2 into mpv (--vo=null --ao=null) when mpv is
# installed, else into ffmpeg too.
#
# A TU writes exactly the tail of the stream from its join point on, so its
# join offset is the file's size minus the bytes it received; the frames it
# can decode are those from the first keyframe at or after that offset
# (ffprobe -show_packets on the original gives each video packet's position
# and key flag). For each TU it prints the frames decoded against the frames
# available and PASS (decoded >= available) or FAIL. It also checks that the
# bytes each TU received are the file's tail, and saves TU 1's first decoded
# frame as a PNG, checked against the same frame decoded from the original.
# Exit status: 0 PASS (or skipped: no ffmpeg and not root), 1 FAIL, 2 usage.
#
# Environment (all optional):
#   GSERV, GCLNT   the programs (default build/gserv, build/gclnt)
#   PORT           group port (default random in 20000..39999)
#   DURATION       seconds of video (default 20)
#   JOIN1, JOIN2   when the TUs join, in seconds after gserv starts
#                  (default 3 and 6; decimals allowed)
#   CODEC          h264 (default, libx264) or mpeg2
#   DECODER2       what TU 2 pipes into: mpv (default when installed) or ffmpeg
#   FRAME          where the PNG goes (default build/video-frame.png)
#   INSTALL=0      do not install ffmpeg with apt-get when it is missing
#   KEEP=1         keep the work directory (it is always kept on failure)
# shellcheck disable=SC2317 # cleanup is called through the trap
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
GSERV=${GSERV:-$here/build/gserv}
GCLNT=${GCLNT:-$here/build/gclnt}
LOCAL=127.0.0.1
GROUP=239.255.10.10
PORT=${PORT:-$((20000 + RANDOM % 20000))}
DURATION=${DURATION:-20}
JOIN1=${JOIN1:-3}
JOIN2=${JOIN2:-6}
CODEC=${CODEC:-h264}
FRAME=${FRAME:-$here/build/video-frame.png}
INSTALL=${INSTALL:-1}
KEEP=${KEEP:-0}
CHUNK=1024   # bytes per message: not a multiple of 188, so a TU joins mid TS packet

say() { echo "video-demo: $*"; }
die() { echo "video-demo: $*" >&2; exit 2; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_secs() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
if ! is_uint "$PORT" || (( PORT == 0 || PORT > 65535 )); then
    die "PORT=$PORT: not a port number"
fi
if ! is_uint "$DURATION" || (( DURATION < 4 || DURATION > 600 )); then
    die "DURATION=$DURATION: give whole seconds, 4..600"
fi
is_secs "$JOIN1" || die "JOIN1=$JOIN1: not a number of seconds"
is_secs "$JOIN2" || die "JOIN2=$JOIN2: not a number of seconds"
awk -v a="$JOIN1" -v b="$JOIN2" -v d="$DURATION" 'BEGIN { exit !(a > 0 && a < b && b < d - 1) }' \
    || die "need 0 < JOIN1 ($JOIN1) < JOIN2 ($JOIN2) < DURATION - 1 ($DURATION - 1)"
case $CODEC in
    h264 | mpeg2) ;;
    *) die "CODEC=$CODEC: h264 or mpeg2" ;;
esac
case ${DECODER2:-} in
    '' | ffmpeg | mpv) ;;
    *) die "DECODER2=$DECODER2: mpv or ffmpeg" ;;
esac
for prog in "$GSERV" "$GCLNT"; do
    [[ -x $prog ]] || die "$prog is missing: run make first"
done

# ---- ffmpeg: install it when missing and root, else skip
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    if [[ $INSTALL != 0 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "ffmpeg is missing: installing the Debian package ffmpeg (apt-get)"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; }; then
            echo "video-demo: apt-get install ffmpeg failed" >&2
            exit 1
        fi
    else
        say "SKIP: ffmpeg and ffprobe are needed and not installed (as root this demo" \
            "installs them: apt-get install ffmpeg)"
        exit 0
    fi
fi
DECODER2=${DECODER2:-$(command -v mpv >/dev/null && echo mpv || echo ffmpeg)}
if [[ $DECODER2 == mpv ]] && ! command -v mpv >/dev/null; then
    die "DECODER2=mpv but mpv is not installed (apt-get install mpv)"
fi

# Every output frame of the decoder, none dropped or duplicated.
if ffmpeg -hide_banner -h full 2>/dev/null | grep -q -- '^-fps_mode'; then
    passthrough=(-fps_mode passthrough)
else
    passthrough=(-vsync passthrough)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ectp-video.XXXXXX")
pids=()
result=1
LIMIT=$((DURATION + 30))   # seconds any one process may run before it is killed

cleanup() {
    stop_children
    if [[ $result -eq 0 && $KEEP != 1 ]]; then
        rm -rf "$work"
    else
        echo "video-demo: files kept in $work" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() {   # start <log> <command...>: in the background, time-limited; pid in $last_pid
    local log=$1
    shift
    timeout -k 5 "$LIMIT" "$@" 2>"$log" &
    last_pid=$!
    pids+=("$last_pid")
}

# ---- the video
video=$work/video.ts
case $CODEC in
    h264)
        enc=(-c:v libx264 -preset veryfast -pix_fmt yuv420p -g 25 -keyint_min 25
            -sc_threshold 0 -b:v 1000k -maxrate 1000k -bufsize 1000k)
        codec_name=H.264 ;;
    mpeg2)
        enc=(-c:v mpeg2video -g 25 -b:v 1500k -maxrate 1500k -bufsize 1000k)
        codec_name=MPEG-2 ;;
esac
say "making a ${DURATION} s test video: testsrc2 640x360, 25 fps, $codec_name in MPEG-TS, a keyframe every 25 frames"
if ! ffmpeg -hide_banner -nostdin -loglevel error -f lavfi -i "testsrc2=size=640x360:rate=25" \
        -t "$DURATION" "${enc[@]}" -f mpegts "$video" 2>"$work/make.err"; then
    cat "$work/make.err" >&2
    hint=
    [[ $CODEC == h264 ]] && hint=" (CODEC=mpeg2 does not need libx264)"
    echo "video-demo: ffmpeg could not make the video$hint" >&2
    exit 1
fi
size=$(wc -c <"$video")
bitrate=$(ffprobe -v error -show_entries format=bit_rate -of default=nw=1:nk=1 "$video")
is_uint "$bitrate" || { echo "video-demo: ffprobe gave no bitrate ($bitrate)" >&2; exit 1; }
# Each video packet in decoding order: its byte position and flags (K = key).
ffprobe -v error -select_streams v:0 -show_entries packet=pos,flags -of csv=p=0 "$video" \
    | awk -F, 'NF >= 2 && $1 ~ /^[0-9]+$/ { print $1, ($2 ~ /K/) }' >"$work/packets"
frames=$(wc -l <"$work/packets")
keys=$(awk '$2 { n++ } END { print n + 0 }' "$work/packets")
(( frames > 0 && keys > 0 )) || { echo "video-demo: ffprobe found no video packets" >&2; exit 1; }
# gserv -r is in KiB/s: the bitrate plus 5%, so the stream keeps up with the video.
rate=$(( (bitrate * 105 / 100 + 8191) / 8192 ))
say "$video: $size bytes, $frames frames, $keys keyframes, $bitrate bit/s (ffprobe)"

# ---- the TO and the TUs
decoder_ffmpeg() {   # decoder_ffmpeg <tu> [extra output...]: decodes the fifo, counts frames
    local tu=$1
    shift
    start "$work/tu$tu.dec.err" ffmpeg -hide_banner -nostdin -loglevel error \
        -i "$work/tu$tu.dec" -map 0:v:0 "${passthrough[@]}" -f null - \
        -progress "$work/tu$tu.progress" "$@"
}
decoder_mpv() {   # decoder_mpv <tu>: showinfo logs one line per frame the decoder gives
    local tu=$1
    timeout -k 5 "$LIMIT" mpv --no-config --no-input-terminal --untimed --framedrop=no \
        --vo=null --ao=null '--vf=lavfi=[showinfo]' --msg-level=all=error,ffmpeg=v - \
        <"$work/tu$tu.dec" >"$work/tu$tu.dec.out" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}
tu_start() {   # tu_start <tu> <decoder>: gclnt -> tee (a copy) -> the decoder, through fifos
    local tu=$1 decoder=$2
    mkfifo "$work/tu$tu.raw" "$work/tu$tu.dec"
    if [[ $decoder == mpv ]]; then
        decoder_mpv "$tu"
    elif [[ $tu == 1 ]]; then
        # a second output: the first frame decoded, as a PNG
        decoder_ffmpeg "$tu" -map 0:v:0 -frames:v 1 -update 1 "$work/tu$tu.png"
    else
        decoder_ffmpeg "$tu"
    fi
    dec_pid[tu]=$last_pid
    # (redirected in the background job: opening a fifo waits for its other end)
    timeout -k 5 "$LIMIT" tee "$work/tu$tu.ts" <"$work/tu$tu.raw" >"$work/tu$tu.dec" \
        2>"$work/tu$tu.tee.err" &
    tee_pid[tu]=$!
    pids+=("$!")
    start "$work/tu$tu.err" "$GCLNT" -l "$LOCAL" -g "$GROUP" -p "$PORT" -q -O "$work/tu$tu.raw"
    tu_pid[tu]=$last_pid
}
dec_pid=()
tee_pid=()
tu_pid=()
decoder=(ffmpeg ffmpeg "$DECODER2")   # indexed by TU

say "gserv: $rate KiB/s (the bitrate + 5%) from $LOCAL to $GROUP port $PORT, $CHUNK-byte messages"
say "TU 1 joins after $JOIN1 s and pipes into ${decoder[1]}, TU 2 after $JOIN2 s into ${decoder[2]}"
timeout -k 5 "$LIMIT" "$GSERV" -l "$LOCAL" -g "$GROUP" -p "$PORT" -r "$rate" -s "$CHUNK" -q \
    "$video" >"$work/gserv.log" 2>"$work/gserv.err" &
gserv_pid=$!
pids+=("$gserv_pid")
sleep "$JOIN1"
tu_start 1 "${decoder[1]}"
sleep "$(awk -v a="$JOIN1" -v b="$JOIN2" 'BEGIN { print b - a }')"
tu_start 2 "${decoder[2]}"

declare -A rc
wait_for() {   # wait_for <name> <pid>: its exit status in rc[name]
    rc[$1]=0
    wait "$2" || rc[$1]=$?
}
wait_for gserv "$gserv_pid"
for tu in 1 2; do
    wait_for "gclnt$tu" "${tu_pid[tu]}"
    wait_for "tee$tu" "${tee_pid[tu]}"
    wait_for "dec$tu" "${dec_pid[tu]}"
done
pids=()

# ---- the results
failures=0
check() {   # check <what> <command...>
    local what=$1
    shift
    if "$@"; then
        printf '  PASS  %s\n' "$what"
    else
        printf '  FAIL  %s\n' "$what"
        failures=$((failures + 1))
    fi
}
is_tail() {   # is_tail <file>: non-empty and the video's last bytes
    local n
    n=$(wc -c <"$1")
    (( n > 0 )) && tail -c "$n" "$video" | cmp -s - "$1"
}
decoded_frames() {   # decoded_frames <tu>
    local tu=$1
    if [[ ${decoder[tu]} == mpv ]]; then
        grep -c 'Parsed_showinfo_0: n:' "$work/tu$tu.dec.out" || true
    else
        sed -n 's/^frame=\([0-9]*\)$/\1/p' "$work/tu$tu.progress" 2>/dev/null | tail -n 1
    fi
}
# first_key <offset>: "index position" of the first keyframe at or after offset
# (index 0-based, in decoding order), or nothing
first_key() {
    awk -v o="$1" '$1 >= o && $2 { print NR - 1, $1; exit }' "$work/packets"
}

say "results"
check "gserv exited 0 (exit ${rc[gserv]})" [ "${rc[gserv]}" -eq 0 ]
first_index=
for tu in 1 2; do
    received=0
    [[ -f $work/tu$tu.ts ]] && received=$(wc -c <"$work/tu$tu.ts")
    offset=$(( size - received ))
    read -r index keypos < <(first_key "$offset"; echo) || true
    available=0
    [[ -n ${index:-} ]] && available=$(( frames - index ))
    decoded=$(decoded_frames "$tu")
    decoded=${decoded:-0}
    pct=$(awk -v o="$offset" -v s="$size" 'BEGIN { printf "%.1f", 100 * o / s }')
    echo "  TU $tu (${decoder[tu]}): received $received bytes, joined at byte $offset ($pct% into the file)"
    if [[ -n ${index:-} ]]; then
        echo "        first keyframe at or after it: frame $index at byte $keypos"
    else
        echo "        no keyframe at or after it"
    fi
    echo "        frames decoded $decoded, available $available (from that keyframe to the end)"
    [[ $tu == 1 ]] && first_index=${index:-}
    check "TU $tu: gclnt exited 0 (exit ${rc[gclnt$tu]})" [ "${rc[gclnt$tu]}" -eq 0 ]
    check "TU $tu: tee exited 0 (exit ${rc[tee$tu]})" [ "${rc[tee$tu]}" -eq 0 ]
    check "TU $tu: ${decoder[tu]} exited 0 (exit ${rc[dec$tu]})" [ "${rc[dec$tu]}" -eq 0 ]
    check "TU $tu: joined late (received less than the whole file)" [ "$offset" -gt 0 ]
    check "TU $tu: what it received is the file's last $received bytes" is_tail "$work/tu$tu.ts"
    check "TU $tu: gclnt reported those bytes" \
        grep -q "^gclnt: connection ended, received $received bytes$" "$work/tu$tu.err"
    check "TU $tu: some frames were available" [ "$available" -gt 0 ]
    check "TU $tu: decoded >= available ($decoded >= $available)" [ "$decoded" -ge "$available" ]
    if (( decoded > available )); then
        echo "        note: the decoder gave $(( decoded - available )) frames from before the keyframe"
    fi
done

# TU 1's first decoded frame is the keyframe where it could start: compare it,
# as RGB, with that frame decoded from the original.
rgb_md5() { ffmpeg -hide_banner -nostdin -loglevel error "$@" -frames:v 1 -f rawvideo -pix_fmt rgb24 - | md5sum | cut -d' ' -f1; }
png=$work/tu1.png
if [[ ${decoder[1]} == ffmpeg && -s $png && -n $first_index ]]; then
    mkdir -p "$(dirname "$FRAME")"
    cp "$png" "$FRAME"
    dims=$(ffprobe -v error -show_entries stream=width,height -of csv=p=0:s=x "$FRAME")
    got=$(rgb_md5 -i "$FRAME")
    want=$(rgb_md5 -i "$video" -vf "select=eq(n\\,$first_index)")
    say "TU 1's first decoded frame (frame $first_index, ${dims}) saved as $FRAME"
    check "that PNG is frame $first_index of the original, pixel for pixel" [ "$got" = "$want" ]
else
    check "TU 1's decoder saved its first frame as a PNG" false
fi

if (( failures == 0 )); then
    result=0
    say PASS
else
    say "FAIL ($failures checks failed)"
    for f in gserv.err tu1.err tu1.dec.err tu2.err tu2.dec.err tu2.dec.out; do
        [[ -f $work/$f ]] || continue
        echo "---- $f (last 10 lines)"
        tail -n 10 "$work/$f"
    done
fi
exit "$result"
