//! The core must stay sans-I/O: no sockets, files, threads, processes or
//! clocks, neither in its own code nor through its dependencies. These
//! tests fail, naming the culprit, when that stops being true.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that exist to do I/O or bind the operating system.
///
/// `libc` is on the list outright. As of this writing nothing in the normal
/// dependency tree pulls it in on any target: flate2 is built with its
/// `zlib-rs` backend (a pure-Rust zlib, with its Rust allocator), httparse,
/// sha1_smol and base64 have no dependencies, and prost/http/bytes need no
/// OS bindings. Should a
/// pure dependency ever need libc for something other than I/O, allow that
/// exact parent here with a comment rather than dropping the check.
const FORBIDDEN_CRATES: &[&str] = &[
    "mio",
    "nix",
    "tokio",
    "socket2",
    "async-std",
    "libc",
    // Further OS-binding and event-loop crates.
    "rustix",
    "polling",
    "async-io",
    "winapi",
    "windows-sys",
];

/// Pairs (parent, forbidden crate) that are allowed, with the reason in a
/// comment. Empty: no exception is needed today.
const ALLOWED_PATHS: &[(&str, &str)] = &[];

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("core/ sits in the workspace")
        .to_path_buf()
}

fn cargo_tree(extra: &[&str]) -> String {
    let mut args = vec![
        "tree",
        "-p",
        "crisp-core",
        "-e",
        "normal",
        "--target",
        "all",
        "--offline",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(workspace_dir())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 from cargo tree")
}

fn crate_name(line: &str) -> Option<&str> {
    line.split_whitespace().next()
}

/// The crate on a `--prefix depth` line if it is at depth 1.
fn depth_one(line: &str) -> Option<&str> {
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    (&line[..digits] == "1").then(|| crate_name(&line[digits..]))?
}

fn is_forbidden(name: &str) -> bool {
    FORBIDDEN_CRATES.contains(&name) || name.starts_with("tokio-")
}

#[test]
fn no_io_crates_among_the_dependencies() {
    let tree = cargo_tree(&["--prefix", "none"]);
    let names: Vec<&str> = tree.lines().filter_map(crate_name).collect();
    assert!(
        names.contains(&"crisp-core") && names.contains(&"bytes"),
        "unexpected cargo tree output:\n{tree}"
    );
    let mut offenders = Vec::new();
    for name in names.iter().copied().filter(|n| is_forbidden(n)) {
        // Who pulls it in: the inverted tree, parents at depth 1.
        let inverted = cargo_tree(&["-i", name, "--prefix", "depth"]);
        let parents: Vec<&str> = inverted.lines().filter_map(depth_one).collect();
        for parent in parents {
            if !ALLOWED_PATHS.contains(&(parent, name)) {
                offenders.push(format!("{parent} -> {name}"));
            }
        }
    }
    offenders.dedup();
    assert!(
        offenders.is_empty(),
        "crisp-core depends on I/O crates:\n  {}",
        offenders.join("\n  ")
    );
}

// ---- Source scan ----

/// Paths whose mere mention in the core's code means I/O or a clock.
const FORBIDDEN_PATHS: &[&str] = &[
    "std::net",
    "std::fs",
    "std::thread",
    "std::process",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "std::env",
    "Instant::now",
    "SystemTime",
];

/// Items that, named inside a `use std::…` statement (for instance
/// `use std::{fs, io};`), bring in the same.
const FORBIDDEN_IN_STD_USE: &[&str] = &[
    "net",
    "fs",
    "thread",
    "process",
    "stdin",
    "stdout",
    "stderr",
    "env",
    "SystemTime",
];

/// `file:line: offence` for every violation in `source`.
fn scan(file: &str, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    // Whole-line comments (including doc comments) may talk about these.
    let code: Vec<(usize, &str)> = source
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .collect();
    for &(n, line) in &code {
        for p in FORBIDDEN_PATHS {
            if line.contains(p) {
                found.push(format!("{file}:{n}: {p}"));
            }
        }
    }
    // `use std::…;` statements, possibly spanning lines.
    let mut statement: Option<(usize, String)> = None;
    for &(n, line) in &code {
        let trimmed = line.trim_start();
        if statement.is_none()
            && (trimmed.starts_with("use std::") || trimmed.starts_with("pub use std::"))
        {
            statement = Some((n, String::new()));
        }
        if let Some((start, text)) = statement.as_mut() {
            text.push_str(line);
            text.push(' ');
            if line.contains(';') {
                let words = text.split(|c: char| !(c.is_alphanumeric() || c == '_'));
                for w in words.filter(|w| FORBIDDEN_IN_STD_USE.contains(w)) {
                    found.push(format!("{file}:{start}: use of std::…::{w}"));
                }
                statement = None;
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_sources_do_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let mut found = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).expect("read source");
        let name = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(path);
        found.extend(scan(&name.display().to_string(), &source));
    }
    assert!(
        found.is_empty(),
        "I/O or clock access in crisp-core:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_scan_catches_what_it_should() {
    let sample = "\
//! Mentions of std::net in comments are fine.
use std::time::{Duration, Instant};
use std::io::Write;
use std::{
    collections::HashMap,
    fs,
};
fn f() {
    let t = Instant::now(); // a clock
    let s = std::net::TcpStream::connect(\"x\");
    let _ = SystemTime::UNIX_EPOCH;
}
";
    assert_eq!(
        scan("x.rs", sample),
        vec![
            "x.rs:10: std::net",
            "x.rs:11: SystemTime",
            "x.rs:4: use of std::…::fs",
            "x.rs:9: Instant::now",
        ]
    );
}

#[test]
fn unsafe_code_is_forbidden() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
    let lib = std::fs::read_to_string(lib).expect("read lib.rs");
    assert!(
        lib.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]"),
        "core/src/lib.rs must keep #![forbid(unsafe_code)]"
    );
}

#[test]
fn inverted_tree_lines_are_read_by_depth() {
    assert_eq!(depth_one("1http v1.5.0"), Some("http"));
    assert_eq!(depth_one("0bytes v1.12.1"), None);
    assert_eq!(depth_one("12crisp-core v0.1.0 (/x)"), None);
    assert!(is_forbidden("libc") && is_forbidden("tokio-util") && !is_forbidden("bytes"));
}
