#!/usr/bin/env bash
# Which containers survive a mid-stream join? A TU that joins late gets a
# tail of the stream, cut at an arbitrary byte. For each container this makes
# a 10 s clip (testsrc2 320x240, 25 fps, a keyframe every 25 frames), cuts
# off its first 37% + 333 bytes, pipes the rest into ffmpeg (and mpv when
# installed) and prints the frames decoded against the frames available from
# the first keyframe at or after the cut (ffprobe packet positions and key
# flags on the whole clip). "whole": the frames ffmpeg decodes from the whole
# clip through a pipe, as a TU that joined at the start would give it.
# The table in docs/video.md comes from this.
# Needs ffmpeg (Debian package ffmpeg); about 15 s.
set -euo pipefail

for tool in ffmpeg ffprobe; do
    command -v "$tool" >/dev/null || { echo "video-formats: $tool is missing: apt-get install ffmpeg" >&2; exit 2; }
done
has_mpv=0
command -v mpv >/dev/null && has_mpv=1
work=$(mktemp -d "${TMPDIR:-/tmp}/ectp-formats.XXXXXX")
trap 'rm -rf "$work"' EXIT

src=(-f lavfi -i testsrc2=size=320x240:rate=25 -t 10)
h264=(-c:v libx264 -preset veryfast -pix_fmt yuv420p -g 25 -keyint_min 25 -sc_threshold 0 -b:v 500k)
mpeg2=(-c:v mpeg2video -g 25 -b:v 1000k)
vp8=(-c:v libvpx -g 25 -b:v 500k -deadline realtime -cpu-used 8)

# name | file | what, then the encoder and muxer options
cases=(
    "MPEG-TS, H.264|ts-h264.ts|${h264[*]} -f mpegts"
    "MPEG-TS, MPEG-2|ts-mpeg2.ts|${mpeg2[*]} -f mpegts"
    "MPEG-PS, MPEG-2|ps-mpeg2.mpg|${mpeg2[*]} -f mpeg"
    "H.264 Annex B, SPS/PPS at each IDR|es.h264|${h264[*]} -f h264"
    "H.264 Annex B, SPS/PPS once|es-once.h264|derived from es.h264"
    "MPEG-2 elementary stream|es.m2v|${mpeg2[*]} -f mpeg2video"
    "MP4, moov at the end|mp4.mp4|${h264[*]} -f mp4"
    "MP4, moov first (faststart)|faststart.mp4|${h264[*]} -movflags +faststart -f mp4"
    "fragmented MP4|frag.mp4|${h264[*]} -movflags frag_keyframe+empty_moov+default_base_moof -f mp4"
    "Matroska, H.264|mkv.mkv|${h264[*]} -f matroska"
    "WebM, VP8|webm.webm|${vp8[*]} -f webm"
    "FLV, H.264|flv.flv|${h264[*]} -f flv"
)

count_ffmpeg() {   # (ffmpeg fails when it finds no stream: 0 frames)
    { ffmpeg -hide_banner -nostdin -loglevel quiet -i - -map 0:v:0 -fps_mode passthrough \
        -f null -progress pipe:1 - 2>/dev/null || true; } | sed -n 's/^frame=//p' | tail -n 1
}
count_mpv() {
    { mpv --no-config --no-input-terminal --untimed --framedrop=no --vo=null --ao=null \
        '--vf=lavfi=[showinfo]' --msg-level=all=no,ffmpeg=v - 2>&1 || true; } \
        | grep -c 'Parsed_showinfo_0: n:' || true
}

printf '%-36s %7s %9s %8s %9s %8s %6s\n' container whole bytes cut available ffmpeg mpv
for c in "${cases[@]}"; do
    IFS='|' read -r name file opts <<<"$c"
    f=$work/$file
    # shellcheck disable=SC2086 # opts is a list of words
    if [[ $file == es-once.h264 ]]; then
        # the same stream with its SPS and PPS (NAL types 7, 8) only at the start
        ffmpeg -hide_banner -nostdin -loglevel error -i "$work/es.h264" -c copy \
            -bsf:v 'filter_units=pass_types=7|8' -frames:v 1 -f h264 "$work/ps.h264"
        ffmpeg -hide_banner -nostdin -loglevel error -i "$work/es.h264" -c copy \
            -bsf:v 'filter_units=remove_types=7|8' -f h264 "$work/slices.h264"
        cat "$work/ps.h264" "$work/slices.h264" >"$f"
    elif ! ffmpeg -hide_banner -nostdin -loglevel error "${src[@]}" $opts "$f" 2>"$work/err"; then
        printf '%-36s (ffmpeg cannot make it here: %s)\n' "$name" "$(head -n 1 "$work/err")"
        continue
    fi
    size=$(wc -c <"$f")
    cut=$(( size * 37 / 100 + 333 ))
    available=$(ffprobe -v quiet -select_streams v:0 -show_entries packet=pos,flags -of csv=p=0 "$f" \
        | awk -F, -v o="$cut" 'NF >= 2 && $1 ~ /^[0-9]+$/ && $1 >= o && $2 ~ /K/ { f = 1 }
                               f && NF >= 2 { n++ } END { print n + 0 }')
    whole=$(count_ffmpeg <"$f")
    by_ffmpeg=$(tail -c +$((cut + 1)) "$f" | count_ffmpeg)
    by_mpv=-
    (( has_mpv )) && by_mpv=$(tail -c +$((cut + 1)) "$f" | count_mpv)
    printf '%-36s %7s %9d %8d %9d %8s %6s\n' "$name" "${whole:-0}" "$size" "$cut" "$available" "${by_ffmpeg:-0}" "$by_mpv"
done
