//! The machine the figures were taken on, and the versions of everything involved.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{procs::output, targets::Tools};

/// Facts about the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Cores available to this process.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// The kernel release.
    pub kernel: String,
    /// The distribution (`PRETTY_NAME` from /etc/os-release).
    pub os: String,
    /// Memory, KiB (`MemTotal`).
    pub ram_kib: u64,
    /// The open-file limit (soft/hard) the servers inherit.
    pub nofile: String,
    /// `net.ipv4.ip_local_port_range`.
    pub port_range: String,
    /// Cores other processes kept busy when the run started (see [`busy_cores`]).
    #[serde(default)]
    pub busy_cores_at_start: Option<f64>,
}

/// (busy, total) jiffies of all CPUs from the `cpu` line of `/proc/stat`.
fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// How many cores were busy over the next `window`, machine-wide. Called between steps,
/// when none of the benchmark's processes run, it tells how much other work (a build,
/// another test) competes with the next step.
pub fn busy_cores(window: std::time::Duration) -> Option<f64> {
    let read = || cpu_jiffies(&std::fs::read_to_string("/proc/stat").ok()?);
    let (busy0, total0) = read()?;
    std::thread::sleep(window);
    let (busy1, total1) = read()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let total = total1.saturating_sub(total0);
    (total > 0).then(|| busy1.saturating_sub(busy0) as f64 / total as f64 * cores)
}

impl Machine {
    /// Reads the machine's facts (missing ones stay empty).
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let limits = read("/proc/self/limits");
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpu_model(&read("/proc/cpuinfo")),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            os: os_name(&read("/etc/os-release")),
            ram_kib: mem_total_kib(&read("/proc/meminfo")),
            nofile: nofile(&limits),
            port_range: read("/proc/sys/net/ipv4/ip_local_port_range")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join("–"),
            busy_cores_at_start: busy_cores(std::time::Duration::from_secs(1)),
        }
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB RAM, {}, Linux {}, open files {}",
            self.nproc,
            if self.cpu_model.is_empty() {
                "unknown CPU"
            } else {
                &self.cpu_model
            },
            self.ram_kib as f64 / 1024.0 / 1024.0,
            if self.os.is_empty() {
                "unknown OS"
            } else {
                &self.os
            },
            self.kernel,
            self.nofile
        )
    }
}

fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_owned())
        })
        .unwrap_or_default()
}

fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("MemTotal:")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

fn os_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|value| value.trim_matches('"').to_owned())
        .unwrap_or_default()
}

fn nofile(limits: &str) -> String {
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .map(|line| {
            let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
            numbers.join("/")
        })
        .unwrap_or_default()
}

/// Versions of the servers, tools and the repository, for the record.
pub fn versions(tools: &Tools) -> BTreeMap<String, String> {
    let timeout = Duration::from_secs(20);
    let first_line = |text: String| text.lines().next().unwrap_or_default().trim().to_owned();
    let probe = |program: &Path, args: &[&str]| -> String {
        if !program.exists() {
            return "missing".to_owned();
        }
        output(Command::new(program).args(args), timeout)
            .map(first_line)
            .unwrap_or_else(|error| error.0)
    };
    let mut versions = BTreeMap::new();
    versions.insert("server".into(), probe(&tools.server, &["--version"]));
    versions.insert("loadgen".into(), probe(&tools.loadgen, &["--version"]));
    versions.insert("nginx".into(), probe(&tools.nginx, &["-v"]));
    versions.insert("redis-server".into(), probe(&tools.redis, &["--version"]));
    versions.insert("python".into(), probe(&tools.python(), &["--version"]));
    versions.insert("chromium".into(), probe(&tools.chromium, &["--version"]));
    versions.insert("node".into(), probe(&tools.node, &["--version"]));
    if tools.python().exists() {
        let freeze = output(
            Command::new(tools.python()).args([
                "-m",
                "pip",
                "freeze",
                "--disable-pip-version-check",
            ]),
            timeout,
        )
        .unwrap_or_default();
        let wanted: Vec<String> = freeze
            .lines()
            .filter(|line| {
                let name = line.split("==").next().unwrap_or("").to_ascii_lowercase();
                matches!(
                    name.as_str(),
                    "fastapi"
                        | "uvicorn"
                        | "sse-starlette"
                        | "sse_starlette"
                        | "starlette"
                        | "uvloop"
                        | "httptools"
                )
            })
            .map(str::to_owned)
            .collect();
        versions.insert("python packages".into(), wanted.join(", "));
    }
    let nchan = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "libnginx-mod-nchan"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    versions.insert(
        "nchan".into(),
        nchan.unwrap_or_else(|| tools.nchan_module.display().to_string()),
    );
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&tools.repo)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|status| !status.is_empty());
        versions.insert(
            "commit".into(),
            format!(
                "{commit}{}",
                if dirty {
                    " (with uncommitted changes)"
                } else {
                    ""
                }
            ),
        );
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(cpu_model(cpuinfo), "Intel(R) Xeon(R) CPU @ 2.20GHz");
        assert_eq!(
            mem_total_kib("MemTotal:       24684096 kB\nMemFree: 1 kB\n"),
            24_684_096
        );
        assert_eq!(
            os_name("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            20000                20000                files     \n";
        assert_eq!(nofile(limits), "20000/20000");
        assert_eq!(cpu_model(""), "");
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(cpu_jiffies(stat), Some((150, 1000)));
        assert_eq!(cpu_jiffies("intr 1"), None);
    }

    #[test]
    fn reads_this_machine() {
        let machine = Machine::read();
        assert!(machine.nproc >= 1);
        assert!(machine.ram_kib > 0);
        assert!(!machine.kernel.is_empty());
        assert!(machine.summary().contains("cores"));
    }
}
