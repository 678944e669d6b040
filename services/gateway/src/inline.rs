//! Polling a future so that the wakes it raises inside its own poll turn that poll again instead of
//! rescheduling its task.
//!
//! hyper signals between the halves of a connection through channels: a server connection hands the
//! request body to the handler it is polling, a client connection and its request and response body
//! tell each other a request is queued, a body wants more, a frame was read. When one task polls both
//! halves, each such signal wakes that task while it is running, and tokio answers a task that woke
//! itself by putting it at the back of its run queue and waking an idle worker to steal it — a futex
//! wake-up of a worker that finds nothing (`strace`, bench/results/gateway-history.md), for a poll
//! that was about to happen anyway. [`Inline`] records wakes raised during the task's own poll and
//! answers them with one more turn of that poll; any other wake (a socket became readable, another
//! task sent something) goes to the task.
use std::{
    future::{Future, poll_fn},
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering::SeqCst},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures::task::AtomicWaker;

/// How often one poll goes round again for wakes raised inside it before it yields to the scheduler.
const MAX_INLINE_TURNS: usize = 8;

/// Not inside a poll: a wake goes to the task.
const IDLE: u8 = 0;
/// Inside a poll, not woken yet.
const POLLING: u8 = 1;
/// Inside a poll that was woken: the poller turns again.
const WOKEN: u8 = 2;

/// One state word, changed only by atomic read-modify-writes: a wake either marks the running poll
/// (which then sees it when it ends its turn) or finds no poll running and wakes the task — never
/// neither. (With two flags, a wake from another thread could read "polling", the poll end and read
/// "not woken", and only then the wake record itself: lost, and the connection hung until something
/// else woke it — the 1-in-1,000 hang of issue #19.)
struct InlineWaker {
    task: AtomicWaker,
    state: AtomicU8,
}

impl Wake for InlineWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self.state.compare_exchange(POLLING, WOKEN, SeqCst, SeqCst) {
            // Marked: the poll turns again. Already marked: nothing to add.
            Ok(_) | Err(WOKEN) => {}
            _ => self.task.wake(),
        }
    }
}

/// An [`InlineWaker`] and the `Waker` made of it, one per thing polled inline (an upstream
/// connection, a served connection). Cloned (two reference counts) by a poll that may drop the
/// thing it belongs to.
#[derive(Clone)]
pub(crate) struct Inline {
    state: Arc<InlineWaker>,
    waker: Waker,
}

impl Inline {
    pub(crate) fn new() -> Inline {
        let state = Arc::new(InlineWaker {
            task: AtomicWaker::new(),
            state: AtomicU8::new(IDLE),
        });
        Inline {
            waker: Waker::from(Arc::clone(&state)),
            state,
        }
    }

    /// Runs `f` on behalf of the task of `cx`, turning again while `f` itself raised a wake.
    pub(crate) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let w = &self.state;
        w.task.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        for _ in 0..MAX_INLINE_TURNS {
            w.state.store(POLLING, SeqCst);
            let out = f(&mut inner);
            // One swap ends the turn and reads whether it was woken; a wake after it reaches the
            // task through `task`.
            let woken = w.state.swap(IDLE, SeqCst) == WOKEN;
            if out.is_ready() || !woken {
                return out;
            }
        }
        // Still waking itself: let the scheduler run the others first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// `fut`, polled through its own [`Inline`].
pub(crate) async fn run<F: Future>(fut: F) -> F::Output {
    let inline = Inline::new();
    let mut fut = pin!(fut);
    poll_fn(|cx| inline.poll(cx, |cx| fut.as_mut().poll(cx))).await
}

/// Returns `Pending` once, having woken its task: whoever polls it sees it pause (hyper, polling a
/// response body, flushes what it has buffered) and polls again. Under [`run`] that next poll is
/// one more turn of the same poll; elsewhere the scheduler requeues the task, as
/// `tokio::task::yield_now` does.
pub(crate) async fn pause() {
    let mut paused = false;
    poll_fn(|cx| {
        if paused {
            return Poll::Ready(());
        }
        paused = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A task that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    impl Count {
        fn task() -> (Arc<Count>, Waker) {
            let task = Arc::new(Count(AtomicUsize::new(0)));
            (Arc::clone(&task), Waker::from(task))
        }

        fn woken(&self) -> usize {
            self.0.load(SeqCst)
        }
    }

    #[test]
    fn wakes_inside_the_poll_turn_it_again_and_wakes_outside_reach_the_task() {
        let (task, task_waker) = Count::task();
        let mut cx = Context::from_waker(&task_waker);
        let woken = || task.woken();
        let inline = Inline::new();

        // Woken on its first turn, ready on its second: one poll, the task never woken.
        let mut turns = 0;
        let out = inline.poll(&mut cx, |cx| {
            turns += 1;
            if turns == 1 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(turns)
            }
        });
        assert_eq!((out, woken()), (Poll::Ready(2), 0));

        // Pending without a wake: the waker it kept, woken after the poll, reaches the task.
        let mut kept = None;
        let out = inline.poll(&mut cx, |cx| {
            kept = Some(cx.waker().clone());
            Poll::<()>::Pending
        });
        assert!(out.is_pending());
        assert_eq!(woken(), 0);
        kept.expect("kept").wake();
        assert_eq!(woken(), 1);

        // Waking itself on every turn: after MAX_INLINE_TURNS it leaves the rest to the scheduler.
        let mut turns = 0;
        let out = inline.poll(&mut cx, |cx| {
            turns += 1;
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        });
        assert!(out.is_pending());
        assert_eq!((turns, woken()), (MAX_INLINE_TURNS, 2));
    }

    #[test]
    fn a_pause_under_run_is_one_more_turn_and_elsewhere_a_wake_of_the_task() {
        let (task, task_waker) = Count::task();
        let mut cx = Context::from_waker(&task_waker);
        let woken = || task.woken();

        // Under `run`: each pause is one more turn of the same poll; the task is never woken.
        let mut fut = pin!(run(async {
            pause().await;
            pause().await;
            7
        }));
        assert_eq!((fut.as_mut().poll(&mut cx), woken()), (Poll::Ready(7), 0));

        // Alone: Pending and a wake of the task, then Ready.
        let mut alone = pin!(pause());
        assert!(alone.as_mut().poll(&mut cx).is_pending());
        assert_eq!(woken(), 1);
        assert!(alone.as_mut().poll(&mut cx).is_ready());
    }
}
