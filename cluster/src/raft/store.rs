//! Durable Raft storage in one redb file per coordinator: vote, committed log id, log entries and
//! the latest snapshot. redb commits with fsync before returning, so an acknowledged write survives
//! SIGKILL. The state machine itself lives in memory and is rebuilt at start-up from the stored
//! snapshot plus the committed log (openraft re-applies `(last_applied, committed]`).

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::state::ClusterState;
use super::{CommandResult, Node, NodeId, TypeConfig};
use crate::api::model::ClusterEventKind;
use crate::events::EventLog;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_SNAPSHOT: &str = "snapshot";

type StoreError = StorageError<NodeId>;

/// Open (or create) the store in `dir` and return its two halves.
pub fn open(dir: &Path, events: Arc<EventLog>) -> anyhow::Result<(LogStore, StateMachineStore)> {
    std::fs::create_dir_all(dir)?;
    let db = Arc::new(Database::create(dir.join("raft.redb"))?);
    let tx = db.begin_write()?;
    tx.open_table(LOG)?;
    tx.open_table(META)?;
    tx.commit()?;
    let log = LogStore {
        db: db.clone(),
        commit_index: Arc::new(Mutex::new(None)),
    };
    let sm = StateMachineStore::open(db, events)?;
    Ok((log, sm))
}

/// The Raft log half: vote, committed id and entries.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
    commit_index: Arc<Mutex<Option<u64>>>,
}

impl LogStore {
    /// A handle that reads the latest committed index openraft asked this store to persist.
    pub fn commit_index(&self) -> CommitIndex {
        CommitIndex(self.commit_index.clone())
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(META)?;
        Ok(match table.get(key)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    fn write_meta<T: Serialize>(&self, key: &str, value: &T) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(value)?;
        let tx = self.db.begin_write()?;
        tx.open_table(META)?.insert(key, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }
}

/// Shared view of the commit index for `/raft/metrics` and `/metrics`.
#[derive(Debug, Clone)]
pub struct CommitIndex(Arc<Mutex<Option<u64>>>);

impl CommitIndex {
    pub fn get(&self) -> Option<u64> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Adapter: openraft's error constructors want `std::error::Error`, anyhow gives a `Display`.
#[derive(Debug)]
struct AnyErr(anyhow::Error);

impl std::fmt::Display for AnyErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for AnyErr {}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let read = || -> anyhow::Result<Vec<Entry<TypeConfig>>> {
            let tx = self.db.begin_read()?;
            let table = tx.open_table(LOG)?;
            let mut entries = Vec::new();
            for item in table.range::<u64>(range)? {
                let (_, v) = item?;
                entries.push(serde_json::from_slice(v.value())?);
            }
            Ok(entries)
        };
        read().map_err(|e| StorageIOError::read_logs(&AnyErr(e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged_log_id: Option<LogId<NodeId>> = self
            .read_meta(KEY_LAST_PURGED)
            .map_err(|e| StorageIOError::read_logs(&AnyErr(e)))?;
        let read_last = || -> anyhow::Result<Option<LogId<NodeId>>> {
            let tx = self.db.begin_read()?;
            let table = tx.open_table(LOG)?;
            let last = match table.last()? {
                Some((_, v)) => {
                    let entry: Entry<TypeConfig> = serde_json::from_slice(v.value())?;
                    Some(entry.log_id)
                }
                None => None,
            };
            Ok(last)
        };
        let last = read_last().map_err(|e| StorageIOError::read_logs(&AnyErr(e)))?;
        Ok(LogState {
            last_log_id: last.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StoreError> {
        self.write_meta(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(&AnyErr(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StoreError> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&AnyErr(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StoreError> {
        self.write_meta(KEY_COMMITTED, &committed)
            .map_err(|e| StorageIOError::write(&AnyErr(e)))?;
        *self.commit_index.lock().unwrap_or_else(|p| p.into_inner()) = committed.map(|c| c.index);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StoreError> {
        let committed: Option<Option<LogId<NodeId>>> = self
            .read_meta(KEY_COMMITTED)
            .map_err(|e| StorageIOError::read(&AnyErr(e)))?;
        let committed = committed.flatten();
        *self.commit_index.lock().unwrap_or_else(|p| p.into_inner()) = committed.map(|c| c.index);
        Ok(committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = || -> anyhow::Result<()> {
            let tx = self.db.begin_write()?;
            {
                let mut table = tx.open_table(LOG)?;
                for entry in entries {
                    let bytes = serde_json::to_vec(&entry)?;
                    table.insert(entry.log_id.index, bytes.as_slice())?;
                }
            }
            // Durability::Immediate (redb's default): fsynced before commit returns.
            tx.commit()?;
            Ok(())
        };
        let result = write();
        let io_result = match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::other(format!("{e:#}"))),
        };
        callback.log_io_completed(io_result);
        result.map_err(|e| StorageIOError::write_logs(&AnyErr(e)).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        let write = || -> anyhow::Result<()> {
            let tx = self.db.begin_write()?;
            tx.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_logs(&AnyErr(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        let write = || -> anyhow::Result<()> {
            let bytes = serde_json::to_vec(&Some(log_id))?;
            let tx = self.db.begin_write()?;
            tx.open_table(META)?
                .insert(KEY_LAST_PURGED, bytes.as_slice())?;
            tx.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_logs(&AnyErr(e)).into())
    }
}

/// The state machine half: in memory, shared with the API for reads, snapshots persisted.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    inner: Arc<RwLock<Applied>>,
    events: Arc<EventLog>,
    /// Bumped after every applied batch or installed snapshot: wakes the tasks that act on state.
    applied: Arc<tokio::sync::watch::Sender<u64>>,
}

/// The applied state and where in the log it stands.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, Node>,
    pub state: ClusterState,
}

/// Read-only view of the applied state for the API, and a signal of every change.
#[derive(Debug, Clone)]
pub struct SharedState(Arc<RwLock<Applied>>, Arc<tokio::sync::watch::Sender<u64>>);

impl SharedState {
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves on the next applied change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.1.subscribe()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    data: Vec<u8>,
}

impl StateMachineStore {
    fn open(db: Arc<Database>, events: Arc<EventLog>) -> anyhow::Result<Self> {
        let mut applied = Applied::default();
        if let Some(snapshot) = read_snapshot(&db)? {
            applied.last_applied = snapshot.meta.last_log_id;
            applied.last_membership = snapshot.meta.last_membership.clone();
            applied.state = serde_json::from_slice(&snapshot.data)?;
        }
        Ok(StateMachineStore {
            db,
            inner: Arc::new(RwLock::new(applied)),
            events,
            applied: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    pub fn shared(&self) -> SharedState {
        SharedState(self.inner.clone(), self.applied.clone())
    }

    /// Store `snapshot` unless the stored one is newer, in one write transaction (redb
    /// serializes them). openraft builds snapshots on a spawned task, so a build that read the
    /// state before an `install_snapshot` can finish after it: saving it then would leave a
    /// snapshot older than the purged log. Returns false when the stored one was kept.
    fn save_snapshot(&self, snapshot: &StoredSnapshot) -> anyhow::Result<bool> {
        let bytes = serde_json::to_vec(snapshot)?;
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(META)?;
            let stored_last = match table.get(KEY_SNAPSHOT)? {
                Some(v) => {
                    serde_json::from_slice::<StoredSnapshot>(v.value())?
                        .meta
                        .last_log_id
                }
                None => None,
            };
            if stored_last > snapshot.meta.last_log_id {
                tracing::info!(
                    stored = ?stored_last,
                    built = ?snapshot.meta.last_log_id,
                    "kept the newer stored snapshot"
                );
                return Ok(false);
            }
            table.insert(KEY_SNAPSHOT, bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// The first half of a snapshot build: the applied state, serialized, with its meta.
    #[allow(clippy::result_large_err)] // openraft's own error type, as its trait methods return
    fn capture(&self) -> Result<StoredSnapshot, StoreError> {
        let applied = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let data = serde_json::to_vec(&applied.state)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, crate::events::now_ms()),
            None => format!("empty-{}", crate::events::now_ms()),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership.clone(),
            snapshot_id,
        };
        Ok(StoredSnapshot { meta, data })
    }

    /// The second half: persist what [`Self::capture`] took (unless a newer one is stored).
    #[allow(clippy::result_large_err)] // openraft's own error type, as its trait methods return
    fn persist(&self, stored: StoredSnapshot) -> Result<Snapshot<TypeConfig>, StoreError> {
        self.save_snapshot(&stored).map_err(|e| {
            StorageIOError::write_snapshot(Some(stored.meta.signature()), &AnyErr(e))
        })?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(std::io::Cursor::new(stored.data)),
        })
    }
}

fn read_snapshot(db: &Database) -> anyhow::Result<Option<StoredSnapshot>> {
    let tx = db.begin_read()?;
    let table = tx.open_table(META)?;
    Ok(match table.get(KEY_SNAPSHOT)? {
        Some(v) => Some(serde_json::from_slice(v.value())?),
        None => None,
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let stored = self.capture()?;
        self.persist(stored)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StoreError> {
        let applied = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StoreError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut applied_events = Vec::new();
        {
            let mut applied = self.inner.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                let index = entry.log_id.index;
                applied.last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => CommandResult {
                        index,
                        changed: false,
                        link_gen: None,
                        stale: false,
                    },
                    EntryPayload::Normal(proposal)
                        if proposal.term < entry.log_id.leader_id.term =>
                    {
                        tracing::info!(
                            index,
                            command = proposal.command.name(),
                            proposed = proposal.term,
                            committed = entry.log_id.leader_id.term,
                            "stale proposal: decided under an older term, not applied"
                        );
                        CommandResult {
                            index,
                            changed: false,
                            link_gen: None,
                            stale: true,
                        }
                    }
                    EntryPayload::Normal(proposal) => {
                        let command = proposal.command;
                        applied_events.push(ClusterEventKind::CommandApplied {
                            index,
                            command: command.name().to_string(),
                        });
                        let (result, events) = applied.state.apply(index, &command);
                        applied_events.extend(events);
                        result
                    }
                    EntryPayload::Membership(membership) => {
                        applied.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        CommandResult {
                            index,
                            changed: true,
                            link_gen: None,
                            stale: false,
                        }
                    }
                };
                results.push(result);
            }
            for event in &applied_events {
                self.events.observe(event);
            }
        }
        for event in applied_events {
            self.events.record(event);
        }
        if !results.is_empty() {
            self.applied.send_modify(|v| *v += 1);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<std::io::Cursor<Vec<u8>>>, StoreError> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StoreError> {
        let data = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &AnyErr(e)))?;
        let mut applied = self.inner.write().unwrap_or_else(|p| p.into_inner());
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        applied.state = state;
        drop(applied);
        self.applied.send_modify(|v| *v += 1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let stored =
            read_snapshot(&self.db).map_err(|e| StorageIOError::read_snapshot(None, &AnyErr(e)))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(std::io::Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;
    use std::io::Cursor;

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// openraft runs `build_snapshot` on a spawned task: a build that read the state before an
    /// `install_snapshot` can save after it. Interleave the builder's two halves that way.
    #[tokio::test]
    async fn a_build_that_started_before_an_install_does_not_replace_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, mut sm) = open(dir.path(), Arc::new(EventLog::new(1))).expect("open");
        sm.inner.write().expect("lock").last_applied = Some(log_id(1, 3));
        let early = sm.capture().expect("capture");

        let newer = ClusterState {
            next_migration_id: 7,
            ..ClusterState::default()
        };
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(2, 10)),
            last_membership: StoredMembership::default(),
            snapshot_id: "from-leader-10".into(),
        };
        let data = serde_json::to_vec(&newer).expect("serialize");
        sm.install_snapshot(&meta, Box::new(Cursor::new(data)))
            .await
            .expect("install");
        sm.persist(early).expect("persist the early build");

        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot is stored");
        assert_eq!(
            current.meta.last_log_id,
            Some(log_id(2, 10)),
            "the stored snapshot went back to the early build's index 3"
        );
        drop((log, sm));
        let (_log, reopened) = open(dir.path(), Arc::new(EventLog::new(1))).expect("reopen");
        let (last, migrations) = reopened
            .shared()
            .read(|a| (a.last_applied, a.state.next_migration_id));
        assert_eq!((last, migrations), (Some(log_id(2, 10)), 7));
    }

    fn entry(
        term: u64,
        index: u64,
        proposed_in: u64,
        command: super::super::Command,
    ) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(super::super::Proposal {
                term: proposed_in,
                command,
            }),
        }
    }

    /// A verdict a leader decided in term 2, committed in term 3 (forwarded to the next leader
    /// after it lost its own term), changes nothing.
    #[tokio::test]
    async fn a_proposal_from_an_older_term_is_not_applied() {
        use super::super::Command;
        use crate::api::model::{Capacity, WorkerStatus};
        let dir = tempfile::tempdir().expect("temp dir");
        let (_log, mut sm) = open(dir.path(), Arc::new(EventLog::new(1))).expect("open");
        let register = Command::RegisterWorker {
            worker_id: "w1".into(),
            address: "http://w1".into(),
            capacity: Capacity {
                cpu_cores: 1,
                pipelines_running: 0,
                max_pipelines: 1,
            },
            at_ms: 1,
        };
        let verdict = Command::MarkWorkerUnhealthy {
            worker_id: "w1".into(),
            link_gen: None,
            reason: "decided by a leader out of touch".into(),
            at_ms: 2,
        };
        let results = sm
            .apply(vec![
                entry(2, 1, 2, register),
                entry(3, 2, 2, verdict.clone()),
            ])
            .await
            .expect("apply");
        assert!(results[0].changed && !results[0].stale);
        assert!(results[1].stale && !results[1].changed, "{:?}", results[1]);
        let status = sm.shared().read(|a| a.state.workers["w1"].status);
        assert_eq!(status, WorkerStatus::Ready);
        let applied = sm
            .apply(vec![entry(3, 3, 3, verdict)])
            .await
            .expect("apply");
        assert!(
            applied[0].changed,
            "the same verdict decided in term 3 applies"
        );
    }
}
