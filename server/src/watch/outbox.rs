//! A watch driven by the stream that carries it.
//!
//! A watch is a loop that reads the store and sends messages. Run as a task of its own feeding a
//! channel, every message costs a wake-up of that task and a hand-over through the channel, and the
//! stream's own task (hyper's, which encodes and queues the message) is woken in turn. Here the
//! loop is a future the stream polls itself: [`drive`] returns a stream that runs the loop until
//! it has queued a message, and hands the queued messages out first. Nothing runs once the client
//! is gone: the stream, and the loop with it, is dropped.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use futures::Stream;
use tonic::Status;

use super::wire::Frame;
use super::wire::FrameStream;

type Item = Result<Frame, Status>;

/// Where a watch loop queues its messages, for the stream that drives it.
pub struct Outbox {
    queue: Arc<Mutex<VecDeque<Item>>>,
    capacity: usize,
}

impl Outbox {
    /// Queues `item`; waits while `capacity` messages are queued (the client reads slower than
    /// the watch finds news). The stream polls the loop again once it has handed them out. There
    /// is no "client gone" answer: then the stream, and the loop with it, is dropped.
    pub async fn send(&self, item: Item) {
        let mut item = Some(item);
        std::future::poll_fn(|_| {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.len() >= self.capacity {
                return Poll::Pending;
            }
            if let Some(item) = item.take() {
                queue.push_back(item);
            }
            Poll::Ready(())
        })
        .await;
    }
}

/// A stream of what `watch` sends to its outbox, `watch` polled by the stream itself.
pub fn drive<F>(capacity: usize, watch: impl FnOnce(Outbox) -> F) -> FrameStream
where
    F: Future<Output = ()> + Send + 'static,
{
    let outbox = Outbox { queue: Arc::default(), capacity: capacity.max(1) };
    let queue = Arc::clone(&outbox.queue);
    Box::pin(Driven { queue, watch: Some(Box::pin(watch(outbox))) })
}

struct Driven {
    queue: Arc<Mutex<VecDeque<Item>>>,
    /// The loop, until it ends.
    watch: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Driven {
    fn next_queued(&self) -> Option<Item> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front()
    }
}

impl Stream for Driven {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if let Some(item) = self.next_queued() {
            return Poll::Ready(Some(item));
        }
        let Some(watch) = self.watch.as_mut() else {
            return Poll::Ready(None);
        };
        // The queue is empty: a loop waiting for room can go on.
        let ended = watch.as_mut().poll(cx).is_ready();
        if ended {
            self.watch = None;
        }
        match self.next_queued() {
            Some(item) => Poll::Ready(Some(item)),
            None if ended => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::StreamExt as _;

    use super::*;

    fn message(n: usize) -> Item {
        Err(Status::not_found(n.to_string()))
    }

    fn number(item: Option<Item>) -> Option<String> {
        item.and_then(|item| item.err()).map(|status| status.message().to_owned())
    }

    #[tokio::test]
    async fn the_stream_hands_out_what_the_loop_sent_in_order_then_ends_with_it() {
        let stream = drive(2, |outbox| async move {
            for n in 0..5 {
                outbox.send(message(n)).await;
            }
        });
        let received: Vec<_> = stream.map(|item| number(Some(item))).collect().await;
        let expected: Vec<_> = (0..5).map(|n| Some(n.to_string())).collect();
        assert_eq!(received, expected);
    }

    #[tokio::test]
    async fn a_loop_waits_while_its_outbox_is_full_and_goes_on_once_it_is_read() {
        let sent = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&sent);
        let mut stream = drive(2, |outbox| async move {
            for n in 0..10 {
                outbox.send(message(n)).await;
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(number(stream.next().await), Some("0".to_owned()));
        // The first poll ran the loop until its outbox was full: two queued, one of them handed out.
        assert_eq!(sent.load(Ordering::Relaxed), 2);
        assert_eq!(number(stream.next().await), Some("1".to_owned()));
        assert_eq!(sent.load(Ordering::Relaxed), 2, "nothing runs while messages wait to be read");
        assert_eq!(number(stream.next().await), Some("2".to_owned()));
        assert_eq!(sent.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_loop_waiting_on_something_else_wakes_the_stream() {
        let (tx, rx) = tokio::sync::oneshot::channel::<usize>();
        let mut stream = drive(4, |outbox| async move {
            if let Ok(n) = rx.await {
                outbox.send(message(n)).await;
            }
        });
        let reader = tokio::spawn(async move { number(stream.next().await) });
        tokio::task::yield_now().await;
        let _ = tx.send(7);
        assert_eq!(reader.await.ok().flatten(), Some("7".to_owned()));
    }

    #[tokio::test]
    async fn dropping_the_stream_drops_the_loop() {
        struct Dropped(Arc<AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(Arc::clone(&dropped));
        let mut stream = drive(1, |outbox| async move {
            let _guard = guard;
            outbox.send(message(0)).await;
            std::future::pending::<()>().await;
        });
        assert_eq!(number(stream.next().await), Some("0".to_owned()));
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        drop(stream);
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
    }
}
