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
//! queue behind others.

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
}

impl MediaSocket {
    pub fn new(socket: UdpSocket) -> Self {
        // Best effort: without stamps only the latency measurement is lost.
        if let Err(err) = setsockopt(&socket, sockopt::ReceiveTimestampns, &true) {
            tracing::debug!(%err, "no kernel receive timestamps");
        }
        MediaSocket {
            socket,
            recv_headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec))),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            buffers: vec![0; BATCH * MAX_DATAGRAM],
            received: Vec::with_capacity(BATCH),
            addresses: Vec::with_capacity(BATCH),
        }
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
            ..
        } = self;
        received.clear();
        socket.try_io(Interest::READABLE, || {
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
                    let arrived = message.cmsgs().ok().and_then(|mut cmsgs| {
                        cmsgs.find_map(|cmsg| match cmsg {
                            ControlMessageOwned::ScmTimestampns(ts) => {
                                let since_epoch = Duration::new(
                                    u64::try_from(ts.tv_sec()).ok()?,
                                    u32::try_from(ts.tv_nsec()).ok()?,
                                );
                                SystemTime::UNIX_EPOCH.checked_add(since_epoch)
                            }
                            _ => None,
                        })
                    });
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

fn to_std(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    if let Some(v6) = address.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    None
}
