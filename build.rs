//! Generates include/ectp.h from src/ffi with cbindgen (configured by
//! cbindgen.toml). The header is committed; tests/header.rs fails when the
//! committed header differs from what the sources generate.
//!
//! It also gives the shared library the SONAME `libectp.so.MAJOR` (the major
//! version of Cargo.toml). The API's version node (`ECTP_MAJOR`) is not set
//! here: rustc passes the linker a version script of its own, which names
//! every exported function and wins over any script given after it, so the
//! top-level Makefile links the installed libectp.so itself (see there).

use std::env;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    set_soname();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml is valid");
    let out = dir.join("include").join("ectp.h");
    // Only src/ffi makes the C API: constants of the other layers stay out.
    let builder = cbindgen::Builder::new().with_config(config).with_src(dir.join("src/ffi/mod.rs"));
    match builder.generate() {
        Ok(bindings) => {
            // Writes only when the content changed, so the header's mtime is stable.
            bindings.write_to_file(&out);
            // A copy the tests compare with the committed header.
            let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
            bindings.write_to_file(out_dir.join("ectp.h"));
        }
        Err(e) => {
            // A syntax error in the sources is reported by rustc itself.
            println!("cargo:warning=cbindgen could not generate {}: {e}", out.display());
        }
    }
}

/// The SONAME, on the systems whose shared libraries are ELF.
fn set_soname() {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let elf = ["linux", "android", "freebsd", "netbsd", "openbsd", "dragonfly", "illumos", "solaris"];
    if elf.contains(&os.as_str()) {
        let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libectp.so.{major}");
    }
}
