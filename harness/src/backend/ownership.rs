//! Who owns a container or network the Docker backend created, so that runs sharing an engine
//! never remove each other's: every object carries its run id and its owner (host, pid and the
//! pid's start time, so a reused pid is not mistaken for the owner), and a leftover is removed
//! only when its owner is gone — on this host, the owning process no longer exists; on another
//! host (a shared remote engine), only once it is older than [`MAX_AGE_S`].

use std::collections::HashMap;

/// The label on everything the harness creates.
pub const LABEL: &str = "varpulis.harness";
/// The run that created it.
pub const RUN_LABEL: &str = "varpulis.harness.run";
/// `host:pid:start-ticks` of the harness process that created it.
pub const OWNER_LABEL: &str = "varpulis.harness.owner";
/// Unix seconds at which it was created.
pub const STARTED_LABEL: &str = "varpulis.harness.started";
/// Age past which a leftover whose owner cannot be checked (another host, or an older harness
/// that wrote no owner) is removed: no run lasts a day.
pub const MAX_AGE_S: u64 = 24 * 3600;

/// This harness process, as the owner of one run's objects.
#[derive(Debug, Clone)]
pub struct Owner {
    pub run_id: String,
    pub owner: String,
    pub started_s: u64,
}

impl Owner {
    pub fn this_process(run_id: &str) -> Owner {
        let pid = std::process::id();
        Owner {
            run_id: run_id.into(),
            owner: format!(
                "{}:{pid}:{}",
                hostname(),
                start_ticks(pid).unwrap_or_default()
            ),
            started_s: now_s(),
        }
    }

    pub fn labels(&self) -> HashMap<String, String> {
        [
            (LABEL, "1".to_string()),
            (RUN_LABEL, self.run_id.clone()),
            (OWNER_LABEL, self.owner.clone()),
            (STARTED_LABEL, self.started_s.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// What to do with a labelled object found on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its run is live (or its owner cannot be checked yet): leave it alone.
    Keep(String),
    /// Its run is over: remove it.
    Remove(String),
}

/// Judge one object by its labels. `created_s`: the engine's creation time, for objects of
/// harnesses that wrote no `started` label.
pub fn judge(
    labels: &HashMap<String, String>,
    created_s: Option<u64>,
    own_run: &str,
    now_s: u64,
    alive: &dyn Fn(&str) -> Option<bool>,
) -> Verdict {
    let run = labels.get(RUN_LABEL).map_or("?", String::as_str);
    if run == own_run {
        return Verdict::Keep("this run's own".into());
    }
    if let Some(owner) = labels.get(OWNER_LABEL) {
        match alive(owner) {
            Some(true) => return Verdict::Keep(format!("run {run}: owner {owner} is alive")),
            Some(false) => return Verdict::Remove(format!("run {run}: owner {owner} is gone")),
            None => {}
        }
    }
    let started = labels
        .get(STARTED_LABEL)
        .and_then(|s| s.parse::<u64>().ok())
        .or(created_s);
    match started {
        Some(t) if now_s.saturating_sub(t) > MAX_AGE_S => Verdict::Remove(format!(
            "run {run}: owner unknown here, created {} h ago",
            now_s.saturating_sub(t) / 3600
        )),
        _ => Verdict::Keep(format!(
            "run {run}: owner cannot be checked from this host and it is younger than {} h",
            MAX_AGE_S / 3600
        )),
    }
}

/// Is the owner `host:pid:ticks` alive? `None` when it is another host's (cannot tell).
pub fn owner_alive(owner: &str) -> Option<bool> {
    let mut parts = owner.rsplitn(3, ':');
    let ticks = parts.next()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let host = parts.next()?;
    if host != hostname() {
        return None;
    }
    Some(match start_ticks(pid) {
        Some(t) => ticks.is_empty() || t.to_string() == ticks,
        None => false,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Create `<out>/runs/<id>` for a new run, atomically: when another run (started the same
/// second with the same seed) holds that id, the next free `<id>-2`, `<id>-3`, ... Its data dirs,
/// logs and container names all derive from the id, so concurrent runs never share them.
pub fn claim_run_dir(
    out: &std::path::Path,
    id: &str,
) -> anyhow::Result<(String, std::path::PathBuf)> {
    let runs = out.join("runs");
    std::fs::create_dir_all(&runs)
        .map_err(|e| anyhow::anyhow!("create {}: {e}", runs.display()))?;
    for n in 1..1000 {
        let run_id = if n == 1 {
            id.to_string()
        } else {
            format!("{id}-{n}")
        };
        let dir = runs.join(&run_id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((run_id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => anyhow::bail!("create {}: {e}", dir.display()),
        }
    }
    anyhow::bail!("no free run directory for {id} under {}", runs.display())
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_leftovers_of_gone_owners_are_removed() {
        let now = 10 * MAX_AGE_S;
        let alive = |o: &str| match o {
            "here:1:5" => Some(true),
            "here:2:5" => Some(false),
            _ => None,
        };
        let judge = |l: &HashMap<String, String>, created| judge(l, created, "mine", now, &alive);
        let ours = labels(&[(LABEL, "1"), (RUN_LABEL, "mine"), (OWNER_LABEL, "here:2:5")]);
        assert!(matches!(judge(&ours, None), Verdict::Keep(_)));
        let live = labels(&[(RUN_LABEL, "a"), (OWNER_LABEL, "here:1:5")]);
        assert!(matches!(judge(&live, None), Verdict::Keep(_)));
        let dead = labels(&[(RUN_LABEL, "b"), (OWNER_LABEL, "here:2:5")]);
        assert_eq!(
            judge(&dead, None),
            Verdict::Remove("run b: owner here:2:5 is gone".into())
        );
        // Another host's: only by age.
        let young = labels(&[
            (RUN_LABEL, "c"),
            (OWNER_LABEL, "there:1:5"),
            (STARTED_LABEL, &(now - 60).to_string()),
        ]);
        assert!(matches!(judge(&young, None), Verdict::Keep(_)));
        let old = labels(&[
            (RUN_LABEL, "c"),
            (OWNER_LABEL, "there:1:5"),
            (STARTED_LABEL, &(now - MAX_AGE_S - 1).to_string()),
        ]);
        assert!(matches!(judge(&old, None), Verdict::Remove(_)));
        // An older harness's object (no owner, no started label): the engine's creation time.
        let legacy = labels(&[(LABEL, "1")]);
        assert!(matches!(judge(&legacy, Some(now - 5)), Verdict::Keep(_)));
        assert!(matches!(judge(&legacy, Some(0)), Verdict::Remove(_)));
        assert!(matches!(judge(&legacy, None), Verdict::Keep(_)));
    }

    #[test]
    fn run_dirs_are_claimed_once() {
        let out = tempfile::tempdir().unwrap();
        let (a, da) = claim_run_dir(out.path(), "r").unwrap();
        let (b, db) = claim_run_dir(out.path(), "r").unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("r", "r-2"));
        assert!(da.is_dir() && db.is_dir() && da != db);
    }

    #[test]
    fn this_process_is_alive_and_a_gone_pid_is_not() {
        let me = Owner::this_process("r");
        assert_eq!(owner_alive(&me.owner), Some(true));
        // Same pid, another start time: a reused pid is not the owner.
        let (rest, _) = me.owner.rsplit_once(':').unwrap();
        assert_eq!(owner_alive(&format!("{rest}:1")), Some(false));
        // A pid above the kernel's limit never exists.
        let host = hostname();
        assert_eq!(owner_alive(&format!("{host}:99999999:1")), Some(false));
        assert_eq!(owner_alive("elsewhere.example:1:1"), None);
        assert_eq!(me.labels()[RUN_LABEL], "r");
    }
}
