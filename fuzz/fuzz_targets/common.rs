//! What the fuzz targets share: the test policy, loaded once.

use std::sync::{Arc, OnceLock};

pub fn snapshot() -> &'static portcullis::config::Snapshot {
    static SNAPSHOT: OnceLock<Arc<portcullis::config::Snapshot>> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/policy.yaml"));
        match portcullis::config::load_file(path) {
            Ok(settings) => settings.snapshot,
            Err(e) => panic!("fixture policy: {e}"),
        }
    })
}
