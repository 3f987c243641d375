//! Connections whose writes go out together.
//!
//! h2 writes every DATA frame larger than 256 bytes with a `writev` of its own: it chains the
//! payload behind the frame head instead of copying it, and flushes before it buffers the next
//! frame. A watch event is one such frame on every stream that follows it, so 1,000 streams on 20
//! connections cost 1,000 writes per event, each a trip through loopback TCP on the sending core.
//!
//! A [`Coalesced`] connection copies what it is given into a buffer, and a task of its own writes
//! the buffer once the runtime has run the tasks already queued on its worker
//! ([`tokio::task::yield_now`]): the frames every stream of the connection queued for that event go
//! in one write. A unary answer's headers, message and trailers go in one write too. A connection
//! with nothing else to do waits one trip through an empty run queue.
//!
//! Flushing hands the bytes to that task rather than waiting for the socket: h2 flushes after every
//! such frame, and waiting there would write them one by one again. Write errors are reported by the
//! next write, flush or shutdown; shutting down waits until everything before it is written.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

use bytes::BytesMut;
use etter_tls::Connection;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf},
    net::tcp::OwnedReadHalf,
    sync::Notify,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Past this many bytes not yet taken by the writer, writes wait: a peer that does not read holds
/// back its connection as a full socket buffer would.
const HIGH_WATER: usize = 1 << 20;

/// The writer keeps a buffer up to this size between writes. A connection carrying many streams
/// writes about 2.7 KB per stream per event: 50 streams are 135 KB, past glibc's `mmap` threshold,
/// so a buffer dropped after each write came back as fresh pages, zeroed and faulted in.
const RETAINED: usize = 256 << 10;

/// A connection whose writes are batched by a writer task (see the module docs).
pub struct Coalesced<R> {
    read: R,
    shared: Arc<Shared>,
    info: Option<TcpConnectInfo>,
}

/// The reading side of an accepted connection.
pub enum Reader {
    /// A plaintext connection's, which reads without a lock.
    Tcp(OwnedReadHalf),
    /// A TLS connection's, sharing the TLS session with the writer.
    Tls(ReadHalf<Connection>),
}

impl AsyncRead for Reader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            Self::Tls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl Coalesced<Reader> {
    /// Splits an accepted connection: reads stay here, writes go through the writer task. Over
    /// TLS the writes are batched before they are encrypted, so one write is one TLS record.
    pub fn accepted(connection: Connection) -> Self {
        let info = connection.tcp().connect_info();
        let mut coalesced = match connection {
            Connection::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                Self::new(Reader::Tcp(read), write)
            }
            tls @ Connection::Tls(_) => {
                let (read, write) = tokio::io::split(tls);
                Self::new(Reader::Tls(read), write)
            }
        };
        coalesced.info = Some(info);
        coalesced
    }
}

impl<R> Coalesced<R> {
    /// Reads from `read`; a task spawned on the current runtime writes to `write`.
    pub fn new<W>(read: R, write: W) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared::default());
        tokio::spawn(write_out(Arc::clone(&shared), write));
        Self { read, shared, info: None }
    }

    fn accept(&self, cx: &Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        state.check()?;
        if state.closing {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the connection is shutting down")));
        }
        if state.pending.len() >= HIGH_WATER {
            state.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let was_empty = state.pending.is_empty();
        let mut written = 0;
        for buf in bufs {
            state.pending.extend_from_slice(buf);
            written += buf.len();
        }
        drop(state);
        if was_empty && written > 0 {
            self.shared.wake_writer.notify_one();
        }
        Poll::Ready(Ok(written))
    }
}

impl Connected for Coalesced<Reader> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone().unwrap_or(TcpConnectInfo { local_addr: None, remote_addr: None })
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Coalesced<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for Coalesced<R> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.accept(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.accept(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shared.lock().check())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        state.check()?;
        if state.closed {
            return Poll::Ready(Ok(()));
        }
        state.closing = true;
        state.waiting = Some(cx.waker().clone());
        drop(state);
        self.shared.wake_writer.notify_one();
        Poll::Pending
    }
}

impl<R> Drop for Coalesced<R> {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake_writer.notify_one();
        // What the socket takes without waiting still goes; a peer that stopped reading does not
        // keep the writer (and the socket) alive.
        self.shared.dropped.notify_one();
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake_writer: Notify,
    dropped: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    /// Written by the connection, not yet taken by the writer.
    pending: BytesMut,
    /// The connection asked to shut down, or was dropped.
    closing: bool,
    /// Everything was written and the write side shut down.
    closed: bool,
    /// Why the writer stopped.
    failed: Option<(io::ErrorKind, String)>,
    /// The connection, waiting for room or for its shutdown.
    waiting: Option<Waker>,
}

impl State {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    fn wake_connection(&mut self) {
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
    }
}

async fn write_out<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut write: W) {
    let mut out = BytesMut::new();
    loop {
        shared.wake_writer.notified().await;
        // Let the tasks already queued (the other streams of this event) add their frames first.
        tokio::task::yield_now().await;
        loop {
            let closing = {
                let mut state = shared.lock();
                std::mem::swap(&mut state.pending, &mut out);
                state.wake_connection();
                state.closing
            };
            if out.is_empty() {
                if !closing {
                    break;
                }
                let shut = write.shutdown().await;
                let mut state = shared.lock();
                match shut {
                    Ok(()) => state.closed = true,
                    Err(error) => state.failed = Some((error.kind(), error.to_string())),
                }
                state.wake_connection();
                return;
            }
            let written = tokio::select! {
                biased;
                written = write.write_all(&out) => written,
                () = shared.dropped.notified() => return,
            };
            if let Err(error) = written {
                let mut state = shared.lock();
                state.failed = Some((error.kind(), error.to_string()));
                state.wake_connection();
                return;
            }
            if out.capacity() > RETAINED {
                // A burst's buffer is not kept by a connection that goes quiet.
                out = BytesMut::new();
            } else {
                out.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, DuplexStream, ReadHalf, WriteHalf};

    use super::*;

    /// Counts the writes that reach the peer.
    struct Counting {
        inner: WriteHalf<DuplexStream>,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.inner).poll_write(cx, buf);
            if matches!(written, Poll::Ready(Ok(_))) {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn pair(capacity: usize) -> (Coalesced<ReadHalf<DuplexStream>>, DuplexStream, Arc<AtomicUsize>) {
        let (ours, peer) = tokio::io::duplex(capacity);
        let (read, write) = tokio::io::split(ours);
        let writes = Arc::new(AtomicUsize::new(0));
        let coalesced = Coalesced::new(read, Counting { inner: write, writes: Arc::clone(&writes) });
        (coalesced, peer, writes)
    }

    fn frame(index: usize) -> Vec<u8> {
        (0..2_700).map(|byte| ((index * 31 + byte) % 251) as u8).collect()
    }

    #[tokio::test]
    async fn frames_flushed_one_by_one_in_one_turn_reach_the_peer_in_one_write() -> anyhow::Result<()> {
        let (mut connection, mut peer, writes) = pair(1 << 20);
        // As h2 does: each frame written, then flushed, without yielding in between.
        for index in 0..50 {
            connection.write_all(&frame(index)).await?;
            connection.flush().await?;
        }
        let mut received = vec![0; 50 * 2_700];
        peer.read_exact(&mut received).await?;
        let expected: Vec<u8> = (0..50).flat_map(frame).collect();
        assert!(received == expected, "the peer got the frames out of order or changed");
        assert_eq!(writes.load(Ordering::Relaxed), 1, "50 frames of one turn take one write");

        // A later turn's frame goes on its own.
        connection.write_all(b"later").await?;
        connection.flush().await?;
        let mut later = [0; 5];
        peer.read_exact(&mut later).await?;
        assert_eq!(&later, b"later");
        assert_eq!(writes.load(Ordering::Relaxed), 2);
        Ok(())
    }

    #[tokio::test]
    async fn frames_of_tasks_already_queued_when_the_first_one_is_written_share_its_write() -> anyhow::Result<()> {
        let (connection, mut peer, writes) = pair(1 << 20);
        let connection = Arc::new(tokio::sync::Mutex::new(connection));
        // The first stream's frame wakes the writer...
        {
            let mut connection = connection.lock().await;
            connection.write_all(&frame(0)).await?;
            connection.flush().await?;
        }
        // ...while 19 more streams are already queued to run, each with its frame.
        let streams: Vec<_> = (1..20)
            .map(|index| {
                let connection = Arc::clone(&connection);
                tokio::spawn(async move {
                    let mut connection = connection.lock().await;
                    connection.write_all(&frame(index)).await?;
                    connection.flush().await
                })
            })
            .collect();
        let mut received = vec![0; 20 * 2_700];
        peer.read_exact(&mut received).await?;
        for stream in streams {
            stream.await??;
        }
        let expected: Vec<u8> = (0..20).flat_map(frame).collect();
        assert!(received == expected, "the peer got the frames out of order or changed");
        assert_eq!(writes.load(Ordering::Relaxed), 1, "the writer let the queued streams add their frames first");
        Ok(())
    }

    #[tokio::test]
    async fn shutting_down_writes_everything_first_and_the_peer_then_sees_the_end() -> anyhow::Result<()> {
        let (mut connection, mut peer, _writes) = pair(1_024);
        // More than the pipe holds: the writer has to wait for the peer, and the shutdown for it.
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            peer.read_to_end(&mut received).await.map(|_| received)
        });
        let sent: Vec<u8> = (0..20).flat_map(frame).collect();
        connection.write_all(&sent).await?;
        connection.shutdown().await?;
        let received = reader.await??;
        assert_eq!(received.len(), sent.len());
        assert!(received == sent);
        assert!(connection.write_all(b"after").await.is_err(), "a write after the shutdown is refused");
        Ok(())
    }

    #[tokio::test]
    async fn a_write_that_failed_is_reported_to_the_connection() -> anyhow::Result<()> {
        let (mut connection, peer, _writes) = pair(1_024);
        drop(peer);
        connection.write_all(b"nobody reads this").await?;
        // The writer finds the peer gone; the connection hears of it at its next call.
        let mut reported = None;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if let Err(error) = connection.flush().await {
                reported = Some(error.kind());
                break;
            }
        }
        assert_eq!(reported, Some(io::ErrorKind::BrokenPipe));
        Ok(())
    }

    #[tokio::test]
    async fn the_connection_reads_what_the_peer_sends() -> anyhow::Result<()> {
        let (mut connection, mut peer, _writes) = pair(1_024);
        peer.write_all(b"request").await?;
        let mut request = [0; 7];
        connection.read_exact(&mut request).await?;
        assert_eq!(&request, b"request");
        Ok(())
    }
}
