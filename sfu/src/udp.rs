//! The media socket, read and written in batches: one `recvmmsg` takes every
//! datagram already queued (up to [`BATCH`]), one `sendmmsg` sends up to
//! [`BATCH`] datagrams to as many destinations. Batching saves the per-call
//! cost of entering the kernel and looking up the socket, which at tens of
//! thousands of packets a second is worth having.
//!
//! GSO where it pays: a browser sends a video frame's packets back to back,
//! and one session pass sends a subscriber its copies of all of them, so the
//! outbox holds runs of datagrams to one destination. Such a run goes as one
//! datagram with the `UDP_SEGMENT` option (GSO): the kernel takes the whole
//! run through its send path once and cuts it into the original datagrams
//! at the end (on the wire nothing changes). GSO cuts at one size, so a run
//! is datagrams of the first one's length, the last possibly shorter;
//! browsers split a frame about equally (libwebrtc's larger packets come
//! last), so a frame makes one or two runs. On loopback the kernel's cost
//! per datagram falls by 15–20% in runs of two, 40–45% in runs of four and
//! ~60% in runs of eight (`examples/udp_floor.rs`). A kernel without GSO
//! (before Linux 4.18) is found when the socket is made (it does not know the
//! socket option); a device that cannot do it refuses the first run (`EIO`),
//! and the socket then sends datagram by datagram for good.
//!
//! Built on nix's safe wrappers of the two calls; the socket stays a tokio
//! `UdpSocket` for readiness.
//!
//! The kernel stamps each datagram with the time it arrived
//! (`SO_TIMESTAMPNS`), so the worker can measure the latency the SFU adds
//! from that moment on, including the time a datagram waited in the socket's
//! queue behind others. It also says how many datagrams it dropped because the
//! socket's receive buffer was full (`SO_RXQ_OVFL`): one port takes every
//! participant's media, and a burst that outruns the worker is lost there,
//! before any code of ours sees it, so it is counted ([`MediaSocket::overflow_drops`]).
//! [`size_buffers`] makes both buffers large enough for bursts in the first place.

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
    sendmmsg, sendmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per system call, both ways.
pub const BATCH: usize = 32;
/// Largest datagram read; anything longer is truncated and then rejected.
pub const MAX_DATAGRAM: usize = 2048;
/// Most datagrams one GSO send carries: the kernel's limit (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes one GSO send carries: a UDP datagram's payload limit over IPv6
/// (65 535 less the UDP header), the lower of the two families'.
const MAX_GSO_BYTES: usize = 65_527;

/// The receive and send buffer sizes a media socket got from the kernel, in
/// payload bytes (Linux reports twice that, its bookkeeping included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    pub receive: usize,
    pub send: usize,
}

/// Ask for `bytes` of receive and send buffer on a media socket. The kernel's
/// default (about 208 KiB, ~90 loopback datagrams of video) overflows in a
/// 25-person meeting whenever the worker is busy for a few milliseconds: what
/// overflows is lost, DTLS and ICE packets included, which delays a join by a
/// retransmission timer (a second or more). Linux caps the plain request at
/// `net.core.rmem_max`/`wmem_max`; a process with `CAP_NET_ADMIN` may go past
/// that (`SO_RCVBUFFORCE`), which is tried when the cap bit. Returns what the
/// kernel granted.
pub fn size_buffers(socket: &std::net::UdpSocket, bytes: usize) -> io::Result<BufferSizes> {
    use nix::sys::socket::getsockopt;
    // Linux reports twice the payload bytes it granted.
    let granted = |reported: usize| reported / 2;
    setsockopt(socket, sockopt::RcvBuf, &bytes)?;
    setsockopt(socket, sockopt::SndBuf, &bytes)?;
    if granted(getsockopt(socket, sockopt::RcvBuf)?) < bytes {
        let _ = setsockopt(socket, sockopt::RcvBufForce, &bytes);
    }
    if granted(getsockopt(socket, sockopt::SndBuf)?) < bytes {
        let _ = setsockopt(socket, sockopt::SndBufForce, &bytes);
    }
    Ok(BufferSizes {
        receive: granted(getsockopt(socket, sockopt::RcvBuf)?),
        send: granted(getsockopt(socket, sockopt::SndBuf)?),
    })
}

/// One received datagram: where it came from and how long it is; its bytes
/// are in [`MediaSocket::received`].
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub source: SocketAddr,
    pub len: usize,
    /// When the kernel received it (wall clock), if it said.
    pub arrived: Option<SystemTime>,
    /// Which receive buffer holds it (a datagram without a usable source
    /// address is skipped, so this can run ahead of its position).
    slot: usize,
}

pub struct MediaSocket {
    socket: UdpSocket,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    /// `BATCH` receive buffers of `MAX_DATAGRAM` bytes, back to back.
    buffers: Vec<u8>,
    /// What the last [`MediaSocket::try_recv_batch`] read.
    received: Vec<Received>,
    addresses: Vec<Option<SockaddrStorage>>,
    /// The kernel's count of datagrams dropped on a full receive buffer, as
    /// last reported with a received datagram.
    overflow_drops: u32,
    /// Whether runs to one destination go as one GSO send.
    gso: bool,
    sends: SendStats,
}

/// What the sending side did, cumulative: how many system calls took how many
/// datagrams, and how many of those went in GSO runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// `sendmmsg` and `sendmsg` calls that sent something.
    pub calls: u64,
    /// Datagrams those calls sent (each GSO segment counts as one).
    pub datagrams: u64,
    /// Datagrams sent as segments of GSO runs (included in `datagrams`).
    pub gso_datagrams: u64,
}

impl MediaSocket {
    pub fn new(socket: UdpSocket) -> Self {
        // Best effort: without stamps only the latency measurement is lost.
        if let Err(err) = setsockopt(&socket, sockopt::ReceiveTimestampns, &true) {
            tracing::debug!(%err, "no kernel receive timestamps");
        }
        // Best effort too: without it overflow drops go uncounted.
        if let Err(err) = setsockopt(&socket, sockopt::RxqOvfl, &1) {
            tracing::debug!(%err, "no kernel count of receive-buffer drops");
        }
        let gso = gso_supported(&socket);
        MediaSocket {
            socket,
            recv_headers: recv_headers(),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            buffers: vec![0; BATCH * MAX_DATAGRAM],
            received: Vec::with_capacity(BATCH),
            addresses: Vec::with_capacity(BATCH),
            overflow_drops: 0,
            gso,
            sends: SendStats::default(),
        }
    }

    /// Send runs to one destination as GSO datagrams (on by default where
    /// the kernel knows `UDP_SEGMENT`); off, every datagram goes alone.
    pub fn set_gso(&mut self, on: bool) {
        self.gso = on && gso_supported(&self.socket);
    }

    /// Whether GSO is in use: asked for and not refused by the kernel.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// What the sending side has done so far.
    pub fn send_stats(&self) -> SendStats {
        self.sends
    }

    /// Datagrams the kernel dropped on this socket because its receive
    /// buffer was full, as the last datagram read told (the kernel stamps each
    /// datagram with the count when it queues it, so a drop shows with the
    /// next datagram that got in; wraps at `u32::MAX`).
    pub fn overflow_drops(&self) -> u32 {
        self.overflow_drops
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Wait until a datagram can be read.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Wait until a datagram can be sent.
    pub async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }

    /// Read what is queued, up to [`BATCH`] datagrams, without waiting.
    /// `WouldBlock` when nothing is.
    pub fn try_recv_batch(&mut self) -> io::Result<usize> {
        let MediaSocket {
            socket,
            recv_headers,
            buffers,
            received,
            overflow_drops,
            ..
        } = self;
        received.clear();
        socket.try_io(Interest::READABLE, || {
            // The kernel shrinks each header's control length to what it
            // wrote, and nix does not restore it: a datagram that brings a
            // drop count besides its timestamp would then find too little room,
            // and the whole control block would be flagged truncated. Fresh
            // headers each call (a few small allocations per batch).
            *recv_headers = self::recv_headers();
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .chunks_exact_mut(MAX_DATAGRAM)
                .map(|chunk| [IoSliceMut::new(chunk)])
                .collect();
            let results = recvmmsg(
                socket.as_raw_fd(),
                recv_headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )?;
            for (slot, message) in results.enumerate() {
                // A datagram with no usable source address cannot be answered.
                if let Some(source) = message.address.as_ref().and_then(to_std) {
                    let mut arrived = None;
                    for cmsg in message.cmsgs().into_iter().flatten() {
                        match cmsg {
                            ControlMessageOwned::ScmTimestampns(ts) => {
                                arrived = u64::try_from(ts.tv_sec())
                                    .ok()
                                    .zip(u32::try_from(ts.tv_nsec()).ok())
                                    .and_then(|(s, ns)| {
                                        SystemTime::UNIX_EPOCH.checked_add(Duration::new(s, ns))
                                    });
                            }
                            // Cumulative; absent until the first drop.
                            ControlMessageOwned::RxqOvfl(dropped) => *overflow_drops = dropped,
                            _ => {}
                        }
                    }
                    received.push(Received {
                        source,
                        len: message.bytes,
                        arrived,
                        slot,
                    });
                }
            }
            Ok(())
        })?;
        Ok(self.received.len())
    }

    /// Datagram `index` of those the last [`MediaSocket::try_recv_batch`]
    /// read (`index` below the count it returned), with its bytes.
    pub fn datagram(&self, index: usize) -> (Received, &[u8]) {
        let r = self.received[index];
        let start = r.slot * MAX_DATAGRAM;
        (r, &self.buffers[start..start + r.len.min(MAX_DATAGRAM)])
    }

    /// Send the first of `datagrams` in one call without waiting: a GSO run
    /// to one destination (see the module's notes) or up to [`BATCH`]
    /// datagrams each alone; how many went. Order is kept: a call sends a
    /// prefix. `WouldBlock` when the socket buffer is full. An error that
    /// concerns the first datagram alone (a destination the kernel refuses)
    /// is returned as is: the caller drops that datagram and carries on.
    pub fn try_send_batch<'d>(
        &mut self,
        datagrams: impl Iterator<Item = (SocketAddr, &'d [u8])> + Clone,
    ) -> io::Result<usize> {
        if self.gso {
            let run = gso_run(datagrams.clone());
            if run >= 2 {
                match self.try_send_run(datagrams.clone().take(run)) {
                    Ok(()) => {
                        self.count_sent(run, run);
                        return Ok(run);
                    }
                    Err(err) if gso_refused(&err) => {
                        // Not this kernel or device: the rest of this
                        // socket's life goes datagram by datagram.
                        tracing::warn!(%err, "GSO refused on the media socket; sending datagrams one by one");
                        self.gso = false;
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        // Alone: up to the next run (which the next call sends as one).
        let alone = if self.gso {
            singles_before_run(datagrams.clone()).min(BATCH)
        } else {
            BATCH
        };
        let sent = self.try_send_each(datagrams.take(alone))?;
        self.count_sent(sent, 0);
        Ok(sent)
    }

    fn count_sent(&mut self, datagrams: usize, gso: usize) {
        self.sends.calls += 1;
        self.sends.datagrams += datagrams as u64;
        self.sends.gso_datagrams += gso as u64;
    }

    /// One `sendmsg` of a run [`gso_run`] found: the datagrams gathered
    /// straight from their buffers, cut by the kernel at the first one's
    /// length.
    fn try_send_run<'d>(
        &mut self,
        run: impl Iterator<Item = (SocketAddr, &'d [u8])> + Clone,
    ) -> io::Result<()> {
        let Some((to, first)) = run.clone().next() else {
            return Ok(());
        };
        let to = SockaddrStorage::from(to);
        let segment = u16::try_from(first.len()).map_err(|_| Errno::EMSGSIZE)?;
        let slices: Vec<IoSlice<'_>> = run.map(|(_, bytes)| IoSlice::new(bytes)).collect();
        let socket = &self.socket;
        socket.try_io(Interest::WRITABLE, || {
            sendmsg(
                socket.as_raw_fd(),
                &slices,
                &[ControlMessage::UdpGsoSegments(&segment)],
                MsgFlags::MSG_DONTWAIT,
                Some(&to),
            )?;
            Ok(())
        })
    }

    /// One `sendmmsg` of each of `datagrams` alone (up to [`BATCH`]).
    fn try_send_each<'d>(
        &mut self,
        datagrams: impl Iterator<Item = (SocketAddr, &'d [u8])> + Clone,
    ) -> io::Result<usize> {
        let MediaSocket {
            socket,
            send_headers,
            addresses,
            ..
        } = self;
        addresses.clear();
        addresses.extend(
            datagrams
                .clone()
                .take(BATCH)
                .map(|(to, _)| Some(SockaddrStorage::from(to))),
        );
        let slices: Vec<[IoSlice<'_>; 1]> = datagrams
            .take(BATCH)
            .map(|(_, bytes)| [IoSlice::new(bytes)])
            .collect();
        socket.try_io(Interest::WRITABLE, || {
            let sent = sendmmsg(
                socket.as_raw_fd(),
                send_headers,
                slices.iter(),
                &addresses[..],
                [],
                MsgFlags::MSG_DONTWAIT,
            )?;
            Ok(sent.count())
        })
    }
}

/// How many of the first `datagrams` make one GSO run: the same destination,
/// each as long as the first but the last, which may be shorter (the kernel
/// cuts a GSO datagram at one length), at most [`MAX_SEGMENTS`] and
/// [`MAX_GSO_BYTES`]. 1 when the second cannot join the first; 0 when there
/// is nothing.
pub fn gso_run<'d>(mut datagrams: impl Iterator<Item = (SocketAddr, &'d [u8])>) -> usize {
    let Some((to, first)) = datagrams.next() else {
        return 0;
    };
    let segment = first.len();
    if segment == 0 {
        return 1;
    }
    let (mut count, mut bytes) = (1, segment);
    for (next_to, next) in datagrams {
        if count == MAX_SEGMENTS
            || next_to != to
            || next.is_empty()
            || next.len() > segment
            || bytes + next.len() > MAX_GSO_BYTES
        {
            break;
        }
        count += 1;
        bytes += next.len();
        if next.len() < segment {
            break; // a shorter one ends the run
        }
    }
    count
}

/// How many of the first `datagrams` go alone before the first GSO run.
fn singles_before_run<'d>(
    datagrams: impl Iterator<Item = (SocketAddr, &'d [u8])> + Clone,
) -> usize {
    let mut rest = datagrams;
    let mut alone = 0;
    while alone < BATCH {
        match gso_run(rest.clone()) {
            0 => break,
            1 => {
                alone += 1;
                rest.next();
            }
            _ => break,
        }
    }
    alone
}

/// Whether the kernel knows GSO for UDP (Linux 4.18 on): it answers for the
/// socket option. A device that cannot do it still refuses the first send
/// (see [`gso_refused`]).
fn gso_supported(socket: &UdpSocket) -> bool {
    nix::sys::socket::getsockopt(socket, sockopt::UdpGsoSegment).is_ok()
}

/// Whether a GSO send failed because GSO is not available here, rather than
/// for its destination: `EIO` (the device cannot checksum for GSO), `EINVAL`
/// (a kernel that knows no `UDP_SEGMENT`), `ENOPROTOOPT`/`EOPNOTSUPP`.
fn gso_refused(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)
    )
}

/// Headers for [`BATCH`] datagrams, each with room for a receive timestamp
/// and the kernel's drop count.
fn recv_headers() -> MultiHeaders<SockaddrStorage> {
    MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec, u32)))
}

fn to_std(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    if let Some(v6) = address.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A media socket on 127.0.0.1 with `buffer` bytes asked for.
    fn media_socket(buffer: usize) -> (MediaSocket, SocketAddr) {
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        size_buffers(&std_socket, buffer).unwrap();
        std_socket.set_nonblocking(true).unwrap();
        let addr = std_socket.local_addr().unwrap();
        (
            MediaSocket::new(UdpSocket::from_std(std_socket).unwrap()),
            addr,
        )
    }

    /// Read until the queue is empty; every datagram's arrival stamp.
    async fn read_all(socket: &mut MediaSocket) -> Vec<Option<SystemTime>> {
        socket.readable().await.unwrap();
        let mut stamps = Vec::new();
        loop {
            match socket.try_recv_batch() {
                Ok(count) => stamps.extend((0..count).map(|i| socket.datagram(i).0.arrived)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return stamps,
                Err(err) => panic!("recvmmsg failed: {err}"),
            }
        }
    }

    #[tokio::test]
    async fn datagrams_lost_to_a_full_receive_buffer_are_counted_and_stamps_survive() {
        // The smallest buffer the kernel allows: a burst overflows it.
        let (mut socket, addr) = media_socket(1);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        const SENT: u32 = 300;
        for i in 0..SENT {
            sender.send_to(&[i as u8; 1000], addr).unwrap();
        }
        let mut stamps = read_all(&mut socket).await;
        assert!(!stamps.is_empty() && stamps.len() < SENT as usize);
        // The kernel tells a drop with the next datagram queued after it.
        sender.send_to(b"after", addr).unwrap();
        stamps.extend(read_all(&mut socket).await);
        assert_eq!(stamps.len() as u32 + socket.overflow_drops(), SENT + 1);
        // The drop count and the stamp share each datagram's control block:
        // neither may push the other out (the headers are reset per call).
        assert!(
            stamps.iter().all(Option::is_some),
            "a receive stamp went missing"
        );

        // Once told, the count holds while nothing more is lost.
        let dropped = socket.overflow_drops();
        sender.send_to(b"later", addr).unwrap();
        let stamps = read_all(&mut socket).await;
        assert_eq!(stamps.len(), 1);
        assert!(stamps[0].is_some());
        assert_eq!(socket.overflow_drops(), dropped);
    }

    #[tokio::test]
    async fn a_burst_that_fits_the_default_buffer_loses_nothing() {
        let (mut socket, addr) = media_socket(crate::Config::DEFAULT_SOCKET_BUFFER);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // ~1 s of a 25-person meeting's video arriving while the worker is busy.
        const SENT: usize = 1500;
        for i in 0..SENT {
            sender.send_to(&[i as u8; 1200], addr).unwrap();
        }
        let stamps = read_all(&mut socket).await;
        assert_eq!(socket.overflow_drops(), 0);
        assert_eq!(stamps.len(), SENT);
    }

    /// Datagrams of these lengths, to `a` or `b`, each filled with its own
    /// index so a receiver can tell them apart.
    fn datagrams(
        spec: &[(char, usize)],
        a: SocketAddr,
        b: SocketAddr,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        spec.iter()
            .enumerate()
            .map(|(i, (to, len))| (if *to == 'a' { a } else { b }, vec![i as u8; *len]))
            .collect()
    }

    fn run_of(spec: &[(char, usize)]) -> usize {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let d = datagrams(spec, a, b);
        gso_run(d.iter().map(|(to, bytes)| (*to, bytes.as_slice())))
    }

    #[test]
    fn a_gso_run_is_one_destination_cut_at_the_first_length() {
        assert_eq!(run_of(&[]), 0);
        assert_eq!(run_of(&[('a', 1000)]), 1);
        // A frame split equally, then the next subscriber's copies.
        assert_eq!(
            run_of(&[('a', 1000), ('a', 1000), ('a', 1000), ('b', 1000)]),
            3
        );
        // The last may be shorter, and ends the run.
        assert_eq!(
            run_of(&[('a', 1000), ('a', 1000), ('a', 700), ('a', 700)]),
            3
        );
        // libwebrtc puts the one-byte-larger packets last: they start a run of their own.
        assert_eq!(run_of(&[('a', 1000), ('a', 1001), ('a', 1001)]), 1);
        assert_eq!(run_of(&[('a', 1001), ('a', 1001)]), 2);
        // An empty datagram cannot be a segment.
        assert_eq!(run_of(&[('a', 0), ('a', 0)]), 1);
        assert_eq!(run_of(&[('a', 100), ('a', 0)]), 1);
    }

    #[test]
    fn a_gso_run_stays_within_the_kernel_limits() {
        let many = vec![('a', 100); MAX_SEGMENTS + 10];
        assert_eq!(run_of(&many), MAX_SEGMENTS);
        // 1 500-byte datagrams: 43 fit under 65 527 bytes.
        let large = vec![('a', 1500); 60];
        assert_eq!(run_of(&large), MAX_GSO_BYTES / 1500);
    }

    /// Send `spec` through a media socket with GSO `on` until all went;
    /// what each of the two receivers got, in order, the socket's stats and
    /// whether it still has GSO on.
    async fn send_through(
        spec: &[(char, usize)],
        on: bool,
    ) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, SendStats, bool) {
        let (mut socket, _) = media_socket(1 << 20);
        socket.set_gso(on);
        let receivers: Vec<std::net::UdpSocket> = (0..2)
            .map(|_| {
                let r = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                size_buffers(&r, 1 << 20).unwrap();
                r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                r
            })
            .collect();
        let (a, b) = (
            receivers[0].local_addr().unwrap(),
            receivers[1].local_addr().unwrap(),
        );
        let all = datagrams(spec, a, b);
        let mut next = 0;
        while next < all.len() {
            let batch = all[next..]
                .iter()
                .map(|(to, bytes)| (*to, bytes.as_slice()));
            match socket.try_send_batch(batch) {
                Ok(sent) => next += sent,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    socket.writable().await.unwrap()
                }
                Err(err) => panic!("send failed: {err}"),
            }
        }
        let read = |r: &std::net::UdpSocket, count: usize| -> Vec<Vec<u8>> {
            let mut buffer = [0u8; 70_000];
            (0..count)
                .map(|_| {
                    let len = r.recv(&mut buffer).expect("a datagram");
                    buffer[..len].to_vec()
                })
                .collect()
        };
        let to_a = spec.iter().filter(|(to, _)| *to == 'a').count();
        let got_a = read(&receivers[0], to_a);
        let got_b = read(&receivers[1], spec.len() - to_a);
        (got_a, got_b, socket.send_stats(), socket.gso())
    }

    #[tokio::test]
    async fn gso_runs_arrive_as_the_datagrams_they_were_in_order() {
        // Two subscribers' copies of a frame split as libwebrtc does (larger
        // last), a shorter tail, and an RTCP packet in between.
        let spec = [
            ('a', 1000),
            ('a', 1000),
            ('a', 1001),
            ('a', 1001),
            ('b', 1000),
            ('b', 1000),
            ('b', 1001),
            ('b', 1001),
            ('a', 80),
            ('b', 1150),
            ('b', 1150),
            ('b', 1150),
            ('b', 300),
        ];
        let (got_a, got_b, stats, gso_kept) = send_through(&spec, true).await;
        let want = |who: char| -> Vec<Vec<u8>> {
            spec.iter()
                .enumerate()
                .filter(|(_, (to, _))| *to == who)
                .map(|(i, (_, len))| vec![i as u8; *len])
                .collect()
        };
        assert_eq!(got_a, want('a'), "each datagram whole, in order");
        assert_eq!(got_b, want('b'));
        // Runs: a[0,1] a[2,3] b[4,5] b[6,7] (a[8] alone) b[9..12].
        assert_eq!(stats.gso_datagrams, 12);
        assert_eq!(stats.datagrams, 13);
        assert_eq!(
            stats.calls, 6,
            "five runs and one call for the datagram alone"
        );
        assert!(gso_kept, "loopback takes GSO: the socket kept it on");

        // Without GSO the same datagrams arrive the same way, in one call.
        let (plain_a, plain_b, plain, _) = send_through(&spec, false).await;
        assert_eq!((plain_a, plain_b), (want('a'), want('b')));
        assert_eq!(
            plain,
            SendStats {
                calls: 1,
                datagrams: 13,
                gso_datagrams: 0
            }
        );
    }

    #[tokio::test]
    async fn a_new_socket_has_gso_where_the_kernel_knows_it_and_it_can_be_turned_off() {
        let (mut socket, _) = media_socket(1 << 16);
        // Linux 4.18 and later: every machine this runs on.
        assert!(socket.gso(), "this kernel knows UDP_SEGMENT");
        socket.set_gso(false);
        assert!(!socket.gso());
        socket.set_gso(true);
        assert!(socket.gso());
    }

    #[test]
    fn only_errors_that_mean_no_gso_turn_it_off() {
        for errno in [
            Errno::EIO,
            Errno::EINVAL,
            Errno::ENOPROTOOPT,
            Errno::EOPNOTSUPP,
        ] {
            assert!(gso_refused(&io::Error::from(errno)), "{errno}");
        }
        // A refused destination or a full buffer says nothing about GSO.
        for errno in [
            Errno::EAGAIN,
            Errno::ENETUNREACH,
            Errno::EACCES,
            Errno::EPERM,
        ] {
            assert!(!gso_refused(&io::Error::from(errno)), "{errno}");
        }
    }

    #[test]
    fn buffers_are_granted_as_asked_or_capped_by_the_kernel_limit() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let asked = 1 << 20;
        let got = size_buffers(&socket, asked).unwrap();
        let cap = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        };
        // Without CAP_NET_ADMIN the grant stops at the sysctl limit.
        assert!(got.receive >= asked.min(cap("rmem_max")), "{got:?}");
        assert!(got.send >= asked.min(cap("wmem_max")), "{got:?}");
    }
}
