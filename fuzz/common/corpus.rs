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

/// A small deterministic fuzzer over a corpus, for where cargo-fuzz cannot run:
/// each of `rounds` rounds mutates every seed 1 to 4 times (bit flips, byte
/// writes, inserts, deletes, truncations, splices with another seed) and calls
/// `target` on the result. Seeded, so a failure reproduces; a panicking
/// input is saved under the temporary directory and the panic names it.
/// Returns how many mutated inputs ran. `WORKFLOW_FUZZ_ROUNDS` overrides `rounds`.
pub fn mutate_and_run(
    name: &str,
    seeds: &[(String, Vec<u8>)],
    seed: u64,
    rounds: usize,
    target: impl Fn(&[u8]),
) -> usize {
    let rounds = std::env::var("WORKFLOW_FUZZ_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(rounds);
    let mut rng = seed.max(1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut runs = 0;
    for round in 0..rounds {
        for (i, (seed_name, seed)) in seeds.iter().enumerate() {
            let mut bytes = seed.clone();
            for _ in 0..1 + next() % 4 {
                let len = bytes.len().max(1);
                let at = (next() as usize) % len;
                match next() % 6 {
                    0 if !bytes.is_empty() => bytes[at] ^= 1 << (next() % 8),
                    1 if !bytes.is_empty() => bytes[at] = next() as u8,
                    2 => bytes.insert(at.min(bytes.len()), next() as u8),
                    3 if !bytes.is_empty() => {
                        bytes.remove(at);
                    }
                    4 => bytes.truncate(at),
                    _ => {
                        let other = &seeds[(i + 1 + next() as usize) % seeds.len()].1;
                        if !other.is_empty() {
                            let from = (next() as usize) % other.len();
                            bytes.truncate(at);
                            bytes.extend_from_slice(&other[from..]);
                        }
                    }
                }
            }
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&bytes))).is_err() {
                let path = std::env::temp_dir().join(format!("{name}-crash-{round}-{i}"));
                let _ = std::fs::write(&path, &bytes);
                panic!(
                    "a mutation of seed {seed_name} fails {name}; input saved to {}",
                    path.display()
                );
            }
            runs += 1;
        }
    }
    runs
}
