//! Turns at provisioning: at most so many at once, the waiting served in the order of
//! their keys (a declare's time and incident id), whatever order their tasks reach the
//! gate in.
//!
//! Written here because a fair semaphore (tokio's) serves in the order of arrival, and
//! the provisioning jobs of a burst of declares arrive in whatever order the runtime
//! starts their tasks (its last-spawned-first slot reverses some): first come, first
//! served must mean first declared.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The gate. `K` orders the waiting.
#[derive(Debug)]
pub(crate) struct Turns<K: Ord> {
    limit: usize,
    state: Mutex<State<K>>,
}

#[derive(Debug)]
struct State<K> {
    taken: usize,
    waiting: BTreeMap<K, oneshot::Sender<()>>,
}

/// A turn, given back when dropped.
#[derive(Debug)]
pub(crate) struct Turn<'a, K: Ord + Clone> {
    turns: &'a Turns<K>,
}

/// A place in the queue.
#[derive(Debug)]
pub(crate) struct Waiting<'a, K: Ord + Clone> {
    turns: &'a Turns<K>,
    key: K,
    rx: oneshot::Receiver<()>,
    /// How many wait before it.
    pub(crate) ahead: usize,
    done: bool,
}

/// What [`Turns::enter`] gives: a turn at once, or a place in the queue.
#[derive(Debug)]
pub(crate) enum Entry<'a, K: Ord + Clone> {
    Now(Turn<'a, K>),
    Queued(Waiting<'a, K>),
}

impl<K: Ord + Clone> Turns<K> {
    /// A gate of `limit` turns (at least 1).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            state: Mutex::new(State {
                taken: 0,
                waiting: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A turn now, when one is free and no earlier key waits; else a place in the
    /// queue, decided here and now (a key already queued is queued again, replacing
    /// its place).
    pub(crate) fn enter(&self, key: K) -> Entry<'_, K> {
        let mut state = self.lock();
        let earlier_waits = state.waiting.range(..&key).next().is_some();
        if state.taken < self.limit && !earlier_waits {
            state.taken += 1;
            return Entry::Now(Turn { turns: self });
        }
        let (tx, rx) = oneshot::channel();
        let ahead = state.waiting.range(..&key).count();
        state.waiting.insert(key.clone(), tx);
        Entry::Queued(Waiting {
            turns: self,
            key,
            rx,
            ahead,
            done: false,
        })
    }

    /// Gives a turn back: to the earliest key waiting, or to the pool.
    fn release(&self) {
        let mut state = self.lock();
        while let Some((_, tx)) = state.waiting.pop_first() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        state.taken = state.taken.saturating_sub(1);
    }
}

impl<'a, K: Ord + Clone> Waiting<'a, K> {
    /// Waits for the turn.
    pub(crate) async fn turn(mut self) -> Turn<'a, K> {
        // The sender is dropped only after it sent, or with the gate.
        let _ = (&mut self.rx).await;
        self.done = true;
        Turn { turns: self.turns }
    }
}

impl<K: Ord + Clone> Drop for Turn<'_, K> {
    fn drop(&mut self) {
        self.turns.release();
    }
}

impl<K: Ord + Clone> Drop for Waiting<'_, K> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let handed = {
            let mut state = self.turns.lock();
            if state.waiting.remove(&self.key).is_some() {
                false
            } else {
                // Popped from the queue: the turn was sent to it under the same lock.
                self.rx.try_recv().is_ok()
            }
        };
        if handed {
            self.turns.release();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn queued<K: Ord + Clone>(entry: Entry<'_, K>) -> Waiting<'_, K> {
        match entry {
            Entry::Queued(w) => w,
            Entry::Now(_) => panic!("a turn was free"),
        }
    }

    fn now<K: Ord + Clone>(entry: Entry<'_, K>) -> Turn<'_, K> {
        match entry {
            Entry::Now(t) => t,
            Entry::Queued(_) => panic!("no turn was free"),
        }
    }

    #[tokio::test]
    async fn the_waiting_are_served_in_key_order_whatever_order_they_came_in() {
        let turns = Turns::new(2);
        let a = now(turns.enter(1));
        let b = now(turns.enter(2));
        // Later declares reach the gate first.
        let w5 = queued(turns.enter(5));
        let w3 = queued(turns.enter(3));
        let w4 = queued(turns.enter(4));
        assert_eq!((w5.ahead, w3.ahead, w4.ahead), (0, 0, 1));
        drop(a);
        let t3 = w3.turn().await;
        drop(b);
        let t4 = w4.turn().await;
        drop(t3);
        let t5 = w5.turn().await;
        drop((t4, t5));
        // All given back: two free turns again.
        let _x = now(turns.enter(9));
        let _y = now(turns.enter(10));
        let _z = queued(turns.enter(11));
    }

    #[tokio::test]
    async fn a_free_turn_goes_to_an_earlier_key_waiting_not_to_a_later_arrival() {
        let turns = Turns::new(1);
        let first = now(turns.enter(1));
        let w2 = queued(turns.enter(2));
        drop(first);
        // The turn was handed to 2: a newcomer waits, even with a smaller key than 3.
        let w3 = queued(turns.enter(3));
        let t2 = w2.turn().await;
        drop(t2);
        let _t3 = w3.turn().await;
    }

    #[tokio::test]
    async fn a_place_given_up_or_a_turn_handed_to_one_that_left_is_not_lost() {
        let turns = Turns::new(1);
        let first = now(turns.enter(1));
        let gone = queued(turns.enter(2));
        let w3 = queued(turns.enter(3));
        drop(gone);
        drop(first);
        let t3 = w3.turn().await;
        // A turn handed to a waiter that is dropped before taking it comes back.
        let w4 = queued(turns.enter(4));
        drop(t3);
        drop(w4);
        let _t5 = now(turns.enter(5));
    }
}
