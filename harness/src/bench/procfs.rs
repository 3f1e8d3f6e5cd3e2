//! CPU and memory of the cluster's processes and of the harness itself, read from `/proc`
//! (Linux): `utime + stime` from `/proc/<pid>/stat` (every thread of the process, in clock
//! ticks), `VmRSS` from `/proc/<pid>/status`, and the machine's ticks from the `cpu` line of
//! `/proc/stat`.
//!
//! A CPU share is `Δ(utime + stime)` of the process over the machine's elapsed ticks per core
//! (`Δ` of the sum of the `cpu` line's fields, divided by the number of `cpuN` lines): both are
//! in the kernel's `USER_HZ` ticks, so no clock rate is assumed. 100 % is one core busy for the
//! whole interval.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::backend::{now_us, WallUs};
use crate::traffic::publisher::{lock, AbortOnDrop};

/// How often the background sampler reads `/proc` (the per-second series of the CSV).
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// `utime + stime` (clock ticks) from one `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself, so fields are counted from the
/// last `)`: after it come state (3), …, utime (14), stime (15).
pub fn parse_pid_stat(line: &str) -> anyhow::Result<u64> {
    let close = line.rfind(')').context("no `)` closing the command name")?;
    let fields: Vec<&str> = line[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state): field n is fields[n - 3].
    let field = |n: usize| -> anyhow::Result<u64> {
        let text = fields
            .get(n - 3)
            .with_context(|| format!("stat line has no field {n}"))?;
        text.parse()
            .with_context(|| format!("stat field {n} is not a number: {text:?}"))
    };
    Ok(field(14)? + field(15)?)
}

/// `VmRSS` in kB from the text of `/proc/<pid>/status`.
pub fn parse_status_rss_kb(status: &str) -> anyhow::Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line (a kernel thread or a zombie)")?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value = words.next().context("VmRSS has no value")?;
    if words.next() != Some("kB") {
        bail!("VmRSS is not in kB: {line:?}");
    }
    value
        .parse()
        .with_context(|| format!("VmRSS is not a number: {line:?}"))
}

/// The machine's ticks from the text of `/proc/stat`: (sum of the `cpu` line's fields, its
/// idle + iowait, the number of `cpuN` lines).
pub fn parse_proc_stat(text: &str) -> anyhow::Result<MachineTicks> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no aggregate `cpu` line")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().with_context(|| format!("`cpu` field {v:?}")))
        .collect::<anyhow::Result<_>>()?;
    if values.len() < 5 {
        bail!(
            "`cpu` line has {} fields, expected at least 5",
            values.len()
        );
    }
    // user nice system idle iowait irq softirq steal guest guest_nice: guest time is already
    // counted in user (and guest_nice in nice), so the total leaves them out.
    let total = values.iter().take(8).sum();
    let idle = values[3] + values[4];
    let cores = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    if cores == 0 {
        bail!("no `cpuN` line");
    }
    Ok(MachineTicks { total, idle, cores })
}

/// The machine's CPU ticks at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineTicks {
    /// Every core's ticks (busy and idle).
    pub total: u64,
    /// Idle and iowait ticks.
    pub idle: u64,
    pub cores: u64,
}

/// One process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcTicks {
    /// `utime + stime`, clock ticks.
    pub cpu_ticks: u64,
    pub rss_kb: u64,
}

/// Read one process's ticks and RSS.
pub fn read_process(pid: u32) -> anyhow::Result<ProcTicks> {
    read_process_at(&Path::new("/proc").join(pid.to_string()))
}

fn read_process_at(dir: &Path) -> anyhow::Result<ProcTicks> {
    let stat = std::fs::read_to_string(dir.join("stat"))
        .with_context(|| format!("read {}/stat", dir.display()))?;
    let status = std::fs::read_to_string(dir.join("status"))
        .with_context(|| format!("read {}/status", dir.display()))?;
    Ok(ProcTicks {
        cpu_ticks: parse_pid_stat(&stat)?,
        rss_kb: parse_status_rss_kb(&status)?,
    })
}

/// The machine's ticks now.
pub fn read_machine() -> anyhow::Result<MachineTicks> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").context("read /proc/stat")?)
}

/// Every watched process (and the machine) at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub at_us: WallUs,
    pub machine: MachineTicks,
    /// By process name (`broker`, `worker-1`, …, `harness`); a process that could not be read
    /// (exited) is absent.
    pub processes: Vec<(String, ProcTicks)>,
}

impl Snapshot {
    fn process(&self, name: &str) -> Option<ProcTicks> {
        self.processes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
    }
}

/// What one process did between two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub name: String,
    /// CPU share, % of one core (100 = one core busy the whole interval).
    pub cpu_pct: f64,
    /// RSS at the later snapshot, kB.
    pub rss_kb: u64,
}

/// CPU share (% of one core) of `ticks` over the interval between `from` and `to`.
pub fn cpu_pct(ticks: u64, from: &MachineTicks, to: &MachineTicks) -> f64 {
    let per_core = to.total.saturating_sub(from.total) as f64 / to.cores.max(1) as f64;
    if per_core <= 0.0 {
        return 0.0;
    }
    100.0 * ticks as f64 / per_core
}

/// Every process present in both snapshots, in `to`'s order, plus the machine's busy share
/// (% of all its cores) as the last entry, named `machine`.
pub fn usage(from: &Snapshot, to: &Snapshot) -> Vec<Usage> {
    let mut out: Vec<Usage> = to
        .processes
        .iter()
        .filter_map(|(name, later)| {
            let earlier = from.process(name)?;
            Some(Usage {
                name: name.clone(),
                cpu_pct: cpu_pct(
                    later.cpu_ticks.saturating_sub(earlier.cpu_ticks),
                    &from.machine,
                    &to.machine,
                ),
                rss_kb: later.rss_kb,
            })
        })
        .collect();
    let total = to.machine.total.saturating_sub(from.machine.total);
    let idle = to.machine.idle.saturating_sub(from.machine.idle);
    let busy_pct = if total == 0 {
        0.0
    } else {
        100.0 * total.saturating_sub(idle) as f64 / total as f64
    };
    out.push(Usage {
        name: MACHINE.into(),
        cpu_pct: busy_pct,
        rss_kb: 0,
    });
    out
}

/// The name of the machine-wide entry of [`usage`] (% of all cores, not of one).
pub const MACHINE: &str = "machine";
/// The name the harness's own process is watched under.
pub const HARNESS: &str = "harness";

/// Reads the watched processes' `/proc` entries on demand and every [`SAMPLE_PERIOD`] in the
/// background, keeping every snapshot (the per-second series).
pub struct Sampler {
    pids: Arc<Vec<(String, u32)>>,
    series: Arc<Mutex<Vec<Snapshot>>>,
    _task: AbortOnDrop,
}

impl Sampler {
    /// Watch `pids` (name, pid) and the harness itself.
    pub fn start(mut pids: Vec<(String, u32)>) -> Self {
        pids.push((HARNESS.into(), std::process::id()));
        let pids = Arc::new(pids);
        let series = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (pids, series) = (pids.clone(), series.clone());
            async move {
                let mut tick = tokio::time::interval(SAMPLE_PERIOD);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    match take(&pids) {
                        Ok(s) => lock(&series).push(s),
                        Err(e) => tracing::warn!("/proc sample: {e:#}"),
                    }
                }
            }
        });
        Sampler {
            pids,
            series,
            _task: AbortOnDrop(task),
        }
    }

    /// A snapshot now (also added to the series).
    pub fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let s = take(&self.pids)?;
        lock(&self.series).push(s.clone());
        Ok(s)
    }

    /// Every snapshot so far, in time order.
    pub fn series(&self) -> Vec<Snapshot> {
        let mut s = lock(&self.series).clone();
        s.sort_by_key(|s| s.at_us);
        s
    }
}

fn take(pids: &[(String, u32)]) -> anyhow::Result<Snapshot> {
    let machine = read_machine()?;
    let processes = pids
        .iter()
        .filter_map(|(name, pid)| match read_process(*pid) {
            Ok(p) => Some((name.clone(), p)),
            Err(e) => {
                tracing::debug!("{name} (pid {pid}): {e:#}");
                None
            }
        })
        .collect();
    Ok(Snapshot {
        at_us: now_us(),
        machine,
        processes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_stat_line_with_a_tricky_command_name() {
        // A real line's shape (from a `cat`), its name made to hold spaces and parentheses.
        let line = "12374 (a b) c)) R 12370 12370 7816 0 -1 4194304 96 0 0 0 \
                    17 23 0 0 20 0 1 0 27062 3133440 381 18446744073709551615 0 0 0";
        assert_eq!(parse_pid_stat(line).unwrap(), 17 + 23);
        assert!(parse_pid_stat("12 (x) R 1 2").is_err());
        assert!(parse_pid_stat("no parenthesis").is_err());
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tcat\nVmPeak:\t 3060 kB\nVmRSS:\t    1524 kB\nThreads:\t1\n";
        assert_eq!(parse_status_rss_kb(status).unwrap(), 1524);
        assert!(parse_status_rss_kb("Name:\tkthreadd\n").is_err());
        assert!(parse_status_rss_kb("VmRSS:\t12 MB\n").is_err());
    }

    #[test]
    fn proc_stat_cpu_line() {
        let text = "cpu  38408 0 5113 9813 249 0 44 99 7 0\n\
                    cpu0 18871 0 2417 5457 48 0 5 47 0 0\n\
                    cpu1 19537 0 2696 4356 200 0 38 51 0 0\n\
                    intr 123\nctxt 456\n";
        let m = parse_proc_stat(text).unwrap();
        assert_eq!(
            m,
            MachineTicks {
                total: 38408 + 5113 + 9813 + 249 + 44 + 99,
                idle: 9813 + 249,
                cores: 2,
            }
        );
        assert!(parse_proc_stat("intr 1\n").is_err());
    }

    #[test]
    fn cpu_share_over_an_interval() {
        let from = MachineTicks {
            total: 1000,
            idle: 600,
            cores: 2,
        };
        let to = MachineTicks {
            total: 1400,
            idle: 700,
            cores: 2,
        };
        // 400 machine ticks over 2 cores = 200 ticks of wall time; 50 ticks is 25 % of a core.
        assert_eq!(cpu_pct(50, &from, &to), 25.0);
        let snap = |machine, ticks| Snapshot {
            at_us: 0,
            machine,
            processes: vec![(
                "worker-1".into(),
                ProcTicks {
                    cpu_ticks: ticks,
                    rss_kb: 10,
                },
            )],
        };
        let u = usage(&snap(from, 100), &snap(to, 300));
        assert_eq!(u[0].cpu_pct, 100.0);
        assert_eq!((u[1].name.as_str(), u[1].cpu_pct), (MACHINE, 75.0));
    }

    #[test]
    fn own_process_reads() {
        let me = read_process(std::process::id()).unwrap();
        assert!(me.rss_kb > 0, "{me:?}");
        let m = read_machine().unwrap();
        assert!(m.cores >= 1 && m.total >= m.idle, "{m:?}");
        // Burn some CPU: the ticks never go backwards.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(read_process(std::process::id()).unwrap().cpu_ticks >= me.cpu_ticks);
    }
}
