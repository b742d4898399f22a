//! Starting workers, as child processes or as threads, and talking to them.
//!
//! A process may hold at most 20 000 open files here and the limit cannot be raised, so a
//! run of more connections spreads them over several processes: loadgen re-executes itself
//! with the hidden `worker` subcommand, sends it a [`WorkerSpec`] and further commands as
//! JSON lines on its stdin, and reads its reports from its stdout. Workers can also run as
//! threads of the coordinator (`--in-process`), which tests use and which is enough for
//! runs that fit in one process. Either way the coordinator sees one stream of
//! [`FleetEvent`]s.

use std::{
    io,
    path::PathBuf,
    process::{ExitCode, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::mpsc::{self, UnboundedReceiver, UnboundedSender},
};

use crate::{
    procstat,
    protocol::{FromWorker, ToWorker, WorkerSpec},
    worker,
};

/// The hidden subcommand a worker process runs.
pub const WORKER_SUBCOMMAND: &str = "worker";
/// How long a worker process gets to exit after its final report.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How workers are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// As child processes of this executable (`exe worker`).
    Processes {
        /// The loadgen executable.
        exe: PathBuf,
    },
    /// As threads of this process.
    Threads,
}

/// Why workers could not be started.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A worker process could not be spawned.
    #[error("cannot start worker process {exe}: {source}")]
    Spawn {
        /// The executable.
        exe: String,
        /// The cause.
        source: io::Error,
    },
    /// A worker thread could not be spawned.
    #[error("cannot start a worker thread: {0}")]
    Thread(io::Error),
}

/// Something a worker said, or its disappearance.
#[derive(Debug)]
pub enum FleetEvent {
    /// A report from worker `index`.
    Report(usize, FromWorker),
    /// Worker `index` will say nothing more (it exited, or its output ended).
    Gone(usize),
}

/// The running workers.
pub struct Fleet {
    commands: Vec<UnboundedSender<ToWorker>>,
    events: UnboundedReceiver<FleetEvent>,
    children: Vec<Child>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pids: Vec<Option<u32>>,
}

impl Fleet {
    /// Starts one worker per spec.
    pub fn start(launch: &Launch, specs: Vec<WorkerSpec>) -> Result<Self, FleetError> {
        let (event_tx, events) = mpsc::unbounded_channel();
        let mut fleet = Self {
            commands: Vec::new(),
            events,
            children: Vec::new(),
            threads: Vec::new(),
            pids: Vec::new(),
        };
        for (index, spec) in specs.into_iter().enumerate() {
            let (command_tx, command_rx) = mpsc::unbounded_channel();
            let (report_tx, report_rx) = mpsc::unbounded_channel();
            match launch {
                Launch::Processes { exe } => {
                    let child = spawn_process(exe, command_rx, report_tx)?;
                    fleet.pids.push(child.id());
                    fleet.children.push(child);
                    // The first command a process reads is its spec.
                    let _ = command_tx.send(ToWorker::Start(Box::new(spec)));
                }
                Launch::Threads => {
                    let handle = spawn_thread(spec, command_rx, report_tx)?;
                    fleet.pids.push(None);
                    fleet.threads.push(handle);
                }
            }
            tokio::task::spawn_local(forward(index, report_rx, event_tx.clone()));
            fleet.commands.push(command_tx);
        }
        Ok(fleet)
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Process ids of the worker processes (none for thread workers).
    pub fn pids(&self) -> Vec<u32> {
        self.pids.iter().flatten().copied().collect()
    }

    /// Sends `command` to every worker.
    pub fn broadcast(&self, command: &ToWorker) {
        for sender in &self.commands {
            let _ = sender.send(command.clone());
        }
    }

    /// The next event; `None` once every worker is gone.
    pub async fn next(&mut self) -> Option<FleetEvent> {
        self.events.recv().await
    }

    /// Waits for worker processes to exit (killing those that do not) and threads to end.
    pub async fn shutdown(mut self) {
        self.commands.clear();
        for child in &mut self.children {
            if tokio::time::timeout(EXIT_GRACE, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::time::timeout(
            EXIT_GRACE,
            tokio::task::spawn_blocking(move || {
                for thread in threads {
                    let _ = thread.join();
                }
            }),
        )
        .await;
    }
}

/// Passes worker `index`'s reports on, then says it is gone.
async fn forward(
    index: usize,
    mut reports: UnboundedReceiver<FromWorker>,
    events: UnboundedSender<FleetEvent>,
) {
    while let Some(report) = reports.recv().await {
        let _ = events.send(FleetEvent::Report(index, report));
    }
    let _ = events.send(FleetEvent::Gone(index));
}

/// Spawns `exe worker` and pumps JSON lines both ways.
fn spawn_process(
    exe: &PathBuf,
    mut commands: UnboundedReceiver<ToWorker>,
    reports: UnboundedSender<FromWorker>,
) -> Result<Child, FleetError> {
    let mut child = Command::new(exe)
        .arg(WORKER_SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| FleetError::Spawn {
            exe: exe.display().to_string(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        tokio::task::spawn_local(async move {
            let mut line = Vec::new();
            while let Some(command) = commands.recv().await {
                line.clear();
                if serde_json::to_writer(&mut line, &command).is_err() {
                    continue;
                }
                line.push(b'\n');
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            // Dropping stdin tells the worker the coordinator is done.
        });
    }
    if let Some(stdout) = child.stdout.take() {
        tokio::task::spawn_local(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<FromWorker>(&line) {
                    Ok(report) => {
                        let _ = reports.send(report);
                    }
                    Err(error) => eprintln!("loadgen: unreadable worker report ({error}): {line}"),
                }
            }
        });
    }
    Ok(child)
}

/// Runs a worker on a thread of its own with a single-threaded runtime.
fn spawn_thread(
    spec: WorkerSpec,
    commands: UnboundedReceiver<ToWorker>,
    reports: UnboundedSender<FromWorker>,
) -> Result<std::thread::JoinHandle<()>, FleetError> {
    std::thread::Builder::new()
        .name(format!("loadgen-worker-{}", spec.index))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = reports.send(FromWorker::Fatal {
                        message: format!("cannot build a runtime: {error}"),
                    });
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, worker::run(spec, commands, reports, false));
        })
        .map_err(FleetError::Thread)
}

/// The `loadgen worker` process: reads its spec and commands from stdin, runs, and writes
/// reports to stdout.
pub fn worker_main() -> ExitCode {
    let nofile = match procstat::raise_nofile_limit() {
        Ok(limit) => limit.soft,
        Err(error) => {
            eprintln!("loadgen worker: {error}");
            0
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen worker: cannot build a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let code = local.block_on(&runtime, worker_process(nofile));
    drop(local);
    // The stdin reader sits in a blocking read that only the coordinator can end; do not
    // wait for it.
    runtime.shutdown_background();
    code
}

async fn worker_process(nofile: u64) -> ExitCode {
    // A Ctrl-C in the terminal reaches the whole process group; the coordinator decides
    // when workers stop, so they ignore it (and still report what they measured).
    tokio::task::spawn_local(async { while tokio::signal::ctrl_c().await.is_ok() {} });

    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<FromWorker>();
    let writer = tokio::task::spawn_local(async move {
        let mut stdout = tokio::io::stdout();
        let mut line = Vec::new();
        while let Some(report) = report_rx.recv().await {
            line.clear();
            if serde_json::to_writer(&mut line, &report).is_err() {
                continue;
            }
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let _ = report_tx.send(FromWorker::Ready {
        pid: std::process::id(),
        nofile,
    });

    let (command_tx, command_rx) = mpsc::unbounded_channel::<ToWorker>();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let spec = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<ToWorker>(&line) {
                Ok(ToWorker::Start(spec)) => break *spec,
                Ok(_) => continue,
                Err(error) => {
                    let _ = report_tx.send(FromWorker::Fatal {
                        message: format!("unreadable command: {error}"),
                    });
                    drop(report_tx);
                    let _ = writer.await;
                    return ExitCode::FAILURE;
                }
            },
            // The coordinator went away before starting us.
            Ok(None) | Err(_) => return ExitCode::FAILURE,
        }
    };
    tokio::task::spawn_local(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<ToWorker>(&line) {
                Ok(command) => {
                    if command_tx.send(command).is_err() {
                        break;
                    }
                }
                Err(error) => eprintln!("loadgen worker: unreadable command ({error})"),
            }
        }
        // Dropping command_tx ends the worker: its coordinator is gone.
    });

    worker::run(spec, command_rx, report_tx, true).await;
    let _ = writer.await;
    ExitCode::SUCCESS
}
