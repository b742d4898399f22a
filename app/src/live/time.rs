//! Times of messages: read from time-ordered ids, shown as a clock time.

/// The milliseconds since the epoch a UUID version 7 carries, for ids like
/// `urn:uuid:01890a5d-ac96-774b-bcce-b302099a8057` (the hub's own ids). `None` for any
/// other id.
pub fn uuid_v7_millis(id: &str) -> Option<u64> {
    let uuid = id.strip_prefix("urn:uuid:").unwrap_or(id);
    let bytes = uuid.as_bytes();
    if bytes.len() != 36 || bytes[14] != b'7' || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
        return None;
    }
    let hex: String = uuid[..8].chars().chain(uuid[9..13].chars()).collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// `HH:MM:SS` for `ms` milliseconds since the epoch, shifted by `offset_minutes` (the
/// local time zone's offset from UTC; 0 renders UTC).
pub fn clock(ms: u64, offset_minutes: i32) -> String {
    let seconds = i64::try_from(ms / 1000).unwrap_or(i64::MAX) + i64::from(offset_minutes) * 60;
    let day = seconds.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// The ISO 8601 form of `ms`, for `<time datetime>`.
pub fn iso(ms: u64) -> String {
    let total = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let (days, seconds) = (total.div_euclid(86_400), total.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// Howard Hinnant's days-to-civil conversion.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The browser's offset from UTC in minutes (UTC+2 is 120).
#[cfg(feature = "hydrate")]
pub fn local_offset_minutes() -> i32 {
    -(js_sys::Date::new_0().get_timezone_offset() as i32)
}

/// Off the browser, times are shown in UTC.
#[cfg(not(feature = "hydrate"))]
pub fn local_offset_minutes() -> i32 {
    0
}

/// Milliseconds since the epoch now.
#[cfg(feature = "hydrate")]
pub fn now_millis() -> u64 {
    js_sys::Date::now() as u64
}

/// Milliseconds since the epoch now.
#[cfg(not(feature = "hydrate"))]
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_time_of_a_v7_uuid() {
        // 0x0189_0a5d_ac96 ms = 2023-06-30T03:34:18.518Z
        let ms = uuid_v7_millis("urn:uuid:01890a5d-ac96-774b-bcce-b302099a8057").expect("v7");
        assert_eq!(ms, 1_688_096_058_518);
        assert_eq!(iso(ms), "2023-06-30T03:34:18Z");
        assert_eq!(
            uuid_v7_millis("01890a5d-ac96-774b-bcce-b302099a8057"),
            Some(ms)
        );
    }

    #[test]
    fn other_ids_have_no_time() {
        for id in [
            "urn:uuid:e1ee88e2-532a-4d6f-ba70-f0f8bd584022",
            "42",
            "",
            "urn:uuid:zzzzzzzz-zzzz-7zzz-zzzz-zzzzzzzzzzzz",
        ] {
            assert_eq!(uuid_v7_millis(id), None, "{id}");
        }
    }

    #[test]
    fn clocks_shift_by_the_offset() {
        let ms = 1_688_096_058_518;
        assert_eq!(clock(ms, 0), "03:34:18");
        assert_eq!(clock(ms, 120), "05:34:18");
        assert_eq!(clock(ms, -300), "22:34:18");
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
