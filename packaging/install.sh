#!/usr/bin/env bash
# Installs or uninstalls libectp as a C library. Run by `make install` and
# `make uninstall` from the top of the source tree (see the Makefile), after
# `make` built the libraries in DIST:
#   install.sh install|uninstall
# Environment: DESTDIR, PREFIX (default /usr/local), LIBDIR, INCLUDEDIR,
# DATADIR, MANDIR, DOCDIR (relative values are under PREFIX), LDCONFIG,
# DIST (where make put the libraries), VERSION (of Cargo.toml).
set -euo pipefail

die() {
    echo "install.sh: $*" >&2
    exit 1
}

action=${1:-}
[[ $action == install || $action == uninstall ]] \
    || die "usage: install.sh install|uninstall (run by make install / make uninstall)"
[[ -f packaging/ectp.pc.in ]] || die "run from the top of the libectp tree (make install does)"
VERSION=${VERSION:?VERSION is not set (run by make install)}
[[ $VERSION =~ ^([0-9]+)\.[0-9]+\.[0-9]+$ ]] || die "VERSION '$VERSION' is not MAJOR.MINOR.PATCH"
MAJOR=${BASH_REMATCH[1]}
DIST=${DIST:?DIST is not set (run by make install)}
DESTDIR=${DESTDIR:-}
LDCONFIG=${LDCONFIG-ldconfig}

PREFIX=${PREFIX:-/usr/local}
[[ $PREFIX == /* ]] || die "PREFIX must be an absolute path (got '$PREFIX')"
while [[ $PREFIX == */ && $PREFIX != / ]]; do PREFIX=${PREFIX%/}; done
p=${PREFIX%/}   # "" for PREFIX=/

# A directory variable: its value or default, a relative one under PREFIX.
dir() {   # dir <name> <value> <default>
    local v=${2:-$3}
    [[ $v == /* ]] || v=$p/$v
    while [[ $v == */ && $v != / ]]; do v=${v%/}; done
    [[ $v != *[[:space:]]* ]] || die "$1 must not contain white space (got '$v')"
    printf '%s' "$v"
}
[[ $PREFIX != *[[:space:]]* ]] || die "PREFIX must not contain white space (got '$PREFIX')"
LIBDIR=$(dir LIBDIR "${LIBDIR:-}" lib)
INCLUDEDIR=$(dir INCLUDEDIR "${INCLUDEDIR:-}" include)
DATADIR=$(dir DATADIR "${DATADIR:-}" share)
MANDIR=$(dir MANDIR "${MANDIR:-}" "$DATADIR/man")
DOCDIR=$(dir DOCDIR "${DOCDIR:-}" "$DATADIR/doc/ectp")
PKGCONFIGDIR=$LIBDIR/pkgconfig
CMAKEDIR=$LIBDIR/cmake/ectp
D=$DESTDIR

shopt -s nullglob
man_pages=(docs/man/man3/*.3 docs/man/man7/*.7)
shopt -u nullglob

# The path of $2 below $1, or nothing when it is not below it.
below() {   # below <dir> <path>
    if [[ $2 == "$1"/* ]]; then printf '%s' "${2#"$1"/}"; fi
}

# A value for a sed replacement (delimiter |).
esc() {
    printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'
}

# The pkg-config file and the CMake package, for this PREFIX and these directories.
generate() {   # generate <template> <output>
    local lib_rel inc_rel cmake_rel up="" pc_libdir pc_includedir cm_libdir cm_includedir bits native
    lib_rel=$(below "$p" "$LIBDIR")
    inc_rel=$(below "$p" "$INCLUDEDIR")
    cmake_rel=$(below "$p" "$CMAKEDIR")
    # shellcheck disable=SC2016 # ${prefix} is pkg-config's, ${_ectp_prefix} CMake's
    {
        pc_libdir=$LIBDIR
        pc_includedir=$INCLUDEDIR
        [[ -z $lib_rel ]] || pc_libdir='${prefix}/'$lib_rel
        [[ -z $inc_rel ]] || pc_includedir='${prefix}/'$inc_rel
    }
    # The CMake files find the prefix from their own place (CMAKEDIR is
    # that many levels below it) when both directories are under it.
    cm_libdir=$LIBDIR
    cm_includedir=$INCLUDEDIR
    if [[ -n $cmake_rel && -n $lib_rel && -n $inc_rel ]]; then
        local part
        IFS=/ read -ra part <<<"$cmake_rel"
        up=$(printf '../%.0s' "${part[@]}")
        up=${up%/}
        # shellcheck disable=SC2016
        cm_libdir='${_ectp_prefix}/'$lib_rel
        # shellcheck disable=SC2016
        cm_includedir='${_ectp_prefix}/'$inc_rel
    fi
    native=$(cat "$DIST/native-static-libs")
    # ELF class of the library: 1 = 32-bit, 2 = 64-bit.
    case $(od -An -tu1 -j4 -N1 "$DIST/libectp.so.$VERSION" | tr -d ' ') in
        1) bits=32 ;;
        2) bits=64 ;;
        *) die "$DIST/libectp.so.$VERSION is not an ELF file" ;;
    esac
    sed -e "s|@PREFIX@|$(esc "$PREFIX")|g" \
        -e "s|@PC_LIBDIR@|$(esc "$pc_libdir")|g" \
        -e "s|@PC_INCLUDEDIR@|$(esc "$pc_includedir")|g" \
        -e "s|@CMAKE_UP@|$(esc "$up")|g" \
        -e "s|@INCLUDE_REL@|$(esc "$inc_rel")|g" \
        -e "s|@CMAKE_LIBDIR@|$(esc "$cm_libdir")|g" \
        -e "s|@CMAKE_INCLUDEDIR@|$(esc "$cm_includedir")|g" \
        -e "s|@NATIVE_LIBS@|$(esc "$native")|g" \
        -e "s|@CMAKE_NATIVE_LIBS@|$(esc "${native// /;}")|g" \
        -e "s|@DESCRIPTION@|$(esc "$description")|g" \
        -e "s|@VERSION@|$VERSION|g" -e "s|@MAJOR@|$MAJOR|g" \
        -e "s|@BITS@|$bits|g" -e "s|@SIZEOF_VOID_P@|$((bits / 8))|g" \
        "$1" >"$2.tmp"
    if grep -n '@[A-Z_]*@' "$2.tmp" >&2; then
        rm -f "$2.tmp"
        die "$1: a placeholder was left unreplaced"
    fi
    mv "$2.tmp" "$2"
}

put() {   # put <mode> <file> <dir>: install a file, say so
    install -m "$1" "$2" "$D$3/"
    echo "installed $D$3/$(basename "$2")"
}

do_install() {
    local f
    for f in "$DIST/libectp.so.$VERSION" "$DIST/libectp.a" "$DIST/native-static-libs" include/ectp.h; do
        [[ -f $f ]] || die "$f is missing: run make first"
    done
    description=$(awk -F'"' '/^\[/ { p = ($0 == "[package]") } p && /^description *=/ { print $2; exit }' Cargo.toml)
    description=${description:-ECTP-3 duplex multicast transport}

    install -d "$D$LIBDIR" "$D$INCLUDEDIR" "$D$PKGCONFIGDIR" "$D$CMAKEDIR"
    put 0755 "$DIST/libectp.so.$VERSION" "$LIBDIR"
    ln -sfn "libectp.so.$VERSION" "$D$LIBDIR/libectp.so.$MAJOR"
    ln -sfn "libectp.so.$MAJOR" "$D$LIBDIR/libectp.so"
    echo "installed $D$LIBDIR/libectp.so.$MAJOR -> libectp.so.$VERSION"
    echo "installed $D$LIBDIR/libectp.so -> libectp.so.$MAJOR"
    put 0644 "$DIST/libectp.a" "$LIBDIR"
    put 0644 include/ectp.h "$INCLUDEDIR"

    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/ectp-install.XXXXXX")
    # shellcheck disable=SC2064 # expanded now, on purpose
    trap "rm -rf '$tmp'" EXIT
    generate packaging/ectp.pc.in "$tmp/ectp.pc"
    generate packaging/ectpConfig.cmake.in "$tmp/ectpConfig.cmake"
    generate packaging/ectpConfigVersion.cmake.in "$tmp/ectpConfigVersion.cmake"
    put 0644 "$tmp/ectp.pc" "$PKGCONFIGDIR"
    put 0644 "$tmp/ectpConfig.cmake" "$CMAKEDIR"
    put 0644 "$tmp/ectpConfigVersion.cmake" "$CMAKEDIR"

    # docs/man/manN/page.N to MANDIR/manN/ (the .so link pages name manN/page.N).
    for f in "${man_pages[@]}"; do
        install -d "$D$MANDIR/$(basename "$(dirname "$f")")"
        put 0644 "$f" "$MANDIR/$(basename "$(dirname "$f")")"
    done
    if [[ -f docs/api.md ]]; then
        install -d "$D$DOCDIR"
        put 0644 docs/api.md "$DOCDIR"
    fi

    if [[ -z $D && -n $LDCONFIG && $(id -u) == 0 ]]; then
        if command -v "$LDCONFIG" >/dev/null; then
            echo "$LDCONFIG"
            "$LDCONFIG" || echo "install.sh: $LDCONFIG failed; run it yourself" >&2
        fi
    fi
}

# Removes a file or symlink if there, says so.
remove() {   # remove <path>
    if [[ -e $1 || -L $1 ]]; then
        rm -f "$1"
        echo "removed $1"
    fi
}

# Removes the symlink $1 if it points to $2.
remove_link() {   # remove_link <path> <target>
    if [[ -L $1 && $(readlink "$1") == "$2" ]]; then
        remove "$1"
    fi
}

do_uninstall() {
    local f
    remove "$D$LIBDIR/libectp.so.$VERSION"
    remove_link "$D$LIBDIR/libectp.so.$MAJOR" "libectp.so.$VERSION"
    remove_link "$D$LIBDIR/libectp.so" "libectp.so.$MAJOR"
    remove "$D$LIBDIR/libectp.a"
    remove "$D$INCLUDEDIR/ectp.h"
    remove "$D$PKGCONFIGDIR/ectp.pc"
    remove "$D$CMAKEDIR/ectpConfig.cmake"
    remove "$D$CMAKEDIR/ectpConfigVersion.cmake"
    for f in "${man_pages[@]}"; do
        remove "$D$MANDIR/$(basename "$(dirname "$f")")/$(basename "$f")"
    done
    remove "$D$DOCDIR/api.md"
    # The directories that are libectp's own, if now empty.
    for f in "$D$CMAKEDIR" "$D$DOCDIR"; do
        if [[ -d $f ]] && rmdir "$f" 2>/dev/null; then
            echo "removed $f/"
        fi
    done
}

"do_$action"
