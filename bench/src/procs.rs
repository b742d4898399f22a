//! The processes the benchmark starts: servers, Redis, nginx, uvicorn, loadgen, node.
//!
//! Each runs in a process group of its own (so a Ctrl-C in the terminal reaches only the
//! benchmark, which then stops everything in order), with its output in a log file, and is
//! stopped when its [`Proc`] is stopped or dropped, on every path: a normal end, an error
//! that returns early, or an interrupt. Stopping is SIGTERM to the process, a grace period,
//! then SIGKILL to its whole group, so that nothing it started (nginx's worker) survives it.
//! A process that exited is only reaped once its group has been cleaned up: until then its
//! id (which is the group's id) cannot be reused, so the group signal cannot reach a
//! stranger.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nix::{
    sys::{
        signal::{kill, killpg, Signal},
        wait::{waitid, Id, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};

use crate::{fail, util::Result};

/// Set when the benchmark was asked to stop (Ctrl-C, SIGTERM).
pub type StopFlag = Arc<AtomicBool>;

/// Whether the stop flag is set.
pub fn stopping(flag: &StopFlag) -> bool {
    flag.load(Ordering::Relaxed)
}

/// A child process that is stopped when this is dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
    /// Set once the process has been reaped.
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `command` in a process group of its own, stdin closed, stdout and stderr
    /// appended to `log`. `grace` is how long a SIGTERM gets before SIGKILL.
    pub fn spawn(name: &str, command: &mut Command, log: &Path, grace: Duration) -> Result<Self> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .map_err(|error| {
                fail!(
                    "cannot start {name} ({}): {error}",
                    command.get_program().to_string_lossy()
                )
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            grace,
            status: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it is.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// How the process ended, if it has (without reaping it).
    pub fn ended(&mut self) -> Option<String> {
        if let Some(status) = self.status {
            return Some(status.to_string());
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid_of(self.child.id())), flags) {
            Ok(WaitStatus::Exited(_, code)) => Some(format!("exit status {code}")),
            Ok(WaitStatus::Signaled(_, signal, _)) => Some(format!("killed by {signal}")),
            Ok(_) => None,
            // ECHILD: it was reaped already.
            Err(_) => Some("gone".to_owned()),
        }
    }

    /// An error naming how the process ended and the end of its log, if it has ended.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.ended() {
            None => Ok(()),
            Some(how) => Err(fail!(
                "{} ended ({how}): {}",
                self.name,
                log_tail(&self.log, 600)
            )),
        }
    }

    /// Sends `signal` to the process (not its group) if it is still running.
    pub fn signal(&mut self, signal: Signal) {
        if self.ended().is_none() {
            let _ = kill(pid_of(self.child.id()), signal);
        }
    }

    /// Waits until the process ends or `deadline` passes; whether it ended.
    pub fn wait_until(&mut self, deadline: Instant) -> bool {
        loop {
            if self.ended().is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, the grace period, then SIGKILL to the whole group; then reaps it.
    /// Returns whether it had to be killed.
    pub fn stop(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        self.signal(Signal::SIGTERM);
        let ended = self.wait_until(Instant::now() + self.grace);
        if !ended {
            eprintln!(
                "bench: {} did not stop within {:.1}s of SIGTERM; killing its process group",
                self.name,
                self.grace.as_secs_f64()
            );
        }
        // Anything left in its group (nginx's worker) goes too. The leader is not reaped
        // yet, so the group id still belongs to it.
        let _ = killpg(pid_of(self.child.id()), Signal::SIGKILL);
        self.status = Some(self.child.wait().unwrap_or_default());
        !ended
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// The last `max` bytes of a log file, on one line.
pub fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |meta| meta.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Process ids whose parent is `parent` (from `/proc/*/stat`).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parent_pid(&stat))
                == Some(parent)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The parent pid field of a `/proc/<pid>/stat` line (after the command in parentheses).
fn parent_pid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `command` to completion (bounded by `timeout`) and returns its stdout; for
/// version probes and other short commands.
pub fn output(command: &mut Command, timeout: Duration) -> Result<String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|error| {
            fail!(
                "cannot run {}: {error}",
                command.get_program().to_string_lossy()
            )
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = killpg(pid_of(child.id()), Signal::SIGKILL);
            let _ = child.wait();
            return Err(fail!(
                "{} took longer than {}s",
                command.get_program().to_string_lossy(),
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_pid_even_with_odd_command_names() {
        assert_eq!(parent_pid("123 (nginx) S 77 123 123 0 -1"), Some(77));
        assert_eq!(parent_pid("9 (a) b (c)) R 1 9 9"), Some(1));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn stops_a_process_and_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        // A shell that ignores SIGTERM, with a child: only the group kill ends both.
        let mut proc = Proc::spawn(
            "stubborn",
            Command::new("sh").args(["-c", "trap '' TERM; sleep 30 & echo started; wait"]),
            &log,
            Duration::from_millis(300),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let shell = proc.pid();
        let children = children_of(shell);
        assert_eq!(children.len(), 1, "{children:?}");
        proc.check_alive().unwrap();
        assert!(proc.stop());
        assert!(proc.check_alive().is_err());
        std::thread::sleep(Duration::from_millis(200));
        // The child is gone too (or a zombie waiting for init).
        let state = std::fs::read_to_string(format!("/proc/{}/stat", children[0]))
            .ok()
            .and_then(|stat| {
                let after = &stat[stat.rfind(')')? + 1..];
                after.split_whitespace().next().map(str::to_owned)
            });
        assert!(matches!(state.as_deref(), None | Some("Z")), "{state:?}");
        assert!(log_tail(&log, 100).contains("started"));
    }

    #[test]
    fn a_process_that_ended_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("false.log");
        let mut proc = Proc::spawn(
            "failing",
            Command::new("sh").args(["-c", "echo bad flag; exit 3"]),
            &log,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(proc.wait_until(Instant::now() + Duration::from_secs(5)));
        let error = proc.check_alive().unwrap_err().0;
        assert!(error.contains("exit status 3"), "{error}");
        assert!(error.contains("bad flag"), "{error}");
        assert!(!proc.stop());
    }

    #[test]
    fn short_commands_give_their_output() {
        let text = output(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(text, "out\nerr");
        assert!(output(Command::new("sleep").arg("5"), Duration::from_millis(100)).is_err());
    }
}
