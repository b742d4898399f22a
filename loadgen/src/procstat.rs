//! Memory and CPU time of processes from `/proc`, and the open-file limit.
//!
//! What a connection costs the server is the point of an SSE benchmark, and the load
//! generator's own CPU time tells whether a figure measures the server or the tool (on a
//! small machine they share the cores). Both come from `/proc`: `VmRSS`/`VmHWM` in
//! `/proc/<pid>/status`, and `utime + stime` in `/proc/<pid>/stat`, which covers every
//! thread of the process, including threads that have exited.

use std::{fs, io};

use nix::{
    sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho, RLIM_INFINITY},
    unistd::{sysconf, SysconfVar},
};
use serde::{Deserialize, Serialize};

/// Why a process could not be sampled, or the file limit not raised.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// `/proc/<pid>/…` could not be read (the process is gone, or never was).
    #[error("cannot read /proc/{pid}/{file}: {source}")]
    Read {
        /// The process.
        pid: String,
        /// `stat` or `status`.
        file: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The file did not have the expected layout.
    #[error("cannot parse /proc/{pid}/{file}")]
    Parse {
        /// The process.
        pid: String,
        /// `stat` or `status`.
        file: &'static str,
    },
    /// `getrlimit`, `setrlimit` or `getrusage` failed.
    #[error("{call}: {source}")]
    Call {
        /// The call.
        call: &'static str,
        /// The cause.
        source: nix::Error,
    },
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    /// Resident memory now, KiB.
    pub rss_kb: u64,
    /// Peak resident memory, KiB.
    pub hwm_kb: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

impl ProcSample {
    /// Sums two processes' readings (peaks add up as an upper bound).
    pub fn add(&mut self, other: &Self) {
        self.rss_kb += other.rss_kb;
        self.hwm_kb += other.hwm_kb;
        self.cpu_ticks += other.cpu_ticks;
    }

    /// CPU time in seconds.
    pub fn cpu_secs(&self) -> f64 {
        ticks_to_secs(self.cpu_ticks)
    }
}

/// Reads process `pid`.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    sample_path(&pid.to_string())
}

/// Reads this process.
pub fn sample_self() -> Result<ProcSample, ProcError> {
    sample_path("self")
}

fn sample_path(pid: &str) -> Result<ProcSample, ProcError> {
    let read = |file: &'static str| {
        fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|source| ProcError::Read {
            pid: pid.to_owned(),
            file,
            source,
        })
    };
    let parse_error = |file: &'static str| ProcError::Parse {
        pid: pid.to_owned(),
        file,
    };
    let stat = read("stat")?;
    let cpu_ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| parse_error("stat"))?;
    let status = read("status")?;
    let rss_kb = parse_status_kb(&status, "VmRSS:").ok_or_else(|| parse_error("status"))?;
    let hwm_kb = parse_status_kb(&status, "VmHWM:").unwrap_or(rss_kb);
    Ok(ProcSample {
        rss_kb,
        hwm_kb,
        cpu_ticks,
    })
}

/// The sum of several processes' readings; fails if any of them cannot be read.
pub fn sample_all(pids: &[u32]) -> Result<ProcSample, ProcError> {
    let mut total = ProcSample::default();
    for &pid in pids {
        total.add(&sample(pid)?);
    }
    Ok(total)
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat` times.
pub fn ticks_per_second() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks.unsigned_abs(),
        // Linux has reported 100 on every architecture for decades.
        _ => 100,
    }
}

/// Converts clock ticks to seconds.
pub fn ticks_to_secs(ticks: u64) -> f64 {
    ticks as f64 / ticks_per_second() as f64
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // Fields after the name start at 3 (state); utime is 14 and stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   123 kB` value from `/proc/<pid>/status`.
fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The open-file limits after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NofileLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises this process's soft open-file limit to the hard limit (the only raise an
/// unprivileged process may make), and returns the limits in force.
pub fn raise_nofile_limit() -> Result<NofileLimit, ProcError> {
    let call = |call| move |source| ProcError::Call { call, source };
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(call("getrlimit"))?;
    // An unlimited hard limit cannot be the soft one; the kernel's cap is nr_open.
    let wanted = if hard == RLIM_INFINITY {
        fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).map_err(call("setrlimit"))?;
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).map_err(call("getrlimit"))?;
    Ok(NofileLimit { soft, hard })
}

/// CPU seconds (user + system) used by this process, and by its children that have
/// exited and been waited for.
pub fn own_and_children_cpu_secs() -> Result<(f64, f64), ProcError> {
    let call = |call| move |source| ProcError::Call { call, source };
    let secs = |usage: nix::sys::resource::Usage| {
        let time = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        time(usage.user_time()) + time(usage.system_time())
    };
    let own = getrusage(UsageWho::RUSAGE_SELF).map_err(call("getrusage"))?;
    let children = getrusage(UsageWho::RUSAGE_CHILDREN).map_err(call("getrusage"))?;
    Ok((secs(own), secs(children)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_name() {
        let stat = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 75 0 0 20 0 3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_status_sizes() {
        let status = "Name:\tserver\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t4\n";
        assert_eq!(parse_status_kb(status, "VmRSS:"), Some(10240));
        assert_eq!(parse_status_kb(status, "VmHWM:"), Some(20480));
        assert_eq!(parse_status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn samples_this_process() {
        let own = sample_self().unwrap();
        assert!(own.rss_kb > 0);
        assert!(own.hwm_kb >= own.rss_kb);
        let by_pid = sample(std::process::id()).unwrap();
        assert!(by_pid.rss_kb > 0);
        assert!(
            sample_all(&[std::process::id(), std::process::id()])
                .unwrap()
                .rss_kb
                > 0
        );
        assert!(ticks_per_second() >= 1);
    }

    #[test]
    fn a_missing_process_is_an_error() {
        // Above the kernel's pid_max (at most 2^22).
        assert!(matches!(sample(1 << 23), Err(ProcError::Read { .. })));
    }

    #[test]
    fn raising_the_file_limit_reaches_the_hard_limit() {
        let limit = raise_nofile_limit().unwrap();
        assert!(limit.soft == limit.hard || limit.hard == RLIM_INFINITY);
    }

    #[test]
    fn reads_own_cpu_time() {
        let (own, children) = own_and_children_cpu_secs().unwrap();
        assert!(own >= 0.0 && children >= 0.0);
    }
}
