//! The bytes of unfinished Check messages, bounded by one budget (issue 33): every request body
//! frame the gRPC server reads is charged to the whole process (`max_buffered_bytes`) and to its
//! peer (`max_buffered_bytes_per_peer`) until the request is decoded or ends; a frame past
//! either budget ends that stream with RESOURCE_EXHAUSTED. So what peers can make the process
//! buffer holds by construction, whatever the stream and connection counts: one peer at most
//! its share, all together at most the total (README "Listeners" has the arithmetic). Health
//! Watch streams, which never end by themselves, are held to a share per peer the same way.

use super::budget::{PeerKey, PeerSlot, PeerSlots};
use bytes::Bytes;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::{Arc, atomic::AtomicUsize, atomic::Ordering};
use std::task::{Context, Poll};
use tonic::transport::server::{TcpConnectInfo, UdsConnectInfo};

pub const BUFFERED_BYTES: &str = "portcullis_grpc_buffered_bytes";
pub const BUFFER_REFUSED_TOTAL: &str = "portcullis_grpc_buffer_refused_total";

/// The process-wide and per-peer budgets of buffered request bytes.
pub struct ByteBudget {
    total_limit: usize,
    per_peer_limit: usize,
    total: AtomicUsize,
    per_peer: Mutex<HashMap<PeerKey, usize>>,
    gauge: metrics::Gauge,
}

impl std::fmt::Debug for ByteBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteBudget").field("total", &self.total).finish_non_exhaustive()
    }
}

impl ByteBudget {
    pub fn new(total_limit: usize, per_peer_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            total_limit,
            per_peer_limit,
            total: AtomicUsize::new(0),
            per_peer: Mutex::default(),
            gauge: metrics::gauge!(BUFFERED_BYTES),
        })
    }

    /// Charges `n` bytes to `peer` and the total, or refuses them (nothing charged).
    fn take(&self, peer: PeerKey, n: usize) -> bool {
        let Ok(mut per_peer) = self.per_peer.lock() else { return false };
        let held = per_peer.get(&peer).copied().unwrap_or(0);
        if held.saturating_add(n) > self.per_peer_limit
            || self.total.load(Ordering::Relaxed).saturating_add(n) > self.total_limit
        {
            return false;
        }
        per_peer.insert(peer, held + n);
        let total = self.total.fetch_add(n, Ordering::Relaxed) + n;
        self.gauge.set(total as f64);
        true
    }

    fn release(&self, peer: PeerKey, n: usize) {
        if n == 0 {
            return;
        }
        if let Ok(mut per_peer) = self.per_peer.lock()
            && let Some(held) = per_peer.get_mut(&peer)
        {
            *held = held.saturating_sub(n);
            if *held == 0 {
                per_peer.remove(&peer);
            }
        }
        let total = self.total.fetch_sub(n, Ordering::Relaxed).saturating_sub(n);
        self.gauge.set(total as f64);
    }

    #[cfg(test)]
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// A request body whose frames are charged to the budget while the request lives.
pub struct ChargedBody {
    inner: tonic::body::Body,
    budget: Arc<ByteBudget>,
    peer: PeerKey,
    held: usize,
}

impl Drop for ChargedBody {
    fn drop(&mut self) {
        self.budget.release(self.peer, self.held);
    }
}

impl http_body::Body for ChargedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            if !this.budget.take(this.peer, data.len()) {
                metrics::counter!(BUFFER_REFUSED_TOTAL).increment(1);
                return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(
                    "buffered request bytes over listen.limits.max_buffered_bytes(_per_peer)",
                ))));
            }
            this.held += data.len();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The peer a request came from, as the connection told tonic.
fn peer_of<B>(request: &http::Request<B>) -> PeerKey {
    if let Some(tcp) = request.extensions().get::<TcpConnectInfo>()
        && let Some(addr) = tcp.remote_addr()
    {
        return PeerKey::ip(addr.ip());
    }
    match request.extensions().get::<UdsConnectInfo>().and_then(|uds| uds.peer_cred) {
        Some(cred) => PeerKey::Uid(cred.uid()),
        None => PeerKey::Uid(u32::MAX),
    }
}

/// The gRPC health Watch method: a stream that never ends by itself.
const WATCH: &str = "/grpc.health.v1.Health/Watch";

/// The tower layer in front of tonic's routes (`Server::builder().layer(...)`): it charges
/// every request body to the byte budget, and holds each peer to its share of open health
/// Watch streams (which no request timeout ends).
#[derive(Clone)]
pub struct BufferBudgetLayer {
    pub bytes: Arc<ByteBudget>,
    pub watches: Arc<PeerSlots>,
    /// Every stream from request to the end of its answer: an answer stalled behind a zero
    /// flow-control window holds its place until the peer reads it or the stream goes.
    pub streams: Arc<PeerSlots>,
}

impl<S> tower_layer::Layer<S> for BufferBudgetLayer {
    type Service = BufferBudget<S>;

    fn layer(&self, inner: S) -> BufferBudget<S> {
        BufferBudget { inner, bytes: self.bytes.clone(), watches: self.watches.clone(), streams: self.streams.clone() }
    }
}

#[derive(Clone)]
pub struct BufferBudget<S> {
    inner: S,
    bytes: Arc<ByteBudget>,
    watches: Arc<PeerSlots>,
    streams: Arc<PeerSlots>,
}

type Response = http::Response<tonic::body::Body>;

/// The inner service's answer, or a refusal made at once.
pub enum Answer<F> {
    Inner { future: Pin<Box<F>>, slots: Option<(PeerSlot, Option<PeerSlot>)> },
    Refused(Option<Response>),
}

impl<F, E> std::future::Future for Answer<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Inner { future, slots } => {
                let response = std::task::ready!(future.as_mut().poll(cx))?;
                // The stream (and a Watch) holds its slots for as long as its answer is sent.
                Poll::Ready(Ok(match slots.take() {
                    Some(slots) => response.map(|inner| tonic::body::Body::new(Held { inner, _slots: slots })),
                    None => response,
                }))
            }
            Answer::Refused(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

/// A response body that keeps its stream's slots until it is dropped.
struct Held {
    inner: tonic::body::Body,
    _slots: (PeerSlot, Option<PeerSlot>),
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for BufferBudget<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let peer = peer_of(&request);
        let refuse = |why: &'static str, message: &'static str| {
            metrics::counter!(super::callers::REFUSED_TOTAL, "why" => why).increment(1);
            Answer::Refused(Some(tonic::Status::resource_exhausted(message).into_http()))
        };
        let Some(stream) = self.streams.try_take(peer) else {
            return refuse("streams", "too many open streams (listen.limits.max_streams_per_peer, max_streams)");
        };
        let watch = if request.uri().path() == WATCH {
            match self.watches.try_take(peer) {
                Some(slot) => Some(slot),
                None => return refuse("watches", "too many health Watch streams from this peer"),
            }
        } else {
            None
        };
        // The call's header list is held until the Check is decoded too (RFC 9113's 32 bytes
        // of overhead an entry, as HPACK counts it).
        let header_bytes: usize = request.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        if !self.bytes.take(peer, header_bytes) {
            metrics::counter!(BUFFER_REFUSED_TOTAL).increment(1);
            return refuse("bytes", "buffered request bytes over listen.limits.max_buffered_bytes(_per_peer)");
        }
        let bytes = self.bytes.clone();
        let request =
            request.map(|inner| tonic::body::Body::new(ChargedBody { inner, budget: bytes, peer, held: header_bytes }));
        Answer::Inner { future: Box::pin(self.inner.call(request)), slots: Some((stream, watch)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(chunks: usize, size: usize) -> tonic::body::Body {
        let frames = (0..chunks)
            .map(move |_| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![0u8; size]))));
        tonic::body::Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn bodies_are_charged_per_peer_and_in_total_until_dropped() {
        let budget = ByteBudget::new(300, 200);
        let (a, b) = (PeerKey::Uid(1), PeerKey::Uid(2));
        let charged = |inner, peer| ChargedBody { inner, budget: budget.clone(), peer, held: 0 };
        // Peer a: 150 bytes fit, 250 do not (its share is 200).
        let mut first = charged(body(3, 50), a);
        while let Some(frame) = first.frame().await {
            frame.expect("within the share");
        }
        assert_eq!(budget.total(), 150);
        let mut second = charged(body(2, 60), a);
        assert!(second.frame().await.expect("frame").is_err(), "a's share is spent");
        // Peer b still gets its bytes, up to the total.
        let mut third = charged(body(3, 50), b);
        let mut got = 0;
        while let Some(frame) = third.frame().await {
            if frame.is_ok() {
                got += 50;
            } else {
                break;
            }
        }
        assert_eq!(got, 150, "b is served up to the total of 300");
        drop((first, second, third));
        assert_eq!(budget.total(), 0, "every byte is given back with its request");
    }
}
