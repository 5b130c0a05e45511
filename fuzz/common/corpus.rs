//! Reading a seed corpus, for the tests that replay it (shared by the test
//! files of several crates with `#[path]`).

use std::path::Path;

/// The files of `dir` as `(name, bytes)`, sorted by name.
pub fn read(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            (name, std::fs::read(&path).expect("a corpus file"))
        })
        .collect();
    seeds.sort();
    seeds
}
