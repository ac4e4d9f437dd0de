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
//! Affinity is set with util-linux's `taskset` on every thread of a process;
//! threads made later inherit it from the thread that makes them.

use anyhow::{Context, bail};
use std::process::Command;

/// The server's CPU.
const SERVER_CPU: usize = 0;

/// Pin every thread of `pid` to `cpus` (a `taskset` CPU list). Threads are
/// pinned one by one, and one that ends meanwhile is no error (`taskset -a`
/// fails the whole call when a thread it listed is gone by the time it gets
/// to it, which a busy test process hit).
fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let tasks = format!("/proc/{pid}/task");
    let threads = std::fs::read_dir(&tasks).with_context(|| format!("cannot list {tasks}"))?;
    for thread in threads {
        let tid = thread?.file_name();
        let status = Command::new("taskset")
            .args(["-p", "-c", cpus])
            .arg(&tid)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("cannot run taskset (util-linux) for --pin-cores")?;
        let gone = !std::path::Path::new(&tasks).join(&tid).exists();
        if !status.success() && !gone {
            bail!("taskset could not pin thread {tid:?} of process {pid} to CPUs {cpus}");
        }
    }
    Ok(())
}

/// The CPUs the load generator keeps: every one after the server's.
fn generator_cpus() -> anyhow::Result<String> {
    // Not `available_parallelism`: it counts this process's affinity, which
    // the first split narrowed (a `--server both` run splits twice).
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("cannot read the online CPUs")?;
    let cpus = online_count(&online).context("cannot parse the online CPUs")?;
    if cpus < 2 {
        bail!("--pin-cores needs at least two CPUs (this machine has {cpus})");
    }
    // Written as the kernel lists it (`Cpus_allowed_list`): `1`, or `1-7`.
    let (first, last) = (SERVER_CPU + 1, cpus - 1);
    Ok(if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    })
}

/// How many CPUs a kernel CPU list such as `0-3` or `0,2-5` covers up to its
/// highest (the highest number plus one).
fn online_count(list: &str) -> Option<usize> {
    list.trim()
        .split([',', '-'])
        .map(|n| n.parse::<usize>().ok())
        .try_fold(0, |most, n| Some(most.max(n? + 1)))
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
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
        if online_count(&online).unwrap() < 2 {
            // The split itself must refuse, not pretend.
            assert!(generator_cpus().is_err());
            return;
        }
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let before = std::fs::read_to_string("/proc/self/status").unwrap();
        split(child.id()).unwrap();
        // A second server in the same run (`--server both`) splits again.
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
        assert_eq!(own, generator_cpus().unwrap());
        // Give this test process its CPUs back for the tests after it.
        pin(std::process::id(), &allowed(&before)).unwrap();
        child.kill().unwrap();
        let _ = child.wait();
    }

    #[test]
    fn cpu_lists_are_counted_to_their_highest_cpu() {
        assert_eq!(online_count("0\n"), Some(1));
        assert_eq!(online_count("0-1\n"), Some(2));
        assert_eq!(online_count("0,2-5"), Some(6));
        assert_eq!(online_count("zero"), None);
    }
}
