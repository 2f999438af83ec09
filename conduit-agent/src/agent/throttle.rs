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
        self.due(now)
    }

    /// The occurrences not reported yet, for a last word when the trouble has ended: `Some`
    /// when there are some and a report is due (reports, this one included, stay at most one
    /// per interval; what is not due yet is reported later).
    pub fn settle(&mut self) -> Option<u64> {
        self.settle_at(Instant::now())
    }

    pub fn settle_at(&mut self, now: Instant) -> Option<u64> {
        if self.pending == 0 {
            return None;
        }
        self.due(now)
    }

    fn due(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.pending))
            }
        }
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
        assert_eq!(t.settle_at(at(0)), None, "nothing to report");
        assert_eq!(t.hit_at(at(0)), Some(1));
        assert_eq!(t.hit_at(at(1)), None);
        assert_eq!(t.hit_at(at(9)), None);
        assert_eq!(t.hit_at(at(10)), Some(3));
        assert_eq!(t.hit_at(at(11)), None);
        assert_eq!(
            t.settle_at(at(12)),
            None,
            "not due yet: the trouble may be back"
        );
        assert_eq!(t.settle_at(at(20)), Some(1));
        assert_eq!(t.settle_at(at(40)), None, "nothing left to report");
        assert_eq!(t.hit_at(at(41)), Some(1), "the next trouble: at once");
    }
}
