//! How many answers a sender gets for commands cordon does not trust: a flood of
//! `!cordon …` from any member cannot drown a control room or grow the audit log
//! without bound.
//!
//! Commands from a verified device are never limited: a commander is always answered.
//! Every other command (an unverified or unknown device, an unencrypted message) and
//! every replayed command takes one of [`BUDGET`] answers a sender has in a
//! [`WINDOW`]. The next one gets a single "further refusals suppressed" notice; after
//! that they are dropped unanswered and unaudited, only counted. When the window ends,
//! the count is written once as a counter entry ([`Flood::flush`]).
//!
//! Hand-written because no crate keeps this shape (a budget, one closing notice, and a
//! count handed back once at the end); governor-style limiters only say yes or no. It
//! is pure: the caller passes the time in.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

/// Answers per sender per window.
pub const BUDGET: u32 = 5;

/// The window's length.
pub const WINDOW: TimeDelta = TimeDelta::minutes(1);

/// What to do with one limited command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Within the budget: handle, answer and audit it as usual.
    Pass,
    /// The first over the budget: answer only with the "suppressed" notice.
    Notice,
    /// Over the budget: drop it (counted).
    Drop,
}

/// A window that ended with commands left unanswered: one counter entry for the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    /// The sender.
    pub sender: String,
    /// How many commands were not answered (the notice's included).
    pub count: u32,
    /// When the window began.
    pub from: DateTime<Utc>,
    /// When the last of them arrived.
    pub last: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Window {
    start: DateTime<Utc>,
    answered: u32,
    suppressed: u32,
    last: DateTime<Utc>,
}

/// Every sender's current window.
#[derive(Debug, Default)]
pub struct Flood {
    windows: HashMap<String, Window>,
}

impl Flood {
    /// Takes one answer from `sender`'s budget at `now`. A window that has ended is
    /// closed first; its count, if any, is returned to be audited.
    pub fn take(&mut self, sender: &str, now: DateTime<Utc>) -> (Gate, Option<Suppressed>) {
        let closed = match self.windows.get(sender) {
            Some(w) if now - w.start >= WINDOW => self.close(sender),
            _ => None,
        };
        let w = self.windows.entry(sender.to_owned()).or_insert(Window {
            start: now,
            answered: 0,
            suppressed: 0,
            last: now,
        });
        w.last = now;
        let gate = if w.answered < BUDGET {
            w.answered += 1;
            Gate::Pass
        } else {
            w.suppressed += 1;
            if w.suppressed == 1 {
                Gate::Notice
            } else {
                Gate::Drop
            }
        };
        (gate, closed)
    }

    /// Closes every window that has ended by `now`, returning the counts to audit.
    pub fn flush(&mut self, now: DateTime<Utc>) -> Vec<Suppressed> {
        let ended: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, w)| now - w.start >= WINDOW)
            .map(|(s, _)| s.clone())
            .collect();
        let mut out: Vec<Suppressed> = ended.iter().filter_map(|s| self.close(s)).collect();
        out.sort_by(|a, b| a.sender.cmp(&b.sender));
        out
    }

    fn close(&mut self, sender: &str) -> Option<Suppressed> {
        let w = self.windows.remove(sender)?;
        (w.suppressed > 0).then(|| Suppressed {
            sender: sender.to_owned(),
            count: w.suppressed,
            from: w.start,
            last: w.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    #[test]
    fn a_flood_gets_the_budget_one_notice_then_silence_and_one_count() {
        let mut flood = Flood::default();
        let mut gates = Vec::new();
        for i in 0..200 {
            let (gate, closed) = flood.take("@spam:hs", at(i / 10));
            assert_eq!(closed, None);
            gates.push(gate);
        }
        assert_eq!(gates.iter().filter(|g| **g == Gate::Pass).count(), 5);
        assert_eq!(gates.iter().filter(|g| **g == Gate::Notice).count(), 1);
        assert_eq!(
            gates[5],
            Gate::Notice,
            "the notice comes right after the budget"
        );
        assert!(flood.flush(at(59)).is_empty(), "the window is still open");
        assert_eq!(
            flood.flush(at(60)),
            vec![Suppressed {
                sender: "@spam:hs".into(),
                count: 195,
                from: at(0),
                last: at(19),
            }]
        );
        assert!(flood.flush(at(200)).is_empty(), "counted once");
        // A new window, a new budget.
        assert_eq!(flood.take("@spam:hs", at(300)).0, Gate::Pass);
    }

    #[test]
    fn senders_have_their_own_budgets_and_a_quiet_window_leaves_no_count() {
        let mut flood = Flood::default();
        for _ in 0..BUDGET {
            assert_eq!(flood.take("@a:hs", at(0)).0, Gate::Pass);
        }
        assert_eq!(flood.take("@a:hs", at(1)).0, Gate::Notice);
        assert_eq!(flood.take("@b:hs", at(1)).0, Gate::Pass, "another sender");
        // The next command after the window closes it and hands back its count.
        let (gate, closed) = flood.take("@a:hs", at(61));
        assert_eq!(gate, Gate::Pass);
        assert_eq!(closed.map(|s| s.count), Some(1));
        assert!(
            flood.flush(at(200)).is_empty(),
            "@b:hs was never suppressed"
        );
    }
}
