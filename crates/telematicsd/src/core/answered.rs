//! The answered-once window: a refused command id gets at most one result per
//! [`ANSWER_WINDOW_MS`], so a captured command replayed thousands of times produces one result,
//! not thousands.

use std::collections::{HashMap, VecDeque};

use telematics_security::CommandId;

/// A refused command id is answered (its result published or re-published) at most once per
/// this window; further copies (replays, QoS 1 redeliveries) are only counted in the
/// aggregated audit. Longer than the largest TTL + skew a command can have, after which a
/// copy is refused `expired` anyway.
pub const ANSWER_WINDOW_MS: u64 = 600_000;
/// Command ids remembered for [`ANSWER_WINDOW_MS`] (oldest forgotten first).
pub const ANSWER_CAPACITY: usize = 1024;

/// Command ids whose refusal has been answered recently (see [`ANSWER_WINDOW_MS`]).
#[derive(Debug)]
pub struct Answered {
    window_ms: u64,
    capacity: usize,
    at: HashMap<CommandId, u64>,
    order: VecDeque<(CommandId, u64)>,
}

impl Answered {
    /// Remembers up to `capacity` ids for `window_ms`.
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        Answered {
            window_ms,
            capacity,
            at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// `true` (and remembers `id` at `now`) when `id` was not answered within the window.
    pub fn first(&mut self, id: CommandId, now: u64) -> bool {
        if let Some(&t) = self.at.get(&id)
            && now < t.saturating_add(self.window_ms)
        {
            return false;
        }
        self.at.insert(id, now);
        self.order.push_back((id, now));
        while self.order.len() > self.capacity {
            if let Some((old, t)) = self.order.pop_front()
                && self.at.get(&old) == Some(&t)
            {
                self.at.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_id_is_answered_once_per_window_and_memory_is_bounded() {
        let mut a = Answered::new(1_000, 3);
        let id = |i: u8| CommandId([i; 16]);
        assert!(a.first(id(1), 0));
        assert!(!a.first(id(1), 1), "second copy within the window");
        assert!(!a.first(id(1), 999));
        assert!(a.first(id(1), 1_000), "window over: answered again");
        assert!(!a.first(id(1), 1_500));
        for i in 2..=4 {
            assert!(a.first(id(i), 1_600));
        }
        // Capacity 3: id 1 (oldest) was forgotten, so it is answered again.
        assert!(a.at.len() <= 3);
        assert!(a.first(id(1), 1_700));
        assert!(!a.first(id(4), 1_700));
    }
}
