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

# (9) `make install` of the top-level Makefile, into temporary prefixes: the
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
    local man=("$root"/docs/man/*.3)
    shopt -u nullglob
    echo "${#man[@]} man pages in docs/man"
    for f in "${man[@]}"; do
        expect "man page $(basename "$f") installed" cmp -s "$f" "$p/share/man/man3/$(basename "$f")" || ok=1
    done
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

cleanup
trap - EXIT
if [[ $skipped -gt 0 ]]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[[ $failed -eq 0 ]]
