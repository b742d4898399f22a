//! Small things every part uses: the error type, number formatting, dates, free ports.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Why a step of the benchmark could not be carried out (measured failures are results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self(error.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self(format!("JSON: {error}"))
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error`] from a format string.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { $crate::util::Error(format!($($arg)*)) };
}

/// The median of `values` (the mean of the middle two for an even count); `None` when
/// there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The UTC date `YYYY-MM-DD` of a time in milliseconds since the Unix epoch.
pub fn utc_date(unix_ms: u64) -> String {
    let days = i64::try_from(unix_ms / 86_400_000).unwrap_or(0);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The UTC time of day `HH:MM` of a time in milliseconds since the Unix epoch.
pub fn utc_time(unix_ms: u64) -> String {
    let minutes = unix_ms / 60_000 % (24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether something accepts connections at 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Calls `ready` every 100 ms until it says yes (`Ok(true)`), fails, or `timeout` passes.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(fail!("{what}: not ready after {}s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A count with thousands separators: `19,900`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A duration in microseconds, in the unit that reads best: `850 µs`, `1.23 ms`, `2.5 s`.
pub fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        return "–".into();
    }
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A size in bytes: `812 B`, `6.1 KiB`, `38.2 MiB`.
pub fn fmt_bytes(bytes: f64) -> String {
    if !bytes.is_finite() {
        return "–".into();
    }
    let sign = if bytes < 0.0 { "-" } else { "" };
    let bytes = bytes.abs();
    if bytes < 1024.0 {
        format!("{sign}{bytes:.0} B")
    } else if bytes < 1024.0 * 1024.0 {
        format!("{sign}{:.1} KiB", bytes / 1024.0)
    } else if bytes < 1024.0 * 1024.0 * 1024.0 {
        format!("{sign}{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else {
        format!("{sign}{:.2} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
    }
}

/// A size in decimal kilobytes, the unit of the goals stated in KB (1 kB = 1,000 bytes):
/// `97.80 kB`, `812 B`. Two decimals, so that a figure just over a limit does not read as
/// the limit.
pub fn fmt_kb(bytes: f64) -> String {
    if !bytes.is_finite() {
        "–".into()
    } else if bytes.abs() < 1_000.0 {
        format!("{bytes:.0} B")
    } else {
        format!("{:.2} kB", bytes / 1_000.0)
    }
}

/// A rate per second: `950/s`, `12.3k/s`, `1.25M/s`.
pub fn fmt_rate(per_second: f64) -> String {
    if !per_second.is_finite() {
        "–".into()
    } else if per_second < 1_000.0 {
        format!("{per_second:.0}/s")
    } else if per_second < 1_000_000.0 {
        format!("{:.1}k/s", per_second / 1e3)
    } else {
        format!("{:.2}M/s", per_second / 1e6)
    }
}

/// A ratio: `0.42×`, `12×`.
pub fn fmt_ratio(ratio: f64) -> String {
    if !ratio.is_finite() {
        "–".into()
    } else if ratio < 10.0 {
        format!("{ratio:.2}×")
    } else {
        format!("{ratio:.0}×")
    }
}

/// CPU seconds: `0.42 s`.
pub fn fmt_cpu_s(seconds: f64) -> String {
    if seconds.is_finite() {
        format!("{seconds:.2} s")
    } else {
        "–".into()
    }
}

/// A percentage of one core: `37%`.
pub fn fmt_percent(percent: f64) -> String {
    if percent.is_finite() {
        format!("{percent:.0}%")
    } else {
        "–".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[80.0, 70.0, 71.0]), Some(71.0));
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(utc_date(0), "1970-01-01");
        // 2000-02-29 12:00 UTC (a leap day in a century leap year).
        assert_eq!(utc_date(951_825_600_000), "2000-02-29");
        // 2026-11-25 23:59:59 UTC.
        assert_eq!(utc_date(1_795_651_199_000), "2026-11-25");
        assert_eq!(utc_date(1_795_651_200_000), "2026-11-26");
        assert_eq!(utc_date(4_107_542_400_000), "2100-03-01");
        assert_eq!(utc_time(1_795_651_199_000), "23:59");
        assert_eq!(utc_time(0), "00:00");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(19_900), "19,900");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_us(850.0), "850 µs");
        assert_eq!(fmt_us(1_234.0), "1.23 ms");
        assert_eq!(fmt_us(19_960.0), "20.0 ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50 s");
        assert_eq!(fmt_us(f64::NAN), "–");
        assert_eq!(fmt_bytes(812.0), "812 B");
        assert_eq!(fmt_bytes(6_246.0), "6.1 KiB");
        assert_eq!(fmt_bytes(-2048.0), "-2.0 KiB");
        assert_eq!(fmt_bytes(40.0 * 1024.0 * 1024.0), "40.0 MiB");
        // The WASM the goal's 100 KB is read against: 95.5 KiB is 97.8 kB.
        assert_eq!(fmt_kb(97_800.0), "97.80 kB");
        assert_eq!(fmt_kb(8_040.0), "8.04 kB");
        assert_eq!(fmt_kb(812.0), "812 B");
        assert_eq!(fmt_kb(f64::NAN), "–");
        assert_eq!(fmt_rate(950.0), "950/s");
        assert_eq!(fmt_rate(12_345.0), "12.3k/s");
        assert_eq!(fmt_rate(1_250_000.0), "1.25M/s");
        assert_eq!(fmt_ratio(0.4234), "0.42×");
        assert_eq!(fmt_ratio(12.4), "12×");
        assert_eq!(fmt_ratio(f64::INFINITY), "–");
        assert_eq!(fmt_percent(37.4), "37%");
    }

    #[test]
    fn free_ports_are_free() {
        let port = free_port().unwrap();
        assert!(port > 0);
        assert!(!port_open(port));
        let error = wait_until(Duration::from_millis(150), "nothing", || Ok(false)).unwrap_err();
        assert!(error.0.contains("not ready"));
    }
}
