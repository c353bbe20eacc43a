//! Answers owed to the client, in the order of its requests: small streamed puts are
//! committed while the connection reads on (engine/put_small.rs), so their answers wait
//! here, behind the ones owed before them. Each leaves as soon as it and those before it are
//! known, while the connection goes on reading ([`Owed::answer_or_recv`]); all of them before
//! a request of another kind, or when the bounds below are reached ([`Owed::settle`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use ferry_proto::message::Message;
use ferry_store::Entry;
use tokio::io::{AsyncRead, AsyncWrite};

use super::data::{refusal, to_wire};
use crate::Error;
use crate::engine::Refusal;
use crate::engine::put_small::InFlight;
use crate::wire::{Incoming, Wire};

/// Most small puts whose commit a connection waits for at once (the client's window).
const MAX_PUTS: u64 = crate::WINDOW as u64;
/// Most content bytes those puts hold in memory.
const MAX_BYTES: u64 = 16 << 20;

type Answer<'a> = Pin<Box<dyn Future<Output = Result<Entry, Refusal>> + Send + 'a>>;

enum Owe<'a> {
    /// An answer ready to send.
    Now(Message),
    /// A put's answer, once its commit ends; the content's size.
    Later(Answer<'a>, u64),
}

/// The answers a connection owes, oldest first.
#[derive(Default)]
pub(crate) struct Owed<'a> {
    queue: VecDeque<Owe<'a>>,
    in_flight: InFlight,
}

impl<'a> Owed<'a> {
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// What the puts owed an answer will store.
    pub(crate) fn in_flight(&self) -> InFlight {
        self.in_flight
    }

    /// Whether one more put of `size` bytes may wait here (else settle first).
    pub(crate) fn has_room(&self, size: u64) -> bool {
        self.in_flight.versions < MAX_PUTS && self.in_flight.bytes.saturating_add(size) <= MAX_BYTES
    }

    pub(crate) fn now(&mut self, msg: Message) {
        self.queue.push_back(Owe::Now(msg));
    }

    pub(crate) fn later(
        &mut self,
        answer: impl Future<Output = Result<Entry, Refusal>> + Send + 'a,
        size: u64,
    ) {
        self.in_flight.bytes = self.in_flight.bytes.saturating_add(size);
        self.in_flight.versions += 1;
        self.queue.push_back(Owe::Later(Box::pin(answer), size));
    }

    /// Sends every owed answer, in order, waiting for the commits they need.
    pub(crate) async fn settle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
    ) -> Result<(), Error> {
        if self.queue.is_empty() {
            return Ok(());
        }
        // Bounded by the queue's length (at most MAX_PUTS puts and their put_ready).
        while let Some(owe) = self.queue.pop_front() {
            let msg = match owe {
                Owe::Now(msg) => msg,
                Owe::Later(answer, size) => self.answered(answer.await, size),
            };
            wire.queue(&msg).await?;
        }
        wire.flush().await
    }

    /// Waits for whichever comes first: the client's next frame (returned), or the end of
    /// the oldest commit owed (its answer, and every one ready behind it, then go out in
    /// order, and `None` is returned). So the connection reads on while the client sends,
    /// the commits are fed as the requests arrive, and each answer leaves as soon as it and
    /// those before it are known.
    pub(crate) async fn answer_or_recv<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
    ) -> Result<Option<Incoming>, Error> {
        self.queue_ready(wire).await?;
        let Some(Owe::Later(answer, _)) = self.queue.front_mut() else {
            return Ok(None);
        };
        match wire.recv_or(answer).await? {
            Ok(incoming) => Ok(Some(incoming)),
            Err(out) => {
                if let Some(Owe::Later(_, size)) = self.queue.pop_front() {
                    let msg = self.answered(out, size);
                    wire.queue(&msg).await?;
                }
                self.queue_ready(wire).await?;
                Ok(None)
            }
        }
    }

    /// Gathers, in order, the answers owed that are known now: up to the first commit that
    /// has not ended.
    async fn queue_ready<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
    ) -> Result<(), Error> {
        // Bounded by the queue's length.
        while let Some(msg) = self.pop_ready() {
            wire.queue(&msg).await?;
        }
        Ok(())
    }

    /// The oldest answer owed, if it is known now.
    fn pop_ready(&mut self) -> Option<Message> {
        if let Owe::Later(answer, size) = self.queue.front_mut()? {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let std::task::Poll::Ready(out) = answer.as_mut().poll(&mut cx) else {
                return None;
            };
            let size = *size;
            self.queue.pop_front();
            return Some(self.answered(out, size));
        }
        match self.queue.pop_front()? {
            Owe::Now(msg) => Some(msg),
            Owe::Later(..) => None,
        }
    }

    /// A commit's answer, no longer in flight.
    fn answered(&mut self, out: Result<Entry, Refusal>, size: u64) -> Message {
        self.in_flight.bytes = self.in_flight.bytes.saturating_sub(size);
        self.in_flight.versions = self.in_flight.versions.saturating_sub(1);
        match out {
            Ok(entry) => Message::PutOk(to_wire(entry)),
            Err(r) => refusal(r),
        }
    }
}
