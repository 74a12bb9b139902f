//! Owns the pauses between attempts: doubling from a first pause up to a ceiling.

use std::time::Duration;

/// Doubling pauses, from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// Restarting a follower after a failure: 100 ms doubling to 5 s.
    pub fn restart() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The pause to take now; the next one is twice as long (up to the ceiling).
    pub fn next_pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// The pause after a life of `lived` that ended in a failure: a life longer than
    /// `RESET_AFTER` was a success that later failed, so the pauses start again from the first.
    pub fn after_life(&mut self, lived: Duration) -> Duration {
        if lived > RESET_AFTER {
            self.reset();
        }
        self.next_pause()
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// A follower that ran this long before it failed starts its pauses again from the first.
pub const RESET_AFTER: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_resets_after_a_long_life() {
        let mut b = Backoff::restart();
        let ms = |d: Duration| d.as_millis();
        let seen: Vec<u128> = (0..8).map(|_| ms(b.next_pause())).collect();
        assert_eq!(seen, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(ms(b.after_life(Duration::from_secs(1))), 5000);
        assert_eq!(ms(b.after_life(Duration::from_secs(31))), 100);
        assert_eq!(ms(b.after_life(Duration::ZERO)), 200);
    }
}
