//! Replays every checked-in corpus file through its target, the same code
//! the libFuzzer binaries run: `cargo test` (no libFuzzer, no nightly).

use std::fs;
use std::path::Path;

#[test]
fn replay_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    for (name, target) in crisp_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "empty corpus for {name}");
        for path in &files {
            let data = fs::read(path).expect("read corpus file");
            // Name the file if it fails.
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(result.is_ok(), "{name} fails on {}", path.display());
        }
        println!("{name}: {} inputs", files.len());
        total += files.len();
    }
    println!("{total} corpus inputs replayed");
}
