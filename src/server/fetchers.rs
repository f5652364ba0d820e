//! The running JWKS fetcher tasks, kept across policy reloads: an issuer whose remote source is
//! unchanged keeps its key store (and so its keys) through a reload.

use crate::clock::Clock;
use crate::config::Settings;
use crate::jwt::fetch::{self, JwksJob};
use std::sync::Arc;
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct Fetchers {
    running: Vec<(JwksJob, JoinHandle<()>)>,
}

impl Fetchers {
    /// Makes the running fetchers match `settings`: reuses the store of every unchanged remote
    /// source (rewriting `settings` to point at it), starts new ones, stops the rest.
    pub fn reconcile(&mut self, settings: &mut Settings, clock: &Arc<dyn Clock>) -> Result<(), String> {
        let mut kept = Vec::new();
        let mut started = Vec::new();
        for job in &settings.jwks_jobs {
            let same = |(old, _): &(JwksJob, JoinHandle<()>)| old.issuer == job.issuer && old.remote == job.remote;
            match self.running.iter().position(same) {
                Some(i) => kept.push((job.store.clone(), self.running.swap_remove(i))),
                None => {
                    let client = fetch::http_client(&job.remote).map_err(|e| format!("issuer {}: {e}", job.issuer))?;
                    let handle = tokio::spawn(fetch::run(job.clone(), client, clock.clone()));
                    started.push((job.clone(), handle));
                }
            }
        }
        let snapshot = Arc::get_mut(&mut settings.snapshot).ok_or("snapshot already shared")?;
        for (fresh_store, (old_job, handle)) in kept {
            for issuer in &mut snapshot.verifier.issuers {
                if Arc::ptr_eq(&issuer.keys, &fresh_store) {
                    issuer.keys = old_job.store.clone();
                }
            }
            started.push((old_job, handle));
        }
        for (_, stale) in self.running.drain(..) {
            stale.abort();
        }
        settings.jwks_jobs = started.iter().map(|(job, _)| job.clone()).collect();
        self.running = started;
        Ok(())
    }

    pub fn stop(&mut self) {
        for (_, handle) in self.running.drain(..) {
            handle.abort();
        }
    }
}
