//! What one peer can make a listener hold (issue 33): every listener — gRPC over TCP and unix,
//! health, admin — counts connections per peer from accept to close and refuses a peer past its
//! share, so no single peer can take the global slots; a gRPC connection must finish its TLS
//! handshake and send the HTTP/2 preface within the admission deadline before it is given one
//! of the global slots. Refusals are counted every time and logged once per peer and reason per
//! interval, with the count. README "Listeners" states the arithmetic.

use crate::clock::Clock;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Who a connection is counted against: its address (canonical: an IPv4-mapped address is
/// IPv4), or a unix-socket peer's uid. An IPv6 address is one peer, not its /64: Kubernetes
/// nodes give their pods addresses from one /64, and every sidecar there is a caller of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    Ip(IpAddr),
    Uid(u32),
}

impl PeerKey {
    pub fn ip(ip: IpAddr) -> Self {
        Self::Ip(ip.to_canonical())
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Uid(uid) => write!(f, "uid {uid}"),
        }
    }
}

/// Things a peer holds (connections, streams), each counted from start to end: at most
/// `per_peer` for one peer and `total` for all together.
#[derive(Debug)]
pub struct PeerSlots {
    per_peer: usize,
    total: usize,
    held: Mutex<HashMap<PeerKey, usize>>,
    all: std::sync::atomic::AtomicUsize,
}

/// One connection's place in its peer's share; given back when dropped.
#[derive(Debug)]
pub struct PeerSlot {
    slots: Arc<PeerSlots>,
    key: PeerKey,
}

impl PeerSlots {
    pub fn new(per_peer: usize) -> Arc<Self> {
        Self::with_total(per_peer, usize::MAX)
    }

    pub fn with_total(per_peer: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_peer: per_peer.max(1),
            total: total.max(1),
            held: Mutex::new(HashMap::new()),
            all: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A slot for `key`, or `None` when the peer holds its share already (or all are taken).
    pub fn try_take(self: &Arc<Self>, key: PeerKey) -> Option<PeerSlot> {
        // A poisoned map: refuse rather than count nothing.
        let mut held = self.held.lock().ok()?;
        let count = held.entry(key).or_insert(0);
        if *count >= self.per_peer || self.all.load(std::sync::atomic::Ordering::Relaxed) >= self.total {
            if *count == 0 {
                held.remove(&key);
            }
            return None;
        }
        *count += 1;
        self.all.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(PeerSlot { slots: self.clone(), key })
    }

    /// Connections `key` holds now.
    #[cfg(test)]
    pub fn held_by(&self, key: PeerKey) -> usize {
        self.held.lock().map(|h| h.get(&key).copied().unwrap_or(0)).unwrap_or(0)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        // The total first: a poisoned map must not keep the slot from every peer.
        self.slots.all.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut held) = self.slots.held.lock()
            && let Some(count) = held.get_mut(&self.key)
        {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose HTTP/2 preface was already read (to admit it), handed on with the preface
/// in front so the HTTP/2 server reads it as sent.
pub struct Prefaced<S> {
    read: usize,
    pub inner: S,
}

/// Reads the preface from `stream`; an error if it is anything else (not a gRPC client).
pub async fn read_preface<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<Prefaced<S>> {
    let mut head = [0u8; PREFACE.len()];
    stream.read_exact(&mut head).await?;
    if &head != PREFACE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/2 connection preface"));
    }
    Ok(Prefaced { read: 0, inner: stream })
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefaced<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read < PREFACE.len() {
            let n = (PREFACE.len() - this.read).min(buf.remaining());
            buf.put_slice(&PREFACE[this.read..this.read + n]);
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefaced<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Refusal log lines, one per (listener, reason, peer) per interval, carrying how many were
/// refused since the last line; the metric counts every refusal.
pub struct RefusalLog {
    clock: Arc<dyn Clock>,
    interval_ms: i64,
    seen: Mutex<HashMap<(&'static str, PeerKey), Sampled>>,
}

/// When a (reason, peer) pair was last logged (milliseconds) and its refusals since.
type Sampled = (i64, u64);

/// Distinct (reason, peer) pairs remembered at most; past it the map starts over (a line too
/// many, never memory without bound).
const REFUSAL_KEYS: usize = 4096;

impl RefusalLog {
    pub fn new(clock: Arc<dyn Clock>, interval: Duration) -> Self {
        Self { clock, interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX), seen: Mutex::default() }
    }

    /// Whether to log this refusal now, and how many it stands for.
    pub fn sample(&self, what: &'static str, peer: PeerKey) -> Option<u64> {
        let now = self.clock.now_millis();
        let Ok(mut seen) = self.seen.lock() else { return Some(1) };
        if seen.len() >= REFUSAL_KEYS && !seen.contains_key(&(what, peer)) {
            seen.clear();
        }
        let entry = seen.entry((what, peer)).or_insert((i64::MIN, 0));
        entry.1 += 1;
        if now.saturating_sub(entry.0) < self.interval_ms {
            return None;
        }
        let count = entry.1;
        *entry = (now, 0);
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_peer_holds_its_share_and_gets_it_back() {
        let slots = PeerSlots::new(2);
        let a = PeerKey::ip("10.0.0.1".parse().expect("ip"));
        let b = PeerKey::ip("10.0.0.2".parse().expect("ip"));
        let first = slots.try_take(a).expect("first");
        let _second = slots.try_take(a).expect("second");
        assert!(slots.try_take(a).is_none(), "a third connection of one peer is refused");
        assert!(slots.try_take(b).is_some(), "another peer is not");
        drop(first);
        assert_eq!(slots.held_by(a), 1);
        assert!(slots.try_take(a).is_some(), "a closed connection gives its slot back");
        let capped = PeerSlots::with_total(2, 3);
        let held: Vec<_> = [a, a, b].into_iter().map(|k| capped.try_take(k).expect("within")).collect();
        assert!(capped.try_take(PeerKey::Uid(9)).is_none(), "the total holds for every peer");
        drop(held);
        assert!(capped.try_take(PeerKey::Uid(9)).is_some());
        // Pods of one node share a /64: each address is its own peer. A mapped address is its
        // IPv4 address.
        let v6a = PeerKey::ip("2001:db8:1:2::1".parse().expect("ip"));
        let v6b = PeerKey::ip("2001:db8:1:2::9".parse().expect("ip"));
        assert_ne!(v6a, v6b);
        assert_eq!(PeerKey::ip("::ffff:10.0.0.1".parse().expect("ip")), a);
    }

    #[test]
    fn refusals_are_logged_once_per_peer_and_interval_with_their_count() {
        let clock = Arc::new(ManualClock::at(1_000));
        let log = RefusalLog::new(clock.clone(), Duration::from_secs(10));
        let peer = PeerKey::ip("10.0.0.1".parse().expect("ip"));
        assert_eq!(log.sample("connections", peer), Some(1));
        for _ in 0..99 {
            assert_eq!(log.sample("connections", peer), None);
        }
        assert_eq!(log.sample("deadline", peer), Some(1), "another reason has its own line");
        clock.advance(Duration::from_secs(10));
        assert_eq!(log.sample("connections", peer), Some(100), "the next line counts what it stood for");
    }

    #[tokio::test]
    async fn the_preface_is_read_then_handed_on() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, PREFACE).await.expect("write");
        tokio::io::AsyncWriteExt::write_all(&mut client, b"rest").await.expect("write");
        let mut prefaced = read_preface(server).await.expect("preface");
        let mut all = vec![0u8; PREFACE.len() + 4];
        prefaced.read_exact(&mut all).await.expect("read");
        assert_eq!(&all[..PREFACE.len()], PREFACE);
        assert_eq!(&all[PREFACE.len()..], b"rest");
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        assert!(read_preface(server).await.is_err(), "HTTP/1 is not a gRPC caller");
    }
}
