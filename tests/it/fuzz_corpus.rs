//! Every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same function its
//! cargo-fuzz target runs: what libFuzzer once found interesting stays a regression test on
//! every run, without building the instrumented fuzz crate. Timed fuzzing is `scripts/fuzz.sh`.

#[path = "../../fuzz/fuzz_targets/targets.rs"]
mod targets;

#[test]
fn every_fuzz_corpus_file_replays_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = Vec::new();
    for (name, run) in targets::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {name}");
        for file in &files {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            // A panic names the target and file: add the input to a table test when fixing it.
            if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
                panic!("{name}: {} panicked: {panic:?}", file.display());
            }
        }
        replayed.push((name, files.len()));
    }
    println!("replayed: {replayed:?}");
}
