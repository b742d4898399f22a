//! Ticks shared by every stream in the process: instants rounded to a multiple of a step
//! since one fixed origin, so that the timers of many streams with the same step fire
//! together, a few wake-ups instead of one per stream.

use std::{sync::OnceLock, time::Duration};

use tokio::time::Instant;

/// How far `at` is past the tick before it (zero on a tick).
fn past_tick(at: Instant, step: Duration) -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let step = step.as_nanos();
    if step == 0 {
        return Duration::ZERO;
    }
    let past = match at.checked_duration_since(origin) {
        Some(since) => since.as_nanos() % step,
        // Ticks go on before the origin too (a paused test clock can be there).
        None => match (origin - at).as_nanos() % step {
            0 => 0,
            before => step - before,
        },
    };
    Duration::from_nanos(u64::try_from(past).unwrap_or(0))
}

/// `at`, or the first tick after it.
pub fn round_up(at: Instant, step: Duration) -> Instant {
    let past = past_tick(at, step);
    if past.is_zero() {
        at
    } else {
        at + (step - past)
    }
}

/// `at`, or the last tick before it.
pub fn round_down(at: Instant, step: Duration) -> Instant {
    at - past_tick(at, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick_of(at: Instant) -> Instant {
        round_down(at, Duration::from_millis(10))
    }

    #[test]
    fn rounds_to_shared_ticks_both_ways() {
        let step = Duration::from_millis(10);
        let start = Instant::now();
        for offset_us in [0, 1, 3_333, 9_999, 10_000, 123_456] {
            let at = start + Duration::from_micros(offset_us);
            let (down, up) = (round_down(at, step), round_up(at, step));
            assert!(down <= at && at - down < step);
            assert!(up >= at && up - at < step);
            // A tick stays where it is, and both roundings agree on it.
            assert_eq!(round_down(down, step), down);
            assert_eq!(round_up(down, step), down);
            assert_eq!(round_up(up, step), up);
            assert!(up == down || up - down == step);
        }
        // Ticks go on before the first call's origin, on the same spacing.
        let early = start - Duration::from_micros(12_345);
        let down = round_down(early, step);
        assert!(down <= early && early - down < step);
        assert_eq!((tick_of(start) - down).as_nanos() % step.as_nanos(), 0);
        // Instants within one step share a tick.
        let tick = round_up(start, step);
        assert_eq!(round_down(tick + Duration::from_millis(9), step), tick);
        assert_eq!(round_up(tick + Duration::from_micros(1), step), tick + step);
    }
}
