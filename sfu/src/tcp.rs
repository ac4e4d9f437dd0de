//! ICE over TCP (RFC 6544) for clients that cannot use UDP: each worker also
//! listens on TCP at its UDP port number, and every session offers a passive
//! TCP host candidate there. On a connection each packet is preceded by its
//! length, two bytes big-endian (RFC 4571); a frame is handed to the core as
//! one datagram from the connection's remote address, and what the core sends
//! to that address over TCP goes back as a frame on that connection.
//!
//! The connections run as tasks on the worker's current-thread runtime: one
//! accepts, one per connection reads and writes. They talk to the worker only
//! through channels, so the worker never waits on a socket:
//!
//! - incoming frames arrive on one bounded channel ([`TcpInput`]); a reader
//!   whose frames the worker has not taken yet waits, which TCP's own flow
//!   control passes back to the client;
//! - outgoing frames go into a bounded queue per connection; when a slow
//!   reader has let it fill, frames are dropped and counted (media over TCP is
//!   late anyway, and NACK/RTX repairs what matters), never waited for.
//!
//! A connection is closed, and counted, on a malformed frame (a length of 0
//! or over [`MAX_FRAME`], or bytes that are not STUN, DTLS, RTP or RTCP; the
//! first frame must be STUN), when no session has taken one of its frames
//! within [`HANDSHAKE_TIMEOUT`] of connecting, and when no session has taken
//! one for [`IDLE_TIMEOUT`]. At most [`MAX_CONNECTIONS`] are open per worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Largest frame taken from a client, as for a UDP datagram
/// ([`crate::udp::MAX_DATAGRAM`]); a longer length closes the connection.
pub const MAX_FRAME: usize = crate::udp::MAX_DATAGRAM;
/// Open TCP connections per worker; more are closed as soon as accepted.
/// Each participant needs two (publisher and subscriber session).
pub const MAX_CONNECTIONS: usize = 512;
/// How long a new connection has to get a frame taken by a session (its first
/// STUN binding request) before it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may go without a frame a session takes. ICE consent
/// checks (RFC 7675) arrive every few seconds on a live connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames queued towards one connection before new ones are dropped: about
/// 190 KB of media, so [`MAX_CONNECTIONS`] slow readers hold at most ~100 MB.
const QUEUE_FRAMES: usize = 128;
/// Incoming frames (of all connections) waiting for the worker.
const INPUT_QUEUE: usize = 1024;
/// Bytes gathered into one write when several frames are queued.
const WRITE_CHUNK: usize = 16 * 1024;

/// What the connection tasks tell the worker, in order per connection.
#[derive(Debug)]
pub enum TcpInput {
    /// A connection was accepted; frames for `remote` go to `writer`.
    Opened {
        id: u64,
        remote: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// One frame, without its length prefix.
    Frame {
        id: u64,
        remote: SocketAddr,
        bytes: Vec<u8>,
    },
    /// The connection ended (its task has stopped or is stopping).
    Closed {
        id: u64,
        remote: SocketAddr,
        cause: CloseCause,
    },
    /// A connection was closed at once: [`MAX_CONNECTIONS`] were open.
    Refused,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client closed it, or the socket failed.
    Peer,
    /// A length of 0 or over [`MAX_FRAME`], or a frame no WebRTC packet.
    BadFraming,
    /// The worker closed it (timeout, or replaced).
    Worker,
}

/// Counters of the TCP side, pushed to the metrics with the core's.
#[derive(Debug, Default, Clone)]
pub struct TcpStats {
    pub accepted: u64,
    /// Closed at once because [`MAX_CONNECTIONS`] were open.
    pub refused: u64,
    /// Closed for a malformed frame.
    pub bad_framing: u64,
    /// Closed because no session took their frames in time.
    pub timed_out: u64,
    /// Frames for a connection that is gone or whose queue was full.
    pub frames_dropped: u64,
}

struct Connection {
    id: u64,
    writer: mpsc::Sender<Vec<u8>>,
    /// Closed at this time unless a session takes one of its frames before.
    deadline: Instant,
}

/// The worker's side of ICE over TCP: the open connections by remote address.
pub struct TcpMedia {
    inputs: mpsc::Receiver<TcpInput>,
    connections: HashMap<SocketAddr, Connection>,
    pub stats: TcpStats,
}

impl TcpMedia {
    /// Start accepting on `listener`. Must run inside the worker's runtime:
    /// the tasks are spawned on it and stop when it is dropped.
    pub fn start(listener: std::net::TcpListener) -> std::io::Result<TcpMedia> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let (inputs_tx, inputs) = mpsc::channel(INPUT_QUEUE);
        tokio::spawn(accept_loop(listener, inputs_tx));
        Ok(TcpMedia {
            inputs,
            connections: HashMap::new(),
            stats: TcpStats::default(),
        })
    }

    /// Wait for the next input; `None` once the accept task has stopped and
    /// every connection is gone.
    pub async fn recv(&mut self) -> Option<TcpInput> {
        self.inputs.recv().await
    }

    /// The next input if one is queued.
    pub fn try_recv(&mut self) -> Option<TcpInput> {
        // Empty or disconnected alike: nothing more to take now.
        self.inputs.try_recv().ok()
    }

    /// Apply one input at `now`. A frame goes to `feed` (the core), which
    /// says whether a session took it; that keeps the connection open.
    pub fn handle_input(
        &mut self,
        input: TcpInput,
        now: Instant,
        mut feed: impl FnMut(SocketAddr, &[u8]) -> bool,
    ) {
        match input {
            TcpInput::Opened { id, remote, writer } => {
                self.stats.accepted += 1;
                // Replacing an entry drops its writer, which ends that task.
                self.connections.insert(
                    remote,
                    Connection {
                        id,
                        writer,
                        deadline: now + HANDSHAKE_TIMEOUT,
                    },
                );
            }
            TcpInput::Frame { id, remote, bytes } => {
                // Frames of a connection already closed here are not fed.
                let Some(connection) = self.connections.get_mut(&remote) else {
                    return;
                };
                if connection.id == id && feed(remote, &bytes) {
                    connection.deadline = now + IDLE_TIMEOUT;
                }
            }
            TcpInput::Closed { id, remote, cause } => {
                if cause == CloseCause::BadFraming {
                    self.stats.bad_framing += 1;
                    tracing::debug!(%remote, "TCP media connection closed for bad framing");
                }
                if self.connections.get(&remote).is_some_and(|c| c.id == id) {
                    self.connections.remove(&remote);
                }
            }
            TcpInput::Refused => self.stats.refused += 1,
        }
    }

    /// Queue `contents` as a frame to the connection from `destination`,
    /// without waiting: dropped (and counted) if there is none, if its queue
    /// is full, or if it is too long to frame.
    pub fn send(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        let queued = match self.connections.get(&destination) {
            Some(connection) if contents.len() <= usize::from(u16::MAX) => {
                match connection.writer.try_send(contents) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_) | TrySendError::Closed(_)) => false,
                }
            }
            _ => false,
        };
        if !queued {
            self.stats.frames_dropped += 1;
        }
    }

    /// Close the connections whose deadline has passed.
    pub fn close_expired(&mut self, now: Instant) {
        let before = self.connections.len();
        self.connections.retain(|_, c| c.deadline > now);
        self.stats.timed_out += (before - self.connections.len()) as u64;
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.connections.len()
    }
}

async fn accept_loop(listener: TcpListener, inputs: mpsc::Sender<TcpInput>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut next_id = 0u64;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off, do not spin.
                tracing::warn!(%err, "TCP media accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            if inputs.send(TcpInput::Refused).await.is_err() {
                return;
            }
            continue;
        };
        next_id += 1;
        let (writer, outgoing) = mpsc::channel(QUEUE_FRAMES);
        let opened = TcpInput::Opened {
            id: next_id,
            remote,
            writer,
        };
        // Sent before the task starts, so the worker knows the connection
        // before any of its frames.
        if inputs.send(opened).await.is_err() {
            return; // the worker has stopped
        }
        tokio::spawn(serve(
            stream,
            next_id,
            remote,
            inputs.clone(),
            outgoing,
            permit,
        ));
    }
}

/// One connection: read frames to the worker and write its queue back, until
/// either side ends. Holding `_permit` counts it against [`MAX_CONNECTIONS`].
async fn serve(
    stream: TcpStream,
    id: u64,
    remote: SocketAddr,
    inputs: mpsc::Sender<TcpInput>,
    outgoing: mpsc::Receiver<Vec<u8>>,
    _permit: OwnedSemaphorePermit,
) {
    // Media is latency-bound: do not hold small frames back (Nagle).
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let cause = tokio::select! {
        cause = read_frames(read, id, remote, &inputs) => cause,
        cause = write_frames(write, outgoing) => cause,
    };
    let _ = inputs.send(TcpInput::Closed { id, remote, cause }).await;
}

async fn read_frames(
    read: OwnedReadHalf,
    id: u64,
    remote: SocketAddr,
    inputs: &mpsc::Sender<TcpInput>,
) -> CloseCause {
    let mut read = BufReader::with_capacity(8 * 1024, read);
    let mut first = true;
    loop {
        let mut length = [0u8; 2];
        if read.read_exact(&mut length).await.is_err() {
            return CloseCause::Peer;
        }
        let length = usize::from(u16::from_be_bytes(length));
        if length == 0 || length > MAX_FRAME {
            return CloseCause::BadFraming;
        }
        let mut bytes = vec![0u8; length];
        if read.read_exact(&mut bytes).await.is_err() {
            return CloseCause::Peer;
        }
        if !plausible_frame(&bytes, first) {
            return CloseCause::BadFraming;
        }
        first = false;
        if inputs
            .send(TcpInput::Frame { id, remote, bytes })
            .await
            .is_err()
        {
            return CloseCause::Worker;
        }
    }
}

async fn write_frames(
    mut write: OwnedWriteHalf,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
) -> CloseCause {
    let mut buffer = Vec::with_capacity(WRITE_CHUNK + MAX_FRAME);
    while let Some(frame) = outgoing.recv().await {
        buffer.clear();
        push_frame(&mut buffer, &frame);
        // Whatever else is queued goes in the same write.
        while buffer.len() < WRITE_CHUNK {
            match outgoing.try_recv() {
                Ok(frame) => push_frame(&mut buffer, &frame),
                Err(_) => break,
            }
        }
        if write.write_all(&buffer).await.is_err() {
            return CloseCause::Peer;
        }
    }
    // The worker dropped the writer: it closed this connection.
    CloseCause::Worker
}

/// Append `frame` with its RFC 4571 length prefix. The caller has checked
/// that it fits in 16 bits ([`TcpMedia::send`]).
fn push_frame(buffer: &mut Vec<u8>, frame: &[u8]) {
    let length = u16::try_from(frame.len()).unwrap_or(u16::MAX);
    buffer.extend_from_slice(&length.to_be_bytes());
    buffer.extend_from_slice(&frame[..usize::from(length)]);
}

/// Could this frame be a WebRTC packet? By its first byte (RFC 7983): STUN
/// 0–3, DTLS 20–63, RTP/RTCP 128–191. The first frame on a connection must
/// be a STUN message (with the magic cookie): ICE checks come first.
pub fn plausible_frame(frame: &[u8], first: bool) -> bool {
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    let Some(&byte) = frame.first() else {
        return false;
    };
    if first {
        return byte <= 3 && frame.len() >= 20 && frame[4..8] == MAGIC_COOKIE;
    }
    matches!(byte, 0..=3 | 20..=63 | 128..=191)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_header() -> Vec<u8> {
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        stun.extend_from_slice(&[0; 12]);
        stun
    }

    #[test]
    fn the_first_frame_must_be_stun_and_later_ones_webrtc() {
        assert!(plausible_frame(&stun_header(), true));
        assert!(!plausible_frame(&[0x80; 100], true), "RTP before ICE");
        assert!(!plausible_frame(&[0x00; 10], true), "too short for STUN");
        assert!(plausible_frame(&[0x80; 100], false));
        assert!(plausible_frame(&[0x16; 100], false), "DTLS");
        assert!(!plausible_frame(&[0x47; 100], false), "'G' of an HTTP GET");
        assert!(!plausible_frame(&[], false));
    }

    #[test]
    fn a_frame_carries_its_length_big_endian() {
        let mut buffer = Vec::new();
        push_frame(&mut buffer, &[7; 300]);
        assert_eq!(&buffer[..2], &[0x01, 0x2C]);
        assert_eq!(buffer.len(), 302);
    }

    #[test]
    fn frames_to_an_unknown_or_full_connection_are_dropped_and_counted() {
        let mut tcp = TcpMedia {
            inputs: mpsc::channel(1).1,
            connections: HashMap::new(),
            stats: TcpStats::default(),
        };
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        tcp.send(remote, vec![1]);
        assert_eq!(tcp.stats.frames_dropped, 1);

        let now = Instant::now();
        let (writer, mut queue) = mpsc::channel(QUEUE_FRAMES);
        tcp.handle_input(
            TcpInput::Opened {
                id: 1,
                remote,
                writer,
            },
            now,
            |_, _| false,
        );
        for _ in 0..QUEUE_FRAMES + 3 {
            tcp.send(remote, vec![0x80; 10]);
        }
        assert_eq!(tcp.stats.frames_dropped, 4, "three over the queue's bound");
        assert!(queue.try_recv().is_ok());
    }

    #[test]
    fn a_connection_no_session_takes_is_closed_after_the_handshake_timeout() {
        let mut tcp = TcpMedia {
            inputs: mpsc::channel(1).1,
            connections: HashMap::new(),
            stats: TcpStats::default(),
        };
        let now = Instant::now();
        let quiet: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let live: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        for (id, remote) in [(1, quiet), (2, live)] {
            let (writer, _) = mpsc::channel(1);
            tcp.handle_input(TcpInput::Opened { id, remote, writer }, now, |_, _| false);
        }
        let frame = |id, remote| TcpInput::Frame {
            id,
            remote,
            bytes: stun_header(),
        };
        tcp.handle_input(frame(1, quiet), now, |_, _| false);
        tcp.handle_input(frame(2, live), now, |_, _| true);
        tcp.close_expired(now + HANDSHAKE_TIMEOUT);
        assert_eq!(tcp.open(), 1);
        assert_eq!(tcp.stats.timed_out, 1);
        tcp.close_expired(now + IDLE_TIMEOUT);
        assert_eq!(tcp.open(), 0, "idle once no session takes its frames");
    }
}
