//! Rate-limited reporting: a warning about something that can happen thousands of times a
//! second (an audit line that cannot be written, a connection refused) is logged at most once
//! per interval, with the number of occurrences it stands for.
use std::time::{Duration, Instant};

pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    pending: u64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            pending: 0,
        }
    }

    /// Counts one occurrence. `Some(n)` when it is time to report: `n` occurrences since the
    /// last report, this one included.
    pub fn hit(&mut self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    pub fn hit_at(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.pending))
            }
        }
    }

    /// The occurrences not reported yet, for a last word when the trouble ends; the next
    /// occurrence is then reported at once.
    pub fn settle(&mut self) -> u64 {
        self.last = None;
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Throttle;

    #[test]
    fn reports_the_first_then_at_most_once_per_interval_with_the_count() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.hit_at(at(0)), Some(1));
        assert_eq!(t.hit_at(at(1)), None);
        assert_eq!(t.hit_at(at(9)), None);
        assert_eq!(t.hit_at(at(10)), Some(3));
        assert_eq!(t.hit_at(at(11)), None);
        assert_eq!(t.settle(), 1);
        assert_eq!(t.settle(), 0);
        assert_eq!(t.hit_at(at(12)), Some(1), "after settling, at once again");
    }
}
