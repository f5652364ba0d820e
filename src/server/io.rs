//! Accepted gRPC connections, wrapped so each answer leaves in one write.
//!
//! h2 writes a DATA payload larger than 256 bytes as its own buffer when the socket takes
//! vectored writes, and buffers nothing more until that payload is flushed: the trailers that
//! end every unary answer then need a second write. An allow with identity headers and
//! metadata is larger than that, so every check cost two `writev` calls (each one, on loopback,
//! also runs the peer's receive path). Reporting the socket as not vectored raises h2's
//! threshold to 1 KiB: the payload is copied into the frame buffer and HEADERS, DATA and
//! trailers go out in one write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A connection that tells h2 to copy answers into one buffer rather than chain them.
#[derive(Debug)]
pub struct OneWritePerAnswer<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for OneWritePerAnswer<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for OneWritePerAnswer<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<S: Connected> Connected for OneWritePerAnswer<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}
