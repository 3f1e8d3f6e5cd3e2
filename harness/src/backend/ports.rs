//! Loopback ports for nodes, never shared between runs on one machine. A port is taken from
//! below the kernel's ephemeral range (so no outgoing connection of any process is given it
//! while its node is down or not yet bound) and reserved for the run's lifetime by an
//! exclusive `flock` on `<tmp>/varpulis-harness-ports/<port>`: a concurrent run skips it, and
//! the kernel releases the lock when the harness exits, however it exits.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use rand::Rng;

/// Lowest port handed out (below it: well-known and registered services are more common).
const FLOOR: u16 = 10_000;

/// Ports reserved for one run; dropping it releases them.
#[derive(Debug, Default)]
pub struct PortLease {
    locks: Vec<Flock<File>>,
}

use cluster::broker::ephemeral_range;

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("varpulis-harness-ports")
}

/// Reserve `n` distinct loopback ports, each bindable right now and outside the ephemeral range.
pub fn reserve(n: usize) -> anyhow::Result<(Vec<u16>, PortLease)> {
    let (lo, hi) = ephemeral_range();
    // The larger span outside the ephemeral range.
    let (first, last) = if lo.saturating_sub(FLOOR) >= u16::MAX - hi {
        (FLOOR, lo - 1)
    } else {
        (hi + 1, u16::MAX)
    };
    if last <= first {
        bail!("no port range outside the ephemeral range {lo}-{hi}");
    }
    let dir = lock_dir();
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        // Shared by every user's runs, like /tmp itself (sticky: no one removes another's).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    let span = u32::from(last - first) + 1;
    let start = rand::rng().random_range(0..span);
    let mut ports = Vec::with_capacity(n);
    let mut lease = PortLease::default();
    for i in 0..span {
        if ports.len() == n {
            break;
        }
        let port = first + ((start + i) % span) as u16;
        let path = dir.join(port.to_string());
        // Another user's lock file may be read-only to us: flock works on a read-only open.
        let opened = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .or_else(|_| File::open(&path));
        let Ok(file) = opened else {
            continue;
        };
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue; // another run holds it
        };
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // something outside the harness listens there
        }
        ports.push(port);
        lease.locks.push(lock);
    }
    if ports.len() < n {
        bail!(
            "only {} free ports in {first}-{last}, {n} needed",
            ports.len()
        );
    }
    Ok((ports, lease))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_outside_the_ephemeral_range_and_not_handed_out_twice() {
        let (lo, hi) = ephemeral_range();
        let (a, lease_a) = reserve(20).unwrap();
        let (b, _lease_b) = reserve(20).unwrap();
        let mut all: Vec<u16> = a.iter().chain(&b).copied().collect();
        assert!(all.iter().all(|p| !(lo..=hi).contains(p) && *p >= FLOOR));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 40, "a port was reserved twice");
        drop(lease_a);
        // Released: lockable again.
        let file = File::open(lock_dir().join(a[0].to_string())).unwrap();
        assert!(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
