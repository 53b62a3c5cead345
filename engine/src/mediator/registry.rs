//! The registered mediators: in memory for the delivery path, persisted to
//! `<data_dir>/mediators.json` (written whole, atomically: temp file, fsync, rename).
//!
//! A file rather than a journal tree: there are a handful of mediators, the document is read
//! once at start, and it keeps the journal's single-writer group commit free of admin traffic.
//! Heartbeats update memory only and reach the file with the next registration or config
//! change: after a restart a mediator shows `offline` until it beats again (within 10 s),
//! which is the truth for an engine that has not heard from it yet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::{unmask, validate_config};
use super::registration::{version_core, Endpoint, Registration};
use super::MediatorError;
use crate::journal::now_ms;

/// One registered mediator and what Orbiter knows about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediatorRecord {
    pub registration: Registration,
    /// The config in force: the mediator's defaults, then what an admin set.
    pub config: Map<String, Value>,
    pub registered_at_ms: i64,
    /// The API client that registered it (for the audit trail and for people).
    pub registered_by: String,
    /// The `mediator`-role API client this URN belongs to: the first one that registered it.
    /// Only it (or an admin) may register it again or beat for it, so that one mediator's
    /// client can neither read another's config (secrets included) nor move its endpoints.
    /// `None`: registered by an admin, or by an Orbiter from before owners; then only an admin
    /// may change it (a mediator client that could claim it would read the config an admin set,
    /// secrets included, and move its endpoints): to hand it to a client, an admin removes it
    /// and the mediator registers afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When `config` last changed: a heartbeat after that gets the config back.
    pub config_modified_ms: i64,
    #[serde(default)]
    pub last_heartbeat_ms: Option<i64>,
    /// Seconds the mediator says it has been up, from its last heartbeat.
    #[serde(default)]
    pub uptime_secs: Option<f64>,
}

impl MediatorRecord {
    pub fn urn(&self) -> &str {
        &self.registration.urn
    }

    /// Heard from within `offline_after`.
    pub fn is_online(&self, offline_after: Duration, now_ms: i64) -> bool {
        self.last_heartbeat_ms
            .is_some_and(|at| now_ms.saturating_sub(at) <= offline_after.as_millis() as i64)
    }

    /// The endpoint named `name`, or the first one.
    pub fn endpoint(&self, name: Option<&str>) -> Option<&Endpoint> {
        let endpoints = &self.registration.endpoints;
        match name {
            Some(name) => endpoints.iter().find(|e| e.name == name),
            None => endpoints.first(),
        }
    }
}

/// Who registers or beats, by API client name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// May act on any URN, and claims none.
    Admin(&'a str),
    /// A mediator's own client: held to the URNs it owns (see [`MediatorRecord::owner`]).
    Mediator(&'a str),
}

impl Actor<'_> {
    fn name(&self) -> &str {
        match self {
            Actor::Admin(name) | Actor::Mediator(name) => name,
        }
    }

    /// Refuses a mediator client acting on a URN it does not own: another client's, or an
    /// admin's (unowned).
    fn may_act_on(&self, record: &MediatorRecord) -> Result<(), MediatorError> {
        match (self, &record.owner) {
            (Actor::Mediator(name), Some(owner)) if owner == name => Ok(()),
            (Actor::Mediator(_), _) => Err(MediatorError::NotOwner(record.urn().to_string())),
            (Actor::Admin(_), _) => Ok(()),
        }
    }

    /// The owner a registration leaves: a mediator client owns the URN it registers first; an
    /// admin's registration leaves the owner as it was.
    fn owner_after(&self, existing: Option<&MediatorRecord>) -> Option<String> {
        match (existing, self) {
            (Some(record), _) => record.owner.clone(),
            (None, Actor::Mediator(name)) => Some(name.to_string()),
            (None, Actor::Admin(_)) => None,
        }
    }
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    Created,
    /// Same URN again (a restart, an upgrade): description and endpoints replaced, the config
    /// an admin set kept.
    Updated,
}

/// The persisted document.
#[derive(Default, Serialize, Deserialize)]
struct Stored {
    mediators: Vec<MediatorRecord>,
}

/// A cheap, cloneable handle to the registry.
#[derive(Clone)]
pub struct Mediators {
    inner: Arc<Inner>,
}

struct Inner {
    file: PathBuf,
    offline_after: Duration,
    /// URN → record. Held only for in-memory work, never across file I/O.
    records: Mutex<State>,
    /// Serialises file writes; holds the generation last written so that an older snapshot
    /// never overwrites a newer one.
    written: Mutex<u64>,
}

#[derive(Default)]
struct State {
    records: BTreeMap<String, MediatorRecord>,
    generation: u64,
}

impl Mediators {
    /// Loads `<data_dir>/mediators.json` (none yet: an empty registry).
    pub fn open(data_dir: &Path, offline_after: Duration) -> Result<Mediators, MediatorError> {
        let file = data_dir.join("mediators.json");
        let stored: Stored = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MediatorError::Corrupt {
                file: file.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(source) => return Err(MediatorError::Io { file, source }),
        };
        let records = stored
            .mediators
            .into_iter()
            .map(|r| (r.urn().to_string(), r))
            .collect();
        Ok(Mediators {
            inner: Arc::new(Inner {
                file,
                offline_after,
                records: Mutex::new(State {
                    records,
                    generation: 0,
                }),
                written: Mutex::new(0),
            }),
        })
    }

    pub fn offline_after(&self) -> Duration {
        self.inner.offline_after
    }

    pub fn is_online(&self, record: &MediatorRecord) -> bool {
        record.is_online(self.inner.offline_after, now_ms())
    }

    pub fn list(&self) -> Vec<MediatorRecord> {
        self.state().records.values().cloned().collect()
    }

    pub fn get(&self, urn: &str) -> Option<MediatorRecord> {
        self.state().records.get(urn).cloned()
    }

    /// Registers or re-registers (blocking: writes the file).
    pub fn register(
        &self,
        registration: Registration,
        actor: Actor<'_>,
    ) -> Result<(Registered, MediatorRecord), MediatorError> {
        registration.validate()?;
        let now = now_ms();
        let by = actor.name();
        let defaults = registration.config.clone().unwrap_or_default();
        let (outcome, record) = self.change(|records| {
            let urn = registration.urn.clone();
            if let Some(existing) = records.get(&urn) {
                actor.may_act_on(existing)?;
            }
            let owner = actor.owner_after(records.get(&urn));
            let (outcome, record) = match records.get(&urn) {
                None => (
                    Registered::Created,
                    MediatorRecord {
                        config: defaults.clone(),
                        registration: registration.clone(),
                        registered_at_ms: now,
                        registered_by: by.to_string(),
                        owner,
                        config_modified_ms: now,
                        last_heartbeat_ms: None,
                        uptime_secs: None,
                    },
                ),
                Some(existing) => {
                    if version_core(&registration.version)
                        < version_core(&existing.registration.version)
                    {
                        tracing::warn!(
                            urn = %urn,
                            from = %existing.registration.version,
                            to = %registration.version,
                            "mediator registered with an older version"
                        );
                    }
                    // OpenHIM keeps values already set; params the new version no longer
                    // defines, or whose type changed, fall back to the new defaults.
                    let mut config = defaults.clone();
                    for (param, value) in &existing.config {
                        let one = Map::from_iter([(param.clone(), value.clone())]);
                        if validate_config(&registration.config_defs, &one).is_ok() {
                            config.insert(param.clone(), value.clone());
                        }
                    }
                    let config_changed = config != existing.config;
                    (
                        Registered::Updated,
                        MediatorRecord {
                            config,
                            registration: registration.clone(),
                            registered_at_ms: existing.registered_at_ms,
                            registered_by: by.to_string(),
                            owner,
                            config_modified_ms: if config_changed {
                                now
                            } else {
                                existing.config_modified_ms
                            },
                            last_heartbeat_ms: existing.last_heartbeat_ms,
                            uptime_secs: existing.uptime_secs,
                        },
                    )
                }
            };
            records.insert(urn, record.clone());
            Ok((outcome, record))
        })?;
        Ok((outcome, record))
    }

    /// Forgets a mediator (blocking: writes the file). `false` if it was not registered.
    pub fn remove(&self, urn: &str) -> Result<bool, MediatorError> {
        self.change(|records| Ok(records.remove(urn).is_some()))
    }

    /// Replaces the config after checking it against the definitions (blocking: writes the
    /// file). Masked passwords sent back keep their stored value.
    pub fn set_config(
        &self,
        urn: &str,
        mut config: Map<String, Value>,
    ) -> Result<MediatorRecord, MediatorError> {
        self.change(|records| {
            let record = records
                .get_mut(urn)
                .ok_or_else(|| MediatorError::NotFound(urn.to_string()))?;
            unmask(
                &record.registration.config_defs,
                &mut config,
                &record.config,
            );
            validate_config(&record.registration.config_defs, &config)?;
            record.config = config;
            // Strictly after any heartbeat already seen, so the next one gets the config.
            record.config_modified_ms = now_ms().max(record.last_heartbeat_ms.unwrap_or(0) + 1);
            Ok(record.clone())
        })
    }

    /// Records a heartbeat (memory only). Answers the config when it changed since the
    /// previous heartbeat, or when the mediator asks for it (`"config": true`), as OpenHIM
    /// does; `None` otherwise.
    pub fn heartbeat(
        &self,
        urn: &str,
        uptime_secs: f64,
        wants_config: bool,
        actor: Actor<'_>,
    ) -> Result<Option<Map<String, Value>>, MediatorError> {
        let mut state = self.state();
        let record = state
            .records
            .get_mut(urn)
            .ok_or_else(|| MediatorError::NotFound(urn.to_string()))?;
        actor.may_act_on(record)?;
        let changed = record
            .last_heartbeat_ms
            .is_none_or(|last| record.config_modified_ms > last);
        record.last_heartbeat_ms = Some(now_ms());
        record.uptime_secs = Some(uptime_secs);
        Ok((changed || wants_config).then(|| record.config.clone()))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves whole records behind: keep going.
        self.inner
            .records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `f` to the records and, if it succeeds, persists the result.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, MediatorRecord>) -> Result<T, MediatorError>,
    ) -> Result<T, MediatorError> {
        let (answer, generation, snapshot) = {
            let mut state = self.state();
            let answer = f(&mut state.records)?;
            state.generation += 1;
            let snapshot = Stored {
                mediators: state.records.values().cloned().collect(),
            };
            (answer, state.generation, snapshot)
        };
        let mut written = self
            .inner
            .written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *written < generation {
            write_atomically(&self.inner.file, &snapshot)?;
            *written = generation;
        }
        Ok(answer)
    }
}

/// Temp file (mode 0600: configs may hold passwords), fsync, rename, fsync the directory.
fn write_atomically(file: &Path, stored: &Stored) -> Result<(), MediatorError> {
    use std::io::Write;
    let io = |source| MediatorError::Io {
        file: file.to_path_buf(),
        source,
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = file.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(stored).expect("records serialize");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(&tmp).map_err(io)?;
    out.write_all(&bytes).map_err(io)?;
    out.sync_all().map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OPS: Actor<'static> = Actor::Mediator("ops");

    fn registration(version: &str, port: u16) -> Registration {
        serde_json::from_value(json!({
            "urn": "urn:mediator:test", "version": version, "name": "Test",
            "endpoints": [{"name": "main", "host": "127.0.0.1", "port": port, "path": "/x"},
                          {"name": "other", "host": "127.0.0.1", "port": port}],
            "configDefs": [{"param": "level", "type": "number"},
                           {"param": "mode", "type": "option", "values": ["a", "b"]}],
            "config": {"level": 1, "mode": "a"}
        }))
        .unwrap()
    }

    #[test]
    fn registrations_and_config_survive_a_reopen_and_heartbeats_push_config_once() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Mediators::open(dir.path(), Duration::from_secs(60)).unwrap();
        let (outcome, record) = reg.register(registration("1.0.0", 8600), OPS).unwrap();
        assert_eq!(outcome, Registered::Created);
        assert!(!reg.is_online(&record), "no heartbeat yet");
        assert_eq!(record.endpoint(None).unwrap().name, "main");
        assert_eq!(record.endpoint(Some("other")).unwrap().path, None);
        assert!(record.endpoint(Some("nope")).is_none());

        // First heartbeat: the config (it is new to the mediator); then nothing until it changes.
        let first = reg.heartbeat("urn:mediator:test", 1.5, false, OPS).unwrap();
        assert_eq!(first.unwrap()["level"], 1);
        assert_eq!(
            reg.heartbeat("urn:mediator:test", 2.5, false, OPS).unwrap(),
            None
        );
        assert!(reg
            .heartbeat("urn:mediator:test", 3.0, true, OPS)
            .unwrap()
            .is_some());
        assert!(reg.is_online(&reg.get("urn:mediator:test").unwrap()));

        let bad = json!({"level": "high"}).as_object().unwrap().clone();
        assert!(matches!(
            reg.set_config("urn:mediator:test", bad),
            Err(MediatorError::Invalid(_))
        ));
        let good = json!({"level": 5, "mode": "b"})
            .as_object()
            .unwrap()
            .clone();
        reg.set_config("urn:mediator:test", good).unwrap();
        let pushed = reg.heartbeat("urn:mediator:test", 4.0, false, OPS).unwrap();
        assert_eq!(pushed.unwrap()["level"], 5);

        // An upgrade keeps the admin's values; a restart of the engine keeps everything.
        let (outcome, record) = reg.register(registration("1.1.0", 8700), OPS).unwrap();
        assert_eq!(outcome, Registered::Updated);
        assert_eq!(record.config["level"], 5);
        assert_eq!(record.endpoint(None).unwrap().port, 8700);
        let reopened = Mediators::open(dir.path(), Duration::from_secs(60)).unwrap();
        let again = reopened.get("urn:mediator:test").unwrap();
        assert_eq!(again.registration.version, "1.1.0");
        assert_eq!(again.config["mode"], "b");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("mediators.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        assert!(reopened.remove("urn:mediator:test").unwrap());
        assert!(!reopened.remove("urn:mediator:test").unwrap());
        assert!(matches!(
            reopened.heartbeat("urn:mediator:test", 1.0, false, OPS),
            Err(MediatorError::NotFound(_))
        ));
        let empty = Mediators::open(dir.path(), Duration::from_secs(60)).unwrap();
        assert!(empty.list().is_empty());
    }

    /// One mediator client may not take over, or beat for (and so read the secrets of),
    /// a URN another client registered, nor one an admin registered; an admin may act on any.
    #[test]
    fn a_urn_belongs_to_the_mediator_client_that_registered_it() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Mediators::open(dir.path(), Duration::from_secs(60)).unwrap();
        let urn = "urn:mediator:test";
        let (_, record) = reg.register(registration("1.0.0", 8600), OPS).unwrap();
        assert_eq!(record.owner.as_deref(), Some("ops"));

        let intruder = Actor::Mediator("other");
        let err = reg
            .register(registration("1.0.1", 9999), intruder)
            .unwrap_err();
        assert!(matches!(err, MediatorError::NotOwner(_)), "{err}");
        assert!(err.to_string().contains("another API client"), "{err}");
        assert_eq!(reg.get(urn).unwrap().endpoint(None).unwrap().port, 8600);
        assert!(matches!(
            reg.heartbeat(urn, 1.0, true, intruder),
            Err(MediatorError::NotOwner(_))
        ));
        assert!(reg.heartbeat(urn, 1.0, true, OPS).unwrap().is_some());

        // An admin may do both, and takes nothing from the owner.
        let (_, record) = reg
            .register(registration("1.0.2", 8700), Actor::Admin("root"))
            .unwrap();
        assert_eq!(record.owner.as_deref(), Some("ops"));
        reg.heartbeat(urn, 2.0, false, Actor::Admin("root"))
            .unwrap();

        // Removed, then registered by an admin, with a secret in its config: no mediator
        // client may claim it, move its endpoints or read the secret.
        reg.remove(urn).unwrap();
        let (_, record) = reg
            .register(registration("1.0.0", 8600), Actor::Admin("root"))
            .unwrap();
        assert_eq!(record.owner, None);
        let err = reg
            .register(registration("1.0.0", 9999), intruder)
            .unwrap_err();
        assert!(matches!(err, MediatorError::NotOwner(_)), "{err}");
        assert!(matches!(
            reg.heartbeat(urn, 1.0, true, intruder),
            Err(MediatorError::NotOwner(_))
        ));
        assert_eq!(reg.get(urn).unwrap().endpoint(None).unwrap().port, 8600);
        // Removed again: the first mediator client to register it owns it, across a reopen.
        reg.remove(urn).unwrap();
        let (_, record) = reg.register(registration("1.0.0", 8600), intruder).unwrap();
        assert_eq!(record.owner.as_deref(), Some("other"));
        let reopened = Mediators::open(dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(reopened.get(urn).unwrap().owner.as_deref(), Some("other"));
    }

    #[test]
    fn online_means_a_heartbeat_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Mediators::open(dir.path(), Duration::from_secs(60)).unwrap();
        let (_, mut record) = reg.register(registration("1.0.0", 8600), OPS).unwrap();
        record.last_heartbeat_ms = Some(1_000_000);
        let window = Duration::from_secs(5);
        assert!(record.is_online(window, 1_005_000));
        assert!(!record.is_online(window, 1_005_001));
    }
}
