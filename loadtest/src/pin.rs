//! `--pin-cores`: the server on CPU 0, the load generator on the others.
//!
//! On one machine the load generator and the server share the cores, and the
//! scheduler now and then runs the generator on the core the server's worker
//! was on, which shows up in the server's added latency as milliseconds of
//! waiting that a production SFU, with its machine to itself, does not have.
//! Pinning gives the server a core of its own. Loopback's receive-side work
//! (the softirq that delivers each datagram to a receiver's socket) still runs
//! inside the server's `sendmmsg`, so the server is not fully alone either way.
//!
//! Affinity is set with util-linux's `taskset` on every thread of a process
//! (`-a`); threads made later inherit it from the thread that makes them.

use anyhow::{Context, bail};
use std::process::Command;

/// The server's CPU.
const SERVER_CPU: usize = 0;

/// Pin every thread of `pid` to `cpus` (a `taskset` CPU list).
fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run taskset (util-linux) for --pin-cores")?;
    if !status.success() {
        bail!("taskset could not pin process {pid} to CPUs {cpus}");
    }
    Ok(())
}

/// The CPUs the load generator keeps: every one after the server's.
fn generator_cpus() -> anyhow::Result<String> {
    let cpus = std::thread::available_parallelism()
        .context("cannot count the CPUs")?
        .get();
    if cpus < 2 {
        bail!("--pin-cores needs at least two CPUs (this machine has {cpus})");
    }
    Ok(format!("{}-{}", SERVER_CPU + 1, cpus - 1))
}

/// The server (`pid`) on its core, this process on the others.
pub fn split(pid: u32) -> anyhow::Result<()> {
    let generator = generator_cpus()?;
    pin(pid, &SERVER_CPU.to_string())?;
    pin(std::process::id(), &generator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_pinned_to_the_server_cpu_and_this_process_to_the_rest() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            // The split itself must refuse, not pretend.
            assert!(generator_cpus().is_err());
            return;
        }
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let before = std::fs::read_to_string("/proc/self/status").unwrap();
        split(child.id()).unwrap();
        let allowed = |status: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
                .unwrap()
        };
        let child_status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        assert_eq!(allowed(&child_status), "0");
        let own = allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
        assert!(!own.starts_with('0'), "{own}");
        // Give this test process its CPUs back for the tests after it.
        pin(std::process::id(), &allowed(&before)).unwrap();
        child.kill().unwrap();
        let _ = child.wait();
    }
}
