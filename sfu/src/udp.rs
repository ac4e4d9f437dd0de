//! The media socket, read and written in batches: one `recvmmsg` takes every
//! datagram already queued (up to [`BATCH`]), one `sendmmsg` sends up to
//! [`BATCH`] datagrams to as many destinations. A fan-out sends each packet to
//! a different subscriber, so GSO (one destination per call) would not pay;
//! batching saves the per-call cost of entering the kernel and looking up the
//! socket, which at tens of thousands of packets a second is worth having.
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

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt,
    sockopt,
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
        MediaSocket {
            socket,
            recv_headers: recv_headers(),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            buffers: vec![0; BATCH * MAX_DATAGRAM],
            received: Vec::with_capacity(BATCH),
            addresses: Vec::with_capacity(BATCH),
            overflow_drops: 0,
        }
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

    /// Send up to [`BATCH`] of `datagrams` in one call without waiting; how
    /// many went. `WouldBlock` when the socket buffer is full. An error that
    /// concerns the first datagram alone (a destination the kernel refuses) is
    /// returned as is: the caller drops that datagram and carries on.
    pub fn try_send_batch<'d>(
        &mut self,
        datagrams: impl ExactSizeIterator<Item = (SocketAddr, &'d [u8])> + Clone,
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
