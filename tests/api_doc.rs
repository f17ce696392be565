//! The documentation is kept in step with the header (issue 9, item 7):
//!
//! - every function, `#define`, struct, struct field and typedef of
//!   include/ectp.h appears in docs/api.md (a function or typedef in a
//!   heading, a struct in a heading with its fields in backticks in that
//!   section, a constant in backticks);
//! - every function has a man page in docs/man/man3 (of its own or a `.so`
//!   link) whose NAME section names it, every man page is linked from
//!   docs/api.md, and each renders without a warning (`groff -man -ww`,
//!   skipped when groff is missing);
//! - README's C example (its first ```c block) is the one in docs/api.md and
//!   compiles, like every complete example of docs/api.md, as C99, C11 and
//!   C++17 with -Wall -Wextra -Werror -pedantic (skipped without cc/c++).
//!
//! No root, no network. The checks are functions of the texts, so that the
//! last tests can show that they do fail when a name is missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

// ---------------------------------------------------------------- the header

/// The names a C program can use, as the header declares them.
#[derive(Debug, Default)]
struct Header {
    functions: BTreeSet<String>,
    defines: BTreeSet<String>,
    typedefs: BTreeSet<String>,
    /// Each struct tag with its fields, in order.
    structs: Vec<(String, Vec<String>)>,
}

/// The text without its /* */ and // comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
            out.push(' ');
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The last identifier in `s` (array brackets and their size ignored).
fn last_ident(s: &str) -> Option<String> {
    let s = s.split('[').next().unwrap_or(s);
    let end = s.trim_end();
    let start = end.rfind(|c: char| !is_ident_char(c)).map_or(0, |i| i + 1);
    let id = &end[start..];
    (!id.is_empty() && !id.starts_with(|c: char| c.is_ascii_digit())).then(|| id.to_string())
}

fn parse_header(text: &str) -> Header {
    let text = strip_comments(text);
    let mut h = Header::default();
    let mut code = String::new();
    let mut in_cplusplus = false;
    let mut guard = None;
    for line in text.lines() {
        let t = line.trim();
        if in_cplusplus {
            in_cplusplus = !t.starts_with("#endif");
            continue;
        }
        if t.starts_with("#ifdef __cplusplus") {
            in_cplusplus = true;
        } else if let Some(g) = t.strip_prefix("#ifndef") {
            guard.get_or_insert_with(|| g.trim().to_string());
        } else if let Some(d) = t.strip_prefix("#define") {
            let mut words = d.split_whitespace();
            if let Some(name) = words.next()
                && Some(name) != guard.as_deref()
            {
                h.defines.insert(name.split('(').next().unwrap_or(name).to_string());
            }
        } else if !t.starts_with('#') {
            code.push_str(line);
            code.push('\n');
        }
    }
    // Statements end at a ';' outside braces.
    let mut depth = 0usize;
    let mut stmt = String::new();
    for c in code.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => {
                classify(stmt.trim(), &mut h);
                stmt.clear();
                continue;
            }
            _ => {}
        }
        stmt.push(c);
    }
    assert!(stmt.trim().is_empty(), "ectp.h: unterminated declaration at the end: {stmt:?}");
    h
}

fn classify(stmt: &str, h: &mut Header) {
    let stmt = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
    if stmt.is_empty() {
        return;
    }
    if let Some(rest) = stmt.strip_prefix("typedef ") {
        let name = match rest.find("(*") {
            Some(i) => rest[i + 2..].split(')').next().map(str::trim).map(str::to_string),
            None => last_ident(rest),
        };
        h.typedefs.insert(name.unwrap_or_else(|| panic!("ectp.h: a typedef without a name: {stmt}")));
    } else if let (Some(rest), Some(open)) = (stmt.strip_prefix("struct "), stmt.find('{')) {
        let tag = rest.split(|c: char| !is_ident_char(c)).next().unwrap_or("").to_string();
        let close = stmt.rfind('}').unwrap_or(stmt.len());
        let fields = stmt[open + 1..close].split(';').filter_map(last_ident).collect();
        h.structs.push((tag, fields));
    } else if let Some(paren) = stmt.find('(') {
        let name = last_ident(&stmt[..paren]).unwrap_or_else(|| panic!("ectp.h: cannot name {stmt}"));
        h.functions.insert(name);
    } else {
        panic!("ectp.h: a declaration this test does not know how to check: {stmt}");
    }
}

// ---------------------------------------------------------------- docs/api.md

/// Whether `name` occurs in `text` as a whole identifier.
fn has_word(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

fn headings(md: &str) -> impl Iterator<Item = &str> {
    md.lines().filter(|l| l.starts_with('#'))
}

/// The section of `md` under the first heading that names `struct tag`, up
/// to the next heading of the same or a higher level.
fn struct_section<'a>(md: &'a str, tag: &str) -> Option<&'a str> {
    let want = format!("struct {tag}");
    let mut start = None;
    let mut level = 0;
    let mut offset = 0;
    for line in md.split_inclusive('\n') {
        let l = line.trim_end();
        if l.starts_with('#') {
            let this = l.chars().take_while(|&c| c == '#').count();
            match start {
                None if has_word(l, &want) => {
                    start = Some(offset + line.len());
                    level = this;
                }
                Some(s) if this <= level => return Some(&md[s..offset]),
                _ => {}
            }
        }
        offset += line.len();
    }
    start.map(|s| &md[s..])
}

/// Every name of the header that docs/api.md does not document, as
/// "kind name" lines.
fn missing_from_api_md(h: &Header, md: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for f in &h.functions {
        if !headings(md).any(|l| has_word(l, f)) {
            missing.push(format!("function {f} (needs a heading)"));
        }
    }
    for t in &h.typedefs {
        if !headings(md).any(|l| has_word(l, t)) {
            missing.push(format!("typedef {t} (needs a heading)"));
        }
    }
    for d in &h.defines {
        if !md.contains(&format!("`{d}`")) {
            missing.push(format!("constant {d} (needs `{d}`)"));
        }
    }
    for (tag, fields) in &h.structs {
        match struct_section(md, tag) {
            None => missing.push(format!("struct {tag} (needs a heading)")),
            Some(sec) => {
                for f in fields {
                    if !sec.contains(&format!("`{f}`")) {
                        missing.push(format!("field {tag}.{f} (needs `{f}` in the struct's section)"));
                    }
                }
            }
        }
    }
    missing
}

// ---------------------------------------------------------------- man pages

/// The man pages of docs/man: (path relative to docs/man, content).
type Pages = Vec<(String, String)>;

fn man_pages(dir: &Path) -> Pages {
    let mut pages = Vec::new();
    for sub in ["man3", "man7"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for e in entries {
            let e = e.expect("a readable directory entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(e.path()).unwrap_or_else(|err| panic!("{name}: {err}"));
            pages.push((format!("{sub}/{name}"), text));
        }
    }
    pages.sort();
    pages
}

/// The names listed in a page's NAME section ("a, b \- what").
fn page_names(text: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(".SH NAME"));
    lines.next();
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with(".SH")).collect();
    let body = body.join(" ");
    let names = body.split("\\-").next().unwrap_or("");
    names.split(',').map(|n| n.trim().replace("\\_", "_")).filter(|n| !n.is_empty()).collect()
}

/// The page a `.so` link points to (relative to docs/man), if `text` is one.
fn so_target(text: &str) -> Option<&str> {
    text.lines().find(|l| !l.starts_with(".\\\"") && !l.trim().is_empty())?.strip_prefix(".so ").map(str::trim)
}

/// Functions without a man page that names them, broken links, and pages
/// docs/api.md does not link.
fn man_problems(h: &Header, pages: &Pages, md: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let find = |rel: &str| pages.iter().find(|(p, _)| p == rel).map(|(_, t)| t.as_str());
    for f in &h.functions {
        let rel = format!("man3/{f}.3");
        let Some(text) = find(&rel) else {
            problems.push(format!("function {f}: no docs/man/{rel}"));
            continue;
        };
        let (page, text) = match so_target(text) {
            Some(target) => match find(target) {
                Some(t) => (target.to_string(), t),
                None => {
                    problems.push(format!("docs/man/{rel}: .so {target}, which does not exist"));
                    continue;
                }
            },
            None => (rel.clone(), text),
        };
        if !page_names(text).iter().any(|n| n == f) {
            problems.push(format!("function {f}: the NAME section of docs/man/{page} does not name it"));
        }
    }
    for (rel, _) in pages {
        if !md.contains(&format!("](man/{rel})")) {
            problems.push(format!("docs/man/{rel} is not linked from docs/api.md (as [..](man/{rel}))"));
        }
    }
    problems
}

// ---------------------------------------------------------------- C examples

/// The first ```c block of `md`.
fn first_c_block(md: &str) -> Option<String> {
    c_blocks(md).into_iter().next()
}

fn c_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match cur.as_mut() {
            None if line == "```c" => cur = Some(String::new()),
            None => {}
            Some(_) if line.starts_with("```") => blocks.extend(cur.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    blocks
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Compile `source` as C99, C11 and C++17 against include/ectp.h; the
/// compilers' complaints, or None when a compiler is missing.
fn compile_everywhere(name: &str, source: &str) -> Option<Vec<String>> {
    if !have("cc") || !have("c++") {
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("api_doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("the example written");
    let include = root().join("include");
    let mut errors = Vec::new();
    for (tool, lang, std) in [("cc", "c", "c99"), ("cc", "c", "c11"), ("c++", "c++", "c++17")] {
        let out = dir.join(format!("{name}-{std}.o"));
        let r = Command::new(tool)
            .args(["-x", lang, &format!("-std={std}"), "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
            .arg(&include)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        if !r.status.success() {
            errors.push(format!("{name} as {std}:\n{}", String::from_utf8_lossy(&r.stderr)));
        }
    }
    Some(errors)
}

// ---------------------------------------------------------------- the tests

fn header() -> Header {
    let h = parse_header(&read("include/ectp.h"));
    // The parser itself: it must see what the header is known to have.
    for f in ["msocket", "mgetesockopt", "mrecvmsg", "mterminate", "ectp_get_stats", "ectp_list_members"] {
        assert!(h.functions.contains(f), "the parser missed function {f}: {:?}", h.functions);
    }
    for d in ["SOL_ECTP", "ECTP_TCO", "ECTP_MSG_GAP", "ECTP_LEAVE_FAILED"] {
        assert!(h.defines.contains(d), "the parser missed #define {d}");
    }
    assert!(!h.defines.contains("ECTP_H"), "the include guard is not a constant");
    assert!(h.typedefs.contains("ectp_join_callback"), "the parser missed a typedef: {:?}", h.typedefs);
    let rcv = h.structs.iter().find(|(t, _)| t == "ectp_rcvinfo").expect("struct ectp_rcvinfo parsed");
    assert_eq!(rcv.1, ["user_id", "token_id", "flags", "from", "fromlen"]);
    h
}

#[test]
fn every_name_of_the_header_is_in_api_md() {
    let h = header();
    let missing = missing_from_api_md(&h, &read("docs/api.md"));
    assert!(missing.is_empty(), "docs/api.md does not document:\n  {}", missing.join("\n  "));
}

#[test]
fn every_function_has_a_man_page_and_every_page_is_linked() {
    let h = header();
    let pages = man_pages(&root().join("docs/man"));
    assert!(pages.iter().any(|(p, _)| p == "man7/ectp.7"), "docs/man/man7/ectp.7 is missing");
    let problems = man_problems(&h, &pages, &read("docs/api.md"));
    assert!(problems.is_empty(), "man pages:\n  {}", problems.join("\n  "));
}

#[test]
fn man_pages_render_without_warnings() {
    if !have("groff") {
        eprintln!("skip: groff is not installed (Debian: groff-base)");
        return;
    }
    let dir = root().join("docs/man");
    let mut bad = Vec::new();
    for (rel, _) in man_pages(&dir) {
        // From docs/man, so that `.so man3/x.3` resolves as it does installed.
        let r = Command::new("groff")
            .args(["-man", "-ww", "-z", "-Tutf8", &rel])
            .current_dir(&dir)
            .output()
            .expect("groff runs");
        if !r.status.success() || !r.stderr.is_empty() {
            bad.push(format!("{rel}: exit {:?}\n{}", r.status.code(), String::from_utf8_lossy(&r.stderr)));
        }
    }
    assert!(bad.is_empty(), "groff -man -ww warned:\n{}", bad.join("\n"));
}

#[test]
fn readme_example_compiles_as_c99_c11_and_cxx17() {
    let readme = read("README.md");
    let example = first_c_block(&readme).expect("README.md has a ```c block");
    assert!(example.contains("int main"), "README.md's first ```c block is not a whole program:\n{example}");
    let api = read("docs/api.md");
    assert!(
        c_blocks(&api).contains(&example),
        "docs/api.md (Examples) must show README.md's C example as it is; README's is:\n{example}"
    );
    let mut sources = vec![("readme".to_string(), example)];
    for (i, b) in c_blocks(&api).into_iter().filter(|b| b.contains("int main")).enumerate() {
        sources.push((format!("api_md_example{i}"), b));
    }
    let mut errors = Vec::new();
    for (name, src) in &sources {
        match compile_everywhere(name, src) {
            None => {
                eprintln!("skip: cc or c++ is not installed");
                return;
            }
            Some(e) => errors.extend(e),
        }
    }
    assert!(errors.is_empty(), "examples that do not compile:\n{}", errors.join("\n"));
}

// ---------------------------------------------------------------- the checks fail when they should

const SAMPLE_HEADER: &str = "#ifndef X_H\n#define X_H\n#include <stdint.h>\n\
    #ifdef __cplusplus\nextern \"C\" {\n#endif // __cplusplus\n\
    /** A constant. */\n#define ECTP_ONE 1\n\
    struct ectp_pair { uint32_t left; /* the left */ uint8_t right[4]; };\n\
    typedef void (*ectp_cb)(int sd, uint32_t id);\n\
    typedef int ectp_int;\n\
    int ectp_do(int sd,\n  const struct ectp_pair *p);\n\
    #ifdef __cplusplus\n}  // extern \"C\"\n#endif\n#endif /* X_H */\n";

const SAMPLE_MD: &str = "# API\n\n## Functions\n\n### ectp_do\n\nUses `ECTP_ONE`.\n\n\
    ## Callbacks\n\n### ectp_cb, ectp_int\n\n## Structures\n\n### struct ectp_pair\n\n\
    | `left` | `right` |\n\n## Man pages\n\n[ectp_do(3)](man/man3/ectp_do.3)\n";

#[test]
fn the_parser_reads_every_kind_of_declaration() {
    let h = parse_header(SAMPLE_HEADER);
    assert_eq!(h.functions.iter().collect::<Vec<_>>(), ["ectp_do"]);
    assert_eq!(h.defines.iter().collect::<Vec<_>>(), ["ECTP_ONE"]);
    assert_eq!(h.typedefs.iter().collect::<Vec<_>>(), ["ectp_cb", "ectp_int"]);
    assert_eq!(h.structs, [("ectp_pair".to_string(), vec!["left".to_string(), "right".to_string()])]);
    assert_eq!(missing_from_api_md(&h, SAMPLE_MD), Vec::<String>::new());
}

#[test]
fn a_missing_name_fails_the_check() {
    let h = parse_header(SAMPLE_HEADER);
    let cases = [
        ("### ectp_do", "### something else", "function ectp_do"),
        ("`ECTP_ONE`", "ECTP_ONE", "constant ECTP_ONE"),
        ("### ectp_cb, ectp_int", "### ectp_int", "typedef ectp_cb"),
        ("### struct ectp_pair", "### pairs", "struct ectp_pair"),
        ("| `left` |", "| left |", "field ectp_pair.left"),
    ];
    for (from, to, expect) in cases {
        let md = SAMPLE_MD.replace(from, to);
        let missing = missing_from_api_md(&h, &md);
        assert!(missing.iter().any(|m| m.starts_with(expect)), "removing {from:?} should report {expect}: {missing:?}");
    }
    // A field named in another section does not count for its struct.
    let md = SAMPLE_MD.replace("| `left` | `right` |", "| `right` |") + "\n## Other\n\n`left`\n";
    assert!(missing_from_api_md(&h, &md).iter().any(|m| m.starts_with("field ectp_pair.left")));
    // A new function in the header, not in the document.
    let h2 = parse_header(&SAMPLE_HEADER.replace("int ectp_do(", "int ectp_new(void);\nint ectp_do("));
    assert!(missing_from_api_md(&h2, SAMPLE_MD).iter().any(|m| m.starts_with("function ectp_new")));
}

#[test]
fn a_missing_or_unlinked_man_page_fails_the_check() {
    let h = parse_header(SAMPLE_HEADER);
    let page = ".TH ECTP_DO 3\n.SH NAME\nectp_do, ectp_undo \\- do\n.SH DESCRIPTION\nx\n".to_string();
    let ok: Pages = vec![("man3/ectp_do.3".into(), page.clone())];
    assert_eq!(man_problems(&h, &ok, SAMPLE_MD), Vec::<String>::new());
    // No page.
    assert!(man_problems(&h, &vec![], SAMPLE_MD).iter().any(|p| p.starts_with("function ectp_do: no")));
    // A page whose NAME section does not name the function.
    let other: Pages = vec![("man3/ectp_do.3".into(), page.replace("ectp_do, ", ""))];
    assert!(man_problems(&h, &other, SAMPLE_MD).iter().any(|p| p.contains("does not name it")));
    // A link page: fine when its target names the function, an error when the target is missing.
    let linked: Pages =
        vec![("man3/ectp_do.3".into(), ".so man3/ectp_undo.3\n".into()), ("man3/ectp_undo.3".into(), page.clone())];
    let md = format!("{SAMPLE_MD}[u](man/man3/ectp_undo.3)\n");
    assert_eq!(man_problems(&h, &linked, &md), Vec::<String>::new());
    let broken: Pages = vec![("man3/ectp_do.3".into(), ".so man3/ectp_gone.3\n".into())];
    assert!(man_problems(&h, &broken, SAMPLE_MD).iter().any(|p| p.contains("does not exist")));
    // A page docs/api.md does not link.
    assert!(man_problems(&h, &linked, SAMPLE_MD).iter().any(|p| p.contains("ectp_undo.3 is not linked")));
}

#[test]
fn a_broken_example_fails_to_compile() {
    // Designated initialisers that leave fields out: valid C99, an error in
    // C++17 with -Wextra -Werror (what README's example once was).
    let src = "#include <ectp.h>\n#include <netinet/in.h>\nint main(void) {\n    \
        struct sockaddr_in a = { .sin_family = AF_INET };\n    return a.sin_port;\n}\n";
    let Some(errors) = compile_everywhere("broken", src) else {
        eprintln!("skip: cc or c++ is not installed");
        return;
    };
    assert_eq!(errors.len(), 1, "only C++17 should fail: {errors:?}");
    assert!(errors[0].starts_with("broken as c++17"), "{errors:?}");
}
