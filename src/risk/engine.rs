//! The live rule set: loaded from `[risk] rules_dir` at startup (a broken set stops startup)
//! and reloaded when the directory changes, keeping the last good set when the new one is
//! broken. Readers take an `Arc<RuleSet>` snapshot, so a reload never changes a set mid-score.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Assessment;
use super::config::RiskConfig;
use super::context::RiskContext;
use super::rules::{RuleError, RuleSet, Thresholds, content_hash, read_rule_files};
use crate::clock::SharedClock;

/// What a reload attempt did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// Nothing changed on disk (or the content hashes to the current set).
    Unchanged,
    /// A new set is in force.
    Reloaded {
        /// The new set's id.
        id: String,
    },
    /// The directory's new content is broken; the previous set stays in force.
    Rejected(RuleError),
}

/// Names, sizes and modification times of the directory's entries: the cheap change check.
#[allow(clippy::disallowed_types)] // file modification times, compared only for equality
type DirStamp = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// The current rule set and its reloading.
#[derive(Debug)]
pub struct RuleEngine {
    dir: PathBuf,
    thresholds: Thresholds,
    reload_every: Option<Duration>,
    current: RwLock<Arc<RuleSet>>,
    watch: Mutex<Watch>,
}

#[derive(Debug, Default)]
struct Watch {
    stamp: Option<DirStamp>,
    /// The hash of content last rejected (logged once, not on every poll).
    rejected: Option<String>,
    /// When the current set was loaded, ms since the epoch (0 before the reloader runs).
    loaded_at_ms: u64,
}

impl RuleEngine {
    /// Loads `config.rules_dir`; fails (naming file, line and reason) if the set is broken.
    pub fn load(config: &RiskConfig) -> Result<Arc<RuleEngine>, RuleError> {
        let set = RuleSet::load_dir(&config.rules_dir)?;
        let stamp = dir_stamp(&config.rules_dir);
        Ok(Arc::new(RuleEngine {
            dir: config.rules_dir.clone(),
            thresholds: config.thresholds(),
            reload_every: (config.reload_secs > 0).then(|| Duration::from_secs(config.reload_secs)),
            current: RwLock::new(Arc::new(set)),
            watch: Mutex::new(Watch {
                stamp,
                ..Watch::default()
            }),
        }))
    }

    /// The set in force.
    pub fn current(&self) -> Arc<RuleSet> {
        // A poisoned lock still holds a whole Arc (the write is one assignment).
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    /// The configured thresholds.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// The rule directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Scores a context with the set in force and the configured thresholds.
    pub fn evaluate(&self, ctx: &RiskContext) -> Assessment {
        self.current().evaluate(ctx, &self.thresholds)
    }

    /// When the set in force was loaded by the reloader (ms since the epoch; 0 for the set
    /// loaded at startup).
    pub fn loaded_at_ms(&self) -> u64 {
        self.lock_watch().loaded_at_ms
    }

    fn lock_watch(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reloads now if the content changed, whatever the modification times say.
    pub fn reload_now(&self, now_ms: u64) -> ReloadOutcome {
        let stamp = dir_stamp(&self.dir);
        self.reload(stamp, now_ms)
    }

    /// Reloads if the directory's names, sizes or modification times changed since the last
    /// poll (the content hash then decides whether anything really changed).
    pub fn poll(&self, now_ms: u64) -> ReloadOutcome {
        let stamp = dir_stamp(&self.dir);
        if stamp.is_some() && stamp == self.lock_watch().stamp {
            return ReloadOutcome::Unchanged;
        }
        self.reload(stamp, now_ms)
    }

    fn reload(&self, stamp: Option<DirStamp>, now_ms: u64) -> ReloadOutcome {
        let files = match read_rule_files(&self.dir) {
            Ok(files) => files,
            Err(error) => return self.rejected(stamp, None, error),
        };
        let hash = content_hash(&files);
        if hash == self.current().id() {
            self.lock_watch().stamp = stamp;
            return ReloadOutcome::Unchanged;
        }
        if self.lock_watch().rejected.as_deref() == Some(hash.as_str()) {
            // Already rejected and logged; still broken.
            self.lock_watch().stamp = stamp;
            return ReloadOutcome::Unchanged;
        }
        match RuleSet::from_files(&files) {
            Ok(set) => {
                let id = set.id().to_owned();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                let mut watch = self.lock_watch();
                watch.stamp = stamp;
                watch.rejected = None;
                watch.loaded_at_ms = now_ms;
                tracing::info!(rule_set = %id, dir = %self.dir.display(), "Risk rules reloaded.");
                ReloadOutcome::Reloaded { id }
            }
            Err(error) => self.rejected(stamp, Some(hash), error),
        }
    }

    fn rejected(
        &self,
        stamp: Option<DirStamp>,
        hash: Option<String>,
        error: RuleError,
    ) -> ReloadOutcome {
        let current = self.current();
        for problem in error.problems() {
            tracing::error!(
                file = %problem.file.display(),
                line = problem.line.unwrap_or(0),
                reason = %problem.reason,
                rule_set = %current.id(),
                "Risk rules rejected; the previous set stays in force."
            );
        }
        let mut watch = self.lock_watch();
        watch.stamp = stamp;
        watch.rejected = hash;
        ReloadOutcome::Rejected(error)
    }

    /// Polls the directory every `reload_secs` (tokio time) until the task is aborted; a
    /// `reload_secs` of 0 returns a task that ends at once.
    pub fn spawn_reload(self: Arc<Self>, clock: SharedClock) -> JoinHandle<()> {
        let Some(every) = self.reload_every else {
            return tokio::spawn(async {});
        };
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let engine = Arc::clone(&self);
                let clock = Arc::clone(&clock);
                // Reading and compiling files blocks; keep it off the async workers.
                let polled = tokio::task::spawn_blocking(move || engine.poll(clock.now_ms())).await;
                if let Err(error) = polled {
                    tracing::error!(error = %error, "Risk rule reload panicked; keeping the set in force.");
                }
            }
        })
    }
}

/// The directory's rule-file stamp, or `None` if it cannot be listed.
#[allow(clippy::disallowed_types)] // file modification times, compared only for equality
fn dir_stamp(dir: &Path) -> Option<DirStamp> {
    let mut stamp = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let meta = entry.metadata().ok()?;
        stamp.push((entry.path(), meta.len(), meta.modified().ok()));
    }
    stamp.sort();
    Some(stamp)
}
