# libectp as a C library: builds the libraries to install, installs them.
#
#   make             cargo build --release, then in target/release/dist/:
#                    libectp.so.VERSION  SONAME libectp.so.MAJOR; exports exactly
#                                        the functions of include/ectp.h, under the
#                                        version node ECTP_MAJOR
#                    libectp.a           one object; every symbol but those
#                                        functions made local (no Rust internals)
#                    and the link target/release/libectp.so.MAJOR -> libectp.so
#                    that programs linked against target/release need at run time
#   make install     the same, then installs under PREFIX (packaging/install.sh):
#                    LIBDIR/libectp.so.VERSION, libectp.so.MAJOR, libectp.so,
#                    LIBDIR/libectp.a, INCLUDEDIR/ectp.h, LIBDIR/pkgconfig/ectp.pc,
#                    LIBDIR/cmake/ectp/ectpConfig.cmake, ectpConfigVersion.cmake,
#                    MANDIR/man3/*.3 (from docs/man), DOCDIR/api.md (docs/api.md)
#   make uninstall   removes those files (give the same variables as to install)
#   make clean       removes target/release/dist (cargo clean does the rest)
#
# Variables, as in GNU packages (relative directories are under PREFIX):
#   PREFIX=/usr/local      DESTDIR=  (a staged install: $(DESTDIR)$(PREFIX)/...)
#   LIBDIR=PREFIX/lib      e.g. LIBDIR=lib64, LIBDIR=lib/x86_64-linux-gnu
#   INCLUDEDIR=PREFIX/include  DATADIR=PREFIX/share  MANDIR=DATADIR/man
#   DOCDIR=DATADIR/doc/ectp
#   BUILD=0            install what an earlier `make` built, without running cargo
#                      (`make && sudo make install BUILD=0` when root has no cargo)
#   LDCONFIG=ldconfig  run after an install as root without DESTDIR; LDCONFIG= skips it
#   CARGO CC LD AR OBJCOPY NM READELF; CARGO_TARGET_DIR is honoured.
#
# Why the libraries are linked here and not taken from cargo: rustc gives the
# cdylib a version script of its own (every exported function global and
# unversioned); rust-lld keeps the version of the first script that names a
# symbol and GNU ld refuses a second script beside it, so no script passed
# from build.rs can put the API under a version node. The libraries are made
# from the objects of cargo's libectp.a instead: `ld -r` joins them into one
# object (dropping the sections no API function reaches), objcopy makes every
# symbol but the API local and drops the debug info, then `cc -shared` with
# our version script makes the .so and `ar` the .a. With its internals local,
# the .a can be linked into one program beside another Rust static library
# (each has its own copy of the standard library). target/release/libectp.so
# (SONAME from build.rs) stays what the C examples and tests in the tree use.

CARGO ?= cargo
OBJCOPY ?= objcopy
NM ?= nm
READELF ?= readelf
LDCONFIG ?= ldconfig
BUILD ?= 1

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE := $(TARGET_DIR)/release
DIST := $(RELEASE)/dist
HEADER := include/ectp.h

# The version of the [package] in Cargo.toml.
VERSION := $(shell awk -F'"' '/^\[/ { p = ($$0 == "[package]") } p && /^version *=/ { print $$2; exit }' Cargo.toml)
MAJOR := $(firstword $(subst ., ,$(VERSION)))
ifeq ($(shell printf '%s' '$(VERSION)' | grep -Ex '[0-9]+\.[0-9]+\.[0-9]+'),)
$(error Cargo.toml: no version MAJOR.MINOR.PATCH in [package] (found "$(VERSION)"))
endif
SONAME := libectp.so.$(MAJOR)
SO := $(DIST)/libectp.so.$(VERSION)

# Prototypes in the header, one per line (cbindgen.toml: args = "horizontal"):
# the name before the first "(" of each line that is not a typedef.
API_NAMES := sed -nE '/^typedef/d; s/^[A-Za-z_][A-Za-z0-9_ *]*[ *]([A-Za-z_][A-Za-z0-9_]*)\(.*\);$$/\1/p'

.PHONY: all install uninstall clean dev-link FORCE

all: $(SO) $(DIST)/libectp.a dev-link

# cargo decides whether anything needs rebuilding; the files made from its
# outputs are remade only when those changed. The second call builds the
# staticlib alone, to learn the native libraries it needs (printed by rustc;
# cargo replays the note when nothing was rebuilt).
$(RELEASE)/libectp.so $(RELEASE)/libectp.a $(DIST)/native-static-libs &: FORCE
	mkdir -p $(DIST)
	$(CARGO) build --release
	$(CARGO) rustc --release --lib --crate-type staticlib -- --print native-static-libs \
	    2>$(DIST)/rustc.log || { cat $(DIST)/rustc.log >&2; exit 1; }
	grep -v '^\(note: \|$$\)' $(DIST)/rustc.log >&2 || true
	sed -n 's/^note: native-static-libs: //p' $(DIST)/rustc.log | tail -n 1 >$(DIST)/native-static-libs.new
	@test -s $(DIST)/native-static-libs.new || { \
	    echo "make: rustc printed no native-static-libs note (see $(DIST)/rustc.log);" \
	         "run 'touch build.rs' and make again" >&2; exit 1; }
	cmp -s $(DIST)/native-static-libs.new $(DIST)/native-static-libs \
	    || mv $(DIST)/native-static-libs.new $(DIST)/native-static-libs
	rm -f $(DIST)/native-static-libs.new

FORCE:

# The API: the functions declared in the header that build.rs generated.
$(DIST)/ectp.syms: $(HEADER) $(RELEASE)/libectp.a
	$(API_NAMES) $(HEADER) >$@.new
	@test -s $@.new || { echo "make: no function found in $(HEADER)" >&2; rm -f $@.new; exit 1; }
	mv $@.new $@

$(DIST)/ectp.map: $(DIST)/ectp.syms
	{ echo '/* libectp: the functions of include/ectp.h; everything else is local. */'; \
	  echo 'ECTP_$(MAJOR) {'; echo '  global:'; sed 's/.*/    &;/' $<; \
	  echo '  local:'; echo '    *;'; echo '};'; } >$@

# One relocatable object holding what the API functions reach (the roots of
# --gc-sections are the -u symbols; .init_array and the like are kept), then
# every symbol but the API made local, and:
# - the section groups (COMDAT) removed: their signature symbols are local
#   now, so a group must not be merged with a same-named one of another
#   object (another Rust library's DW.ref.rust_eh_personality);
# - the symbols that every member of cargo's archive references only weakly
#   made weak again (ld -r --gc-sections leaves them strong when the
#   references were dropped: pidfd_spawnp and the like, absent from older
#   C libraries);
# - .llvm_addrsig (stale after ld -r) and .llvmbc/.llvmcmd (bitcode of the
#   standard library, of no use to a C linker, and which upsets the LTO
#   plugins of nm and ld) dropped, and the debug info.
$(DIST)/libectp.o: $(RELEASE)/libectp.a $(DIST)/ectp.syms
	$(READELF) -sW $(RELEASE)/libectp.a | awk '$$7 == "UND" && NF >= 8 { if ($$5 == "WEAK") w[$$8] = 1; else s[$$8] = 1 } \
	    END { for (n in w) if (!(n in s)) print n }' | sort >$(DIST)/weak-undefined
	$(LD) -r --gc-sections $$(sed 's/^/-u /' $(DIST)/ectp.syms) -o $@.tmp --whole-archive $(RELEASE)/libectp.a
	$(OBJCOPY) --strip-debug -R .group -R .llvm_addrsig -R .llvmbc -R .llvmcmd \
	    --keep-global-symbols=$(DIST)/ectp.syms --weaken-symbols=$(DIST)/weak-undefined $@.tmp $@
	rm -f $@.tmp
	@$(NM) --defined-only -g $@ | awk '$$2 == "T" { print $$3 }' | sort >$@.defined; \
	missing=$$(sort $(DIST)/ectp.syms | comm -23 - $@.defined); rm -f $@.defined; \
	if [ -n "$$missing" ]; then rm -f $@; \
	    echo "make: declared in $(HEADER) but not defined by the library:" $$missing >&2; exit 1; fi

$(DIST)/libectp.a: $(DIST)/libectp.o
	rm -f $@
	$(AR) rcD $@ $<

$(SO): $(DIST)/libectp.o $(DIST)/ectp.map $(DIST)/native-static-libs
	$(CC) -shared -o $@ -Wl,-soname,$(SONAME) -Wl,--version-script=$(DIST)/ectp.map \
	    -Wl,--no-undefined-version -Wl,--gc-sections -Wl,-O1 -Wl,-z,relro,-z,now -Wl,-z,noexecstack \
	    $(DIST)/libectp.o -Wl,--as-needed $$(cat $(DIST)/native-static-libs)

# Programs linked against target/release/libectp.so ask for its SONAME at run
# time; an existing file of that name (an installed library?) is left alone.
dev-link: $(RELEASE)/libectp.so
	@if [ ! -e $(RELEASE)/$(SONAME) ] && [ ! -L $(RELEASE)/$(SONAME) ]; then \
	    echo "ln -s libectp.so $(RELEASE)/$(SONAME)"; ln -s libectp.so $(RELEASE)/$(SONAME); fi

INSTALL_VARS = DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' LIBDIR='$(LIBDIR)' INCLUDEDIR='$(INCLUDEDIR)' \
    DATADIR='$(DATADIR)' MANDIR='$(MANDIR)' DOCDIR='$(DOCDIR)' LDCONFIG='$(LDCONFIG)' \
    DIST='$(DIST)' VERSION='$(VERSION)'

install: $(if $(filter 0,$(BUILD)),,all)
	$(INSTALL_VARS) ./packaging/install.sh install

uninstall:
	$(INSTALL_VARS) ./packaging/install.sh uninstall

clean:
	rm -rf $(DIST)
