//! The committed include/ectp.h must be what the sources generate: a change
//! to src/ffi without the regenerated header fails here (and in CI).

use std::process::Command;

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/ectp.h"));

#[test]
fn committed_header_matches_the_sources() {
    let root = env!("CARGO_MANIFEST_DIR");
    let committed = Command::new("git")
        .args(["-C", root, "show", "HEAD:include/ectp.h"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let committed = match committed {
        Some(c) => c,
        // Not a git checkout (a source tarball): the file on disk is what ships.
        None => std::fs::read_to_string(format!("{root}/include/ectp.h")).expect("include/ectp.h exists"),
    };
    assert!(committed == GENERATED, "include/ectp.h is stale: commit the header that `cargo build` regenerated");
}

#[test]
fn header_declares_the_whole_contract() {
    for name in [
        "msocket",
        "msetsockopt",
        "mgetsockopt",
        "mgetesockopt",
        "mcreate",
        "mjoin",
        "msendm",
        "msendmsg",
        "mrecvmsg",
        "mtoken_get",
        "mtoken_return",
        "mjoin_confirm",
        "mtoken_confirm",
        "mleave",
        "mterminate",
    ] {
        assert!(GENERATED.contains(&format!(" {name}(")), "{name} missing from ectp.h");
    }
    for name in [
        "SOL_ECTP",
        "ECTP_TCO",
        "ECTP_RO",
        "ECTP_AGN",
        "ECTP_MSS",
        "ECTP_FDN",
        "ECTP_HGT",
        "ECTP_CCT",
        "ECTP_JOIN_CALLBACK",
        "ECTP_TOKEN_CALLBACK",
        "ECTP_MEMBERS",
        "ECTP_USER_ID",
        "ECTP_TOKEN_ID",
        "ECTP_TCO_FLAT",
        "ECTP_TCO_TREE",
        "ECTP_RO_UNRELIABLE",
        "ECTP_RO_SEMIRELIABLE",
        "ECTP_RO_RELIABLE",
        "ECTP_MSG_TRUNC",
        "ECTP_MSG_GAP",
        "struct ectp_rcvinfo",
        "ectp_join_callback",
        "ectp_token_callback",
    ] {
        assert!(GENERATED.contains(name), "{name} missing from ectp.h");
    }
    for include in ["<stdint.h>", "<sys/types.h>", "<sys/socket.h>"] {
        assert!(GENERATED.contains(include), "ectp.h must include {include}");
    }
}
