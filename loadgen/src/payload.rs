//! What every published update carries so that receivers can measure it: a sequence number
//! and the time it was sent, as `{"seq":123,"t":1700000000000000000,"pad":"xx…"}`.
//!
//! The publisher and the subscribers run on the same machine, so the wall clock they read is
//! the same clock and `receive time - t` is the publish-to-receive latency. The sequence
//! number lets each connection find updates that never came or came twice. The `pad` field
//! brings the payload to a chosen size, since fan-out cost depends on it.
//!
//! Decoding scans for the two fields instead of parsing JSON: it runs once per delivered
//! event, tens of thousands of times a second, and must tolerate servers that re-serialize
//! the JSON with spaces (`"seq": 123`) or add fields of their own.

use std::time::{SystemTime, UNIX_EPOCH};

use memchr::memmem;

/// The shortest payload: both fields at their widest, no padding.
pub const MIN_SIZE: usize = r#"{"seq":18446744073709551615,"t":18446744073709551615}"#.len();

/// The stamp a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The update's sequence number, from 1.
    pub seq: u64,
    /// When the publisher sent it, in nanoseconds since the Unix epoch.
    pub sent_ns: u64,
}

/// Nanoseconds since the Unix epoch, the clock stamps use; 0 if the clock is before 1970.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// Writes the payload for `stamp` into `out` (cleared first), padded with `x` to `size`
/// bytes when `size` leaves room for a `pad` field.
pub fn encode(stamp: Stamp, size: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(out, r#"{{"seq":{},"t":{}"#, stamp.seq, stamp.sent_ns);
    const PAD_OVERHEAD: usize = r#","pad":""}"#.len();
    if size >= out.len() + PAD_OVERHEAD {
        let pad = size - out.len() - PAD_OVERHEAD;
        out.extend_from_slice(br#","pad":""#);
        out.resize(out.len() + pad, b'x');
        out.extend_from_slice(br#""}"#);
    } else {
        out.push(b'}');
    }
}

/// The stamp in `data`, if it holds one.
pub fn decode(data: &[u8]) -> Option<Stamp> {
    let seq = number_after(data, b"\"seq\"")?;
    let sent_ns = number_after(data, b"\"t\"")?;
    Some(Stamp { seq, sent_ns })
}

/// The unsigned integer that follows `key`, optional whitespace and a colon.
fn number_after(data: &[u8], key: &[u8]) -> Option<u64> {
    let start = memmem::find(data, key)? + key.len();
    let rest = skip_space(data.get(start..)?);
    let rest = skip_space(rest.strip_prefix(b":")?);
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    rest[..digits].iter().try_fold(0u64, |acc, digit| {
        acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

fn skip_space(bytes: &[u8]) -> &[u8] {
    let spaces = bytes
        .iter()
        .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    &bytes[spaces..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(seq: u64, sent_ns: u64, size: usize) -> Vec<u8> {
        let mut out = vec![b'?'; 3];
        encode(Stamp { seq, sent_ns }, size, &mut out);
        out
    }

    #[test]
    fn round_trips() {
        for (seq, sent_ns) in [
            (1, 0),
            (123, 1_700_000_000_123_456_789),
            (u64::MAX, u64::MAX),
        ] {
            for size in [0, 10, MIN_SIZE, 64, 100, 1000] {
                let bytes = encoded(seq, sent_ns, size);
                assert_eq!(decode(&bytes), Some(Stamp { seq, sent_ns }), "size {size}");
                let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(json["seq"], seq);
            }
        }
    }

    #[test]
    fn pads_to_the_requested_size() {
        for size in [64, 65, 100, 4096] {
            assert_eq!(encoded(5, 1_700_000_000_000_000_000, size).len(), size);
        }
        // Too small for padding: as short as it gets.
        assert_eq!(encoded(5, 6, 0), br#"{"seq":5,"t":6}"#);
        assert!(encoded(u64::MAX, u64::MAX, 0).len() <= MIN_SIZE);
    }

    #[test]
    fn decodes_reserialized_and_wrapped_payloads() {
        assert_eq!(
            decode(br#"{"t": 42, "seq" : 7, "extra": true}"#),
            Some(Stamp {
                seq: 7,
                sent_ns: 42
            })
        );
        assert_eq!(
            decode(br#"{"topic":"x","payload":{"seq":8,"t":9}}"#),
            Some(Stamp { seq: 8, sent_ns: 9 })
        );
    }

    #[test]
    fn rejects_what_is_not_a_stamp() {
        for data in [
            &b"Counter value 1"[..],
            br#"{"seq":1}"#,
            br#"{"seq":"1","t":2}"#,
            br#"{"seq":-1,"t":2}"#,
            br#"{"seq":1,"t":99999999999999999999999}"#,
            br#"{"seq":1,"t":18446744073709551616}"#,
            b"",
        ] {
            assert_eq!(decode(data), None, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn the_clock_is_plausible() {
        // After 2020 and before 2100.
        let now = unix_nanos();
        assert!(now > 1_577_836_800_000_000_000 && now < 4_102_444_800_000_000_000);
    }
}
