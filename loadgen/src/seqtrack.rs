//! Per-connection bookkeeping of which sequence numbers arrived, to count the missing and
//! the duplicated ones exactly, in little memory.
//!
//! Updates may arrive out of order (the publisher has several requests in flight, and a
//! server may fan out from several threads), so "expect the next number" is not enough.
//! Each connection keeps a bitmap of the numbers it received, starting at the oldest one
//! not yet accounted for. Fully received words are dropped from the front as they fill, so
//! a healthy connection holds a word or two. A number more than [`WINDOW`] ahead of the
//! oldest open one pushes the window forward: what it leaves behind unreceived is counted
//! missing, and anything that turns up behind the window later is counted `late` (it may
//! be a very late delivery or a duplicate; the bitmap no longer knows). That caps the
//! bitmap at `WINDOW / 8` bytes per connection whatever the server does.

use std::{collections::VecDeque, ops::Range};

use crate::timeline::Timeline;

/// How far out of order a delivery may arrive and still be told apart from a duplicate.
pub const WINDOW: u64 = 4096;
const WORD_BITS: u64 = 64;
const WINDOW_WORDS: u64 = WINDOW / WORD_BITS;

/// Which sequence numbers a connection is owed.
#[derive(Debug, Clone, Copy)]
pub enum Owed<'a> {
    /// All of them (the counter stream's ids 1, 2, …).
    Every,
    /// Those the publisher sent while the connection was open; see [`Timeline`].
    Published {
        /// The publisher's log as known so far.
        timeline: &'a Timeline,
        /// When the connection's response head arrived.
        after_ns: u64,
        /// When the connection closed; `u64::MAX` while it is open.
        before_ns: u64,
    },
}

impl Owed<'_> {
    fn is_owed(&self, seq: u64) -> bool {
        match *self {
            Self::Every => true,
            Self::Published {
                timeline,
                after_ns,
                before_ns,
            } => {
                // Not in the log yet: it was sent after every update the log knows, while
                // the connection was open (it is being asked about because a later one came).
                seq > timeline.len() || timeline.is_owed(seq, after_ns, before_ns)
            }
        }
    }

    fn count(&self, range: Range<u64>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        match *self {
            Self::Every => range.end - range.start,
            Self::Published {
                timeline,
                after_ns,
                before_ns,
            } => {
                let known_end = timeline.next_seq();
                let unknown = range.end.saturating_sub(range.start.max(known_end));
                timeline.owed_count(range, after_ns, before_ns) + unknown
            }
        }
    }

    /// Every sequence number below this is in the log (so `is_owed` is final for it).
    fn known_until(&self) -> u64 {
        match *self {
            Self::Every => u64::MAX,
            Self::Published { timeline, .. } => timeline.next_seq(),
        }
    }
}

/// What one delivery was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First arrival of a tracked number.
    New,
    /// A tracked number that had arrived before.
    Duplicate,
    /// Below the connection's first tracked number (sent before it opened).
    Early,
    /// Behind the window: a very late delivery or a duplicate.
    Late,
}

/// A connection's final counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeqCounts {
    /// Sequence numbers the connection was owed.
    pub owed: u64,
    /// Owed numbers that never arrived.
    pub missing: u64,
    /// Arrivals of a number already received.
    pub duplicates: u64,
    /// Arrivals of numbers sent before the connection opened.
    pub early: u64,
    /// Arrivals behind the window (late or duplicate, cannot tell).
    pub late: u64,
}

impl SeqCounts {
    /// Adds another connection's counts.
    pub fn add(&mut self, other: &Self) {
        self.owed += other.owed;
        self.missing += other.missing;
        self.duplicates += other.duplicates;
        self.early += other.early;
        self.late += other.late;
    }

    /// `1 - missing / owed`; `None` when nothing was owed, since a connection that was owed
    /// nothing has delivered no share of anything (reporting 1 would read as "all arrived").
    pub fn delivered_ratio(&self) -> Option<f64> {
        (self.owed > 0).then(|| 1.0 - self.missing as f64 / self.owed as f64)
    }

    /// Whether every owed number arrived exactly once and nothing else did: none missing,
    /// duplicated, late, or from before the connection's first tracked number.
    pub fn is_exact(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.late == 0 && self.early == 0
    }
}

/// The received-set of one connection.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    /// The first number this connection tracks; below it arrivals are early.
    floor: u64,
    /// The number of bit 0 of `words[0]`; everything below is settled.
    base: u64,
    words: VecDeque<u64>,
    /// The highest number received, 0 if none.
    max_seen: u64,
    /// Owed numbers in the settled part.
    settled_owed: u64,
    /// Missing numbers in the settled part.
    settled_missing: u64,
    duplicates: u64,
    early: u64,
    late: u64,
}

impl SeqTracker {
    /// Tracks numbers from `floor` on.
    pub fn new(floor: u64) -> Self {
        Self {
            floor,
            base: floor,
            words: VecDeque::new(),
            max_seen: 0,
            settled_owed: 0,
            settled_missing: 0,
            duplicates: 0,
            early: 0,
            late: 0,
        }
    }

    /// The highest number received so far, if any.
    pub fn max_seen(&self) -> Option<u64> {
        (self.max_seen > 0).then_some(self.max_seen)
    }

    /// Bytes of bitmap held.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }

    /// Records an arrival of `seq`.
    pub fn record(&mut self, seq: u64, owed: &Owed<'_>) -> Delivery {
        if seq < self.floor {
            self.early += 1;
            return Delivery::Early;
        }
        if seq < self.base {
            self.late += 1;
            return Delivery::Late;
        }
        self.max_seen = self.max_seen.max(seq);
        let word = (seq - self.base) / WORD_BITS;
        if word >= WINDOW_WORDS {
            self.slide(word - WINDOW_WORDS + 1, owed);
        }
        let offset = seq - self.base;
        let (word, bit) = (offset / WORD_BITS, offset % WORD_BITS);
        let word = usize::try_from(word).unwrap_or(usize::MAX);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        let delivery = match self.words.get_mut(word) {
            Some(bits) if *bits & mask != 0 => Delivery::Duplicate,
            Some(bits) => {
                *bits |= mask;
                Delivery::New
            }
            None => Delivery::New,
        };
        if delivery == Delivery::Duplicate {
            self.duplicates += 1;
        }
        self.drop_full_words(owed);
        delivery
    }

    /// Final counts, for numbers up to `last` (inclusive; `None` when nothing was sent).
    pub fn finish(&self, last: Option<u64>, owed: &Owed<'_>) -> SeqCounts {
        let mut counts = SeqCounts {
            owed: self.settled_owed,
            missing: self.settled_missing,
            duplicates: self.duplicates,
            early: self.early,
            late: self.late,
        };
        let Some(last) = last else {
            return counts;
        };
        let end = last.saturating_add(1);
        let mut start = self.base;
        for &bits in &self.words {
            if start >= end {
                break;
            }
            let (word_owed, word_missing) = Self::word_counts(start, bits, end, owed);
            counts.owed += word_owed;
            counts.missing += word_missing;
            start += WORD_BITS;
        }
        let rest = owed.count(start..end);
        counts.owed += rest;
        counts.missing += rest;
        counts
    }

    /// Moves the window `words` words forward, settling what it leaves.
    fn slide(&mut self, words: u64, owed: &Owed<'_>) {
        let held = (self.words.len() as u64).min(words);
        for _ in 0..held {
            let bits = self.words.pop_front().unwrap_or(0);
            let (word_owed, word_missing) = Self::word_counts(self.base, bits, u64::MAX, owed);
            self.settled_owed += word_owed;
            self.settled_missing += word_missing;
            self.base += WORD_BITS;
        }
        let skipped = (words - held).saturating_mul(WORD_BITS);
        let end = self.base.saturating_add(skipped);
        let unseen = owed.count(self.base..end);
        self.settled_owed += unseen;
        self.settled_missing += unseen;
        self.base = end;
    }

    /// Drops leading words in which every number arrived.
    fn drop_full_words(&mut self, owed: &Owed<'_>) {
        while self.words.front() == Some(&u64::MAX)
            && self.base.saturating_add(WORD_BITS) <= owed.known_until()
        {
            self.words.pop_front();
            self.settled_owed += owed.count(self.base..self.base + WORD_BITS);
            self.base += WORD_BITS;
        }
        if self.words.is_empty() && self.words.capacity() > 4 {
            self.words.shrink_to(4);
        }
    }

    /// Owed and missing numbers in the word starting at `start`, below `end`.
    fn word_counts(start: u64, bits: u64, end: u64, owed: &Owed<'_>) -> (u64, u64) {
        let mut counts = (0, 0);
        for bit in 0..WORD_BITS {
            let seq = start + bit;
            if seq >= end {
                break;
            }
            if owed.is_owed(seq) {
                counts.0 += 1;
                if bits & (1 << bit) == 0 {
                    counts.1 += 1;
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(floor: u64, seqs: impl IntoIterator<Item = u64>, owed: &Owed<'_>) -> SeqTracker {
        let mut tracker = SeqTracker::new(floor);
        for seq in seqs {
            tracker.record(seq, owed);
        }
        tracker
    }

    #[test]
    fn counts_a_perfect_sequence() {
        let tracker = track(1, 1..=20, &Owed::Every);
        let counts = tracker.finish(tracker.max_seen(), &Owed::Every);
        assert_eq!(
            counts,
            SeqCounts {
                owed: 20,
                ..SeqCounts::default()
            }
        );
    }

    #[test]
    fn counts_gaps_and_repeats() {
        let owed = Owed::Every;
        let mut tracker = SeqTracker::new(1);
        let deliveries: Vec<_> = [1, 2, 4, 4, 5, 3, 3, 9, 0]
            .into_iter()
            .map(|seq| tracker.record(seq, &owed))
            .collect();
        use Delivery::*;
        assert_eq!(
            deliveries,
            [New, New, New, Duplicate, New, New, Duplicate, New, Early]
        );
        let counts = tracker.finish(tracker.max_seen(), &owed);
        // 6, 7, 8 never came.
        assert_eq!(counts.owed, 9);
        assert_eq!(counts.missing, 3);
        assert_eq!(counts.duplicates, 2);
        assert_eq!(counts.early, 1);
        // With a later end, the unseen tail is missing too.
        assert_eq!(tracker.finish(Some(12), &owed).missing, 6);
        assert_eq!(tracker.finish(None, &owed).missing, 0);
    }

    #[test]
    fn a_long_clean_run_holds_little_memory() {
        let tracker = track(1, 1..=100_000, &Owed::Every);
        assert!(tracker.heap_bytes() <= 64, "{}", tracker.heap_bytes());
        let counts = tracker.finish(tracker.max_seen(), &Owed::Every);
        assert_eq!(
            (counts.owed, counts.missing, counts.duplicates),
            (100_000, 0, 0)
        );
    }

    #[test]
    fn out_of_order_within_the_window_is_exact() {
        // Every block of 1000 delivered backwards, every 10th number twice, 777 never.
        let mut seqs = Vec::new();
        for block in 0..10u64 {
            for i in (1..=1000).rev() {
                let seq = block * 1000 + i;
                if seq == 777 {
                    continue;
                }
                seqs.push(seq);
                if seq % 10 == 0 {
                    seqs.push(seq);
                }
            }
        }
        let tracker = track(1, seqs, &Owed::Every);
        let counts = tracker.finish(Some(10_000), &Owed::Every);
        assert_eq!(counts.owed, 10_000);
        assert_eq!(counts.missing, 1);
        assert_eq!(counts.duplicates, 1000);
        assert_eq!(counts.late, 0);
    }

    #[test]
    fn a_jump_past_the_window_settles_the_gap() {
        let owed = Owed::Every;
        let mut tracker = SeqTracker::new(1);
        tracker.record(1, &owed);
        tracker.record(3, &owed);
        tracker.record(1_000_000, &owed);
        assert!(tracker.heap_bytes() <= (WINDOW as usize / 8) + 64);
        // 2 is now behind the window: late, not new.
        assert_eq!(tracker.record(2, &owed), Delivery::Late);
        let counts = tracker.finish(Some(1_000_000), &owed);
        assert_eq!(counts.owed, 1_000_000);
        assert_eq!(counts.missing, 1_000_000 - 3);
        assert_eq!(counts.late, 1);
    }

    #[test]
    fn a_huge_bogus_number_stays_cheap() {
        let owed = Owed::Every;
        let mut tracker = SeqTracker::new(1);
        tracker.record(u64::MAX - 1, &owed);
        tracker.record(5, &owed);
        let counts = tracker.finish(Some(10), &owed);
        assert_eq!(counts.late, 1);
        assert!(counts.missing > 0);
    }

    #[test]
    fn only_counts_what_was_published_while_open() {
        // Updates 1..=300 sent at 10, 20, …; 150 failed.
        let mut timeline = Timeline::new();
        for i in 1..=300 {
            timeline.push(i * 10);
        }
        timeline.mark_failed(150);
        // Opened at 1005 (after update 100) with updates up to 102 in the log then, so it
        // tracks from 103; closed at 2505 (after update 250).
        let open = Owed::Published {
            timeline: &timeline,
            after_ns: 1005,
            before_ns: u64::MAX,
        };
        let mut tracker = SeqTracker::new(103);
        // 99 arrives (subscribed before the head was sent); 102 was in flight; 101..=250
        // except 150 (failed) and 200 (lost).
        for seq in (99..=250).filter(|&seq| seq != 150 && seq != 200 && seq != 100) {
            tracker.record(seq, &open);
        }
        let closed = Owed::Published {
            timeline: &timeline,
            after_ns: 1005,
            before_ns: 2505,
        };
        let counts = tracker.finish(timeline.last_seq(), &closed);
        // Owed: 101..=250 less 150 = 149, of which 101 and 102 are below the floor, so the
        // tracker counts 103..=250 less 150 = 147; 200 missing.
        assert_eq!(counts.owed, 147);
        assert_eq!(counts.missing, 1);
        assert_eq!(counts.early, 3);
        assert_eq!(counts.duplicates, 0);
    }

    #[test]
    fn unknown_numbers_are_not_dropped_early() {
        // The log lags behind the deliveries: words are kept until it catches up.
        let mut timeline = Timeline::new();
        timeline.push(5);
        let owed = Owed::Published {
            timeline: &timeline,
            after_ns: 0,
            before_ns: u64::MAX,
        };
        let tracker = track(1, 1..=200, &owed);
        assert!(tracker.heap_bytes() > 0);
        let counts = tracker.finish(Some(200), &owed);
        assert_eq!((counts.owed, counts.missing), (200, 0));
    }

    #[test]
    fn merges_counts() {
        let mut total = SeqCounts::default();
        let one = SeqCounts {
            owed: 3,
            missing: 1,
            duplicates: 2,
            early: 4,
            late: 5,
        };
        total.add(&one);
        total.add(&one);
        assert_eq!(total.owed, 6);
        assert_eq!(total.late, 10);
        assert!(!total.is_exact());
    }

    #[test]
    fn nothing_owed_has_no_delivered_ratio() {
        assert_eq!(SeqCounts::default().delivered_ratio(), None);
        let counts = SeqCounts {
            owed: 40,
            missing: 4,
            ..SeqCounts::default()
        };
        assert_eq!(counts.delivered_ratio(), Some(0.9));
        assert!(!counts.is_exact());
        let exact = SeqCounts {
            owed: 40,
            ..SeqCounts::default()
        };
        assert_eq!(exact.delivered_ratio(), Some(1.0));
        assert!(exact.is_exact());
        for other in [
            SeqCounts {
                duplicates: 1,
                ..exact
            },
            SeqCounts { late: 1, ..exact },
            SeqCounts { early: 1, ..exact },
        ] {
            assert!(!other.is_exact(), "{other:?}");
        }
    }

    #[test]
    fn a_known_length_owes_the_lost_tail_and_an_empty_stream() {
        // Ids 1..=20 expected; 18..=20 never came. Finishing at the highest id seen (17)
        // would owe 17 and find nothing missing.
        let tracker = track(1, 1..=17, &Owed::Every);
        let counts = tracker.finish(Some(20), &Owed::Every);
        assert_eq!((counts.owed, counts.missing), (20, 3));
        // A stream that carried no id at all owes every one.
        let empty = SeqTracker::new(1);
        let counts = empty.finish(Some(20), &Owed::Every);
        assert_eq!((counts.owed, counts.missing), (20, 20));
    }
}
