//! The publisher's log of what it sent and when, which decides what each connection is owed.
//!
//! A connection is owed exactly the updates that were published successfully while it was
//! open: sent after its response head arrived and before it closed. Updates sent earlier
//! may still arrive (many servers subscribe before answering) and count as deliveries, but
//! not as owed. The publisher hands out sequence numbers and send times under one lock, so
//! send times never decrease with the sequence number; the updates owed to a connection are
//! then one run of sequence numbers less the failed publishes, and counting them takes a few
//! binary searches whatever the length of the run.

use std::ops::Range;

/// Sequence numbers start here.
pub const FIRST_SEQ: u64 = 1;

/// Send times of every published update, and which publishes failed.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// `sent_ns[i]` is when sequence number `i + 1` was sent; never decreasing.
    sent_ns: Vec<u64>,
    /// Sequence numbers whose publish request failed; sorted, no repeats.
    failed: Vec<u64>,
}

/// A timeline update that does not continue the log where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timeline update starts at sequence {got}, expected {expected}")]
pub struct TimelineGap {
    /// The next sequence number the log needs.
    pub expected: u64,
    /// Where the update starts.
    pub got: u64,
}

impl Timeline {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many updates were sent.
    pub fn len(&self) -> u64 {
        self.sent_ns.len() as u64
    }

    /// Whether nothing was sent yet.
    pub fn is_empty(&self) -> bool {
        self.sent_ns.is_empty()
    }

    /// The sequence number the next update will get.
    pub fn next_seq(&self) -> u64 {
        FIRST_SEQ + self.len()
    }

    /// The last sequence number sent, if any.
    pub fn last_seq(&self) -> Option<u64> {
        (!self.is_empty()).then(|| self.next_seq() - 1)
    }

    /// Records an update sent at `sent_ns` and returns its sequence number. A clock that
    /// stepped back is clamped to the previous send time, keeping the log ordered.
    pub fn push(&mut self, sent_ns: u64) -> u64 {
        let seq = self.next_seq();
        let floor = self.sent_ns.last().copied().unwrap_or(0);
        self.sent_ns.push(sent_ns.max(floor));
        seq
    }

    /// Appends send times for `first_seq`, `first_seq + 1`, …; a part already known is
    /// skipped, a gap is refused.
    pub fn extend(&mut self, first_seq: u64, sent_ns: &[u64]) -> Result<(), TimelineGap> {
        let next = self.next_seq();
        if first_seq > next {
            return Err(TimelineGap {
                expected: next,
                got: first_seq,
            });
        }
        let known = usize::try_from(next - first_seq).unwrap_or(usize::MAX);
        for &sent in sent_ns.iter().skip(known) {
            self.push(sent);
        }
        Ok(())
    }

    /// Send times from `first_seq` on, for passing the log along.
    pub fn sent_from(&self, first_seq: u64) -> &[u64] {
        let start = usize::try_from(first_seq.saturating_sub(FIRST_SEQ)).unwrap_or(usize::MAX);
        self.sent_ns.get(start..).unwrap_or_default()
    }

    /// Records that the publish of `seq` failed.
    pub fn mark_failed(&mut self, seq: u64) {
        if let Err(at) = self.failed.binary_search(&seq) {
            self.failed.insert(at, seq);
        }
    }

    /// How many publishes failed.
    pub fn failed_count(&self) -> u64 {
        self.failed.len() as u64
    }

    /// When `seq` was sent, if it was.
    pub fn sent_at(&self, seq: u64) -> Option<u64> {
        let index = usize::try_from(seq.checked_sub(FIRST_SEQ)?).ok()?;
        self.sent_ns.get(index).copied()
    }

    /// The known sequence numbers owed to a connection open from `after_ns` to `before_ns`
    /// (both exclusive), as a run that may still contain failed ones.
    fn owed_run(&self, after_ns: u64, before_ns: u64) -> Range<u64> {
        let lo = self.sent_ns.partition_point(|&sent| sent <= after_ns) as u64;
        let hi = self.sent_ns.partition_point(|&sent| sent < before_ns) as u64;
        FIRST_SEQ + lo..FIRST_SEQ + hi.max(lo)
    }

    /// Whether `seq` is known and owed to a connection open from `after_ns` to `before_ns`.
    pub fn is_owed(&self, seq: u64, after_ns: u64, before_ns: u64) -> bool {
        self.owed_run(after_ns, before_ns).contains(&seq)
            && self.failed.binary_search(&seq).is_err()
    }

    /// How many known sequence numbers in `range` are owed to a connection open from
    /// `after_ns` to `before_ns`.
    pub fn owed_count(&self, range: Range<u64>, after_ns: u64, before_ns: u64) -> u64 {
        let run = self.owed_run(after_ns, before_ns);
        let start = range.start.max(run.start);
        let end = range.end.min(run.end);
        if start >= end {
            return 0;
        }
        let failed_lo = self.failed.partition_point(|&seq| seq < start);
        let failed_hi = self.failed.partition_point(|&seq| seq < end);
        (end - start) - (failed_hi - failed_lo) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Updates 1..=10 sent at 100, 200, …, 1000; 4 and 7 failed.
    fn sample() -> Timeline {
        let mut timeline = Timeline::new();
        for i in 1..=10 {
            assert_eq!(timeline.push(i * 100), i);
        }
        timeline.mark_failed(7);
        timeline.mark_failed(4);
        timeline.mark_failed(7);
        timeline
    }

    #[test]
    fn counts_what_an_open_connection_is_owed() {
        let timeline = sample();
        assert_eq!(timeline.failed_count(), 2);
        // Open from 250 to forever: 3..=10 less 4 and 7.
        assert_eq!(timeline.owed_count(0..u64::MAX, 250, u64::MAX), 6);
        // Opened exactly at a send time: that update is not owed.
        assert_eq!(timeline.owed_count(0..u64::MAX, 300, u64::MAX), 5);
        // Open from 250 to 650: 3, 5, 6.
        assert_eq!(timeline.owed_count(0..u64::MAX, 250, 650), 3);
        assert_eq!(timeline.owed_count(5..6, 250, 650), 1);
        assert_eq!(timeline.owed_count(11..20, 0, u64::MAX), 0);
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 6..3;
        assert_eq!(timeline.owed_count(backwards, 0, u64::MAX), 0);
        for seq in 0..=11 {
            let expected = [3, 5, 6].contains(&seq);
            assert_eq!(timeline.is_owed(seq, 250, 650), expected, "seq {seq}");
        }
    }

    #[test]
    fn agrees_with_counting_one_by_one() {
        let timeline = sample();
        for after in (0..1100).step_by(50) {
            for before in (0..1100).step_by(50) {
                for start in 0..12 {
                    for end in start..12 {
                        let slow = (start..end)
                            .filter(|&seq| timeline.is_owed(seq, after, before))
                            .count() as u64;
                        assert_eq!(timeline.owed_count(start..end, after, before), slow);
                    }
                }
            }
        }
    }

    #[test]
    fn keeps_send_times_ordered() {
        let mut timeline = Timeline::new();
        timeline.push(500);
        timeline.push(400);
        assert_eq!(timeline.sent_at(2), Some(500));
        assert_eq!(timeline.sent_at(0), None);
        assert_eq!(timeline.sent_at(3), None);
        assert_eq!(timeline.last_seq(), Some(2));
    }

    #[test]
    fn extends_from_a_copy() {
        let source = sample();
        let mut copy = Timeline::new();
        copy.extend(1, source.sent_from(1).get(..4).unwrap_or_default())
            .unwrap();
        // Overlapping updates are fine.
        copy.extend(3, source.sent_from(3)).unwrap();
        assert_eq!(copy.sent_from(1), source.sent_from(1));
        assert_eq!(
            copy.extend(20, &[1]),
            Err(TimelineGap {
                expected: 11,
                got: 20
            })
        );
        assert!(Timeline::new().last_seq().is_none());
        assert_eq!(source.sent_from(11), &[] as &[u64]);
    }
}
