//! What the kernel's UDP send alone costs per forwarded copy on this machine:
//! the ceiling of "forwarded packets per SFU CPU-second" for any SFU that
//! sends every copy as its own datagram from one socket, and what GSO saves
//! when a receiver's copies go as one run.
//!
//! One thread sends through the SFU's own media socket code
//! (`sfu::udp::MediaSocket`: `sendmmsg` in batches of 32, or one GSO
//! `sendmsg` per run to one receiver) a burst of `P` datagrams to each of
//! `N` receivers on 127.0.0.1, `bursts` times a second,
//! and does nothing else: no str0m, no routing, no encryption. Receivers are
//! sockets read by a second thread, which sleeps between bursts like the
//! load test's receivers do, so each burst wakes it as real traffic would.
//! Only the sending thread's CPU time is counted (user and system apart), as
//! the load test counts the SFU process's.
//!
//! ```text
//! cargo run --release -p sfu --example udp_floor -- [receivers] [seconds] [packets-per-burst] [bursts-per-second] [bytes] [gso]
//! ```
//!
//! Defaults (150, 10, 3, 60, 1000, 0) are close to the load test's video
//! fan-out: ~180 packets a second to each receiver, ~27 000 datagrams a
//! second. With `gso` 1 the socket sends each receiver's burst as one GSO
//! run (as the SFU does with a subscriber's copies of a frame); with 0 every
//! datagram goes alone, as before GSO.

use sfu::udp::{MediaSocket, size_buffers};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!(
                    "usage: udp_floor [receivers] [seconds] [packets-per-burst] [bursts-per-second] [bytes] [gso 0|1]"
                );
                std::process::exit(2)
            })
        })
        .collect();
    let arg = |i: usize, default: u64| args.get(i).copied().unwrap_or(default);
    let receivers = arg(0, 150) as usize;
    let seconds = arg(1, 10);
    let per_burst = arg(2, 3) as usize;
    let bursts_per_second = arg(3, 60).max(1);
    let bytes = arg(4, 1000) as usize;
    let gso = arg(5, 0) == 1;

    // Receivers: plain sockets on their own thread, drained whenever readable.
    let mut sockets = Vec::new();
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for _ in 0..receivers {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a receiver");
        size_buffers(&socket, 1 << 20).expect("size a receiver's buffers");
        socket.set_nonblocking(true).expect("non-blocking receiver");
        addresses.push(socket.local_addr().expect("receiver address"));
        sockets.push(socket);
    }
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let receiver_thread = {
        let received = received.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for socket in sockets {
                    let received = received.clone();
                    let stop = stop.clone();
                    tasks.push(tokio::spawn(async move {
                        let socket = tokio::net::UdpSocket::from_std(socket).expect("tokio socket");
                        let mut buffer = [0u8; 2048];
                        loop {
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                read = socket.recv(&mut buffer) => {
                                    if read.is_ok() {
                                        received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                    }));
                }
                for task in tasks {
                    let _ = task.await;
                }
            });
        })
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("sender runtime");
    let report = runtime.block_on(async move {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the sender");
        size_buffers(&socket, 4 << 20).expect("size the sender's buffers");
        socket.set_nonblocking(true).expect("non-blocking sender");
        let mut socket = MediaSocket::new(tokio::net::UdpSocket::from_std(socket).expect("tokio"));
        socket.set_gso(gso);
        let payload = vec![0x5au8; bytes];
        // One burst: each receiver's packets back to back, as the SFU's
        // batched pass sends a frame's copies.
        let burst: Vec<SocketAddr> = addresses
            .iter()
            .flat_map(|a| std::iter::repeat_n(*a, per_burst))
            .collect();
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / bursts_per_second as u32);
        let warmup = Duration::from_secs(1);
        let started = Instant::now();
        let mut measuring: Option<(Instant, Duration, Duration, u64)> = None;
        let mut sent = 0u64;
        loop {
            ticker.tick().await;
            if measuring.is_none() && started.elapsed() >= warmup {
                measuring = Some((Instant::now(), thread_cpu(), thread_times().1, sent));
            }
            if let Some((at, ..)) = measuring
                && at.elapsed() >= Duration::from_secs(seconds)
            {
                break;
            }
            let mut next = 0;
            while next < burst.len() {
                let batch = burst[next..].iter().map(|to| (*to, payload.as_slice()));
                match socket.try_send_batch(batch) {
                    Ok(count) => {
                        next += count.max(1);
                        sent += count as u64;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        socket.writable().await.expect("writable");
                    }
                    Err(err) => panic!("send failed: {err}"),
                }
            }
        }
        assert_eq!(socket.gso(), gso, "the kernel refused GSO");
        let (at, cpu0, system0, sent0) = measuring.expect("measured");
        (
            at.elapsed(),
            thread_cpu() - cpu0,
            thread_times().1 - system0,
            sent - sent0,
        )
    });
    stop.cancel();
    let _ = receiver_thread.join();
    let (wall, cpu, system, sent) = report;
    let user = cpu.saturating_sub(system);
    let cpu = cpu.as_secs_f64();
    println!(
        "{receivers} receivers, {per_burst} x {bytes} B per receiver {bursts_per_second} times a second{}: \
         {sent} datagrams in {:.1} s ({:.0}/s), sender CPU {:.3} s (user {:.3}, system {:.3}) -> \
         {:.2} us per datagram, {:.0} datagrams per sender CPU-second; {} received",
        if gso { ", GSO" } else { "" },
        wall.as_secs_f64(),
        sent as f64 / wall.as_secs_f64(),
        cpu,
        user.as_secs_f64(),
        system.as_secs_f64(),
        cpu * 1e6 / sent.max(1) as f64,
        sent as f64 / cpu.max(1e-9),
        received.load(std::sync::atomic::Ordering::Relaxed),
    );
}

/// This thread's CPU time so far (nanoseconds).
fn thread_cpu() -> Duration {
    let spec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("the thread CPU clock is readable");
    Duration::from(spec)
}

/// This thread's user and system CPU time so far, from
/// `/proc/thread-self/stat` (clock ticks of 10 ms: only for the split).
fn thread_times() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read thread stat");
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Duration {
        Duration::from_millis(10 * fields[i].parse::<u64>().expect("stat ticks"))
    };
    (ticks(11), ticks(12))
}
