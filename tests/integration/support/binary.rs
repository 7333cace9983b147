//! The real `keygate` binary as a child process, for smoke tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running `keygate` child; killed on drop.
pub struct Running {
    pub child: Child,
    /// Lines the child printed on stdout (banner) — collected by a reader thread.
    pub stdout: mpsc::Receiver<String>,
    /// Lines the child printed on stderr (logs).
    pub stderr: mpsc::Receiver<String>,
    /// Every line of stdout and stderr, kept even when the receivers consumed them.
    transcript: [Arc<Mutex<Vec<String>>>; 2],
    pumps: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(
    reader: impl std::io::Read + Send + 'static,
) -> (
    mpsc::Receiver<String>,
    Arc<Mutex<Vec<String>>>,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel();
    let all = Arc::new(Mutex::new(Vec::new()));
    let keep = all.clone();
    let handle = std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            keep.lock().unwrap().push(line.clone());
            // A dropped receiver only means nobody waits for lines; keep the transcript.
            let _ = tx.send(line);
        }
    });
    (rx, all, handle)
}

/// Starts `keygate ARGS…`.
pub fn spawn(args: &[&str]) -> Running {
    spawn_with(Command::new(env!("CARGO_BIN_EXE_keygate")).args(args))
}

/// Starts `keygate ARGS…` with extra environment variables.
pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    spawn_with(
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(args)
            .envs(env.iter().copied()),
    )
}

/// Starts a prepared `keygate` command (extra environment, working directory), piping its output.
pub fn spawn_with(command: &mut Command) -> Running {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keygate binary starts");
    let (stdout, out_all, out_pump) = pump(child.stdout.take().unwrap());
    let (stderr, err_all, err_pump) = pump(child.stderr.take().unwrap());
    Running {
        child,
        stdout,
        stderr,
        transcript: [out_all, err_all],
        pumps: vec![out_pump, err_pump],
    }
}

impl Running {
    /// Waits (bounded) for a stderr log line containing `needle`, returning it.
    pub fn wait_stderr(&self, needle: &str) -> String {
        wait_line(&self.stderr, needle)
    }

    /// The addresses `keygate serve` logs at start-up: (listener, admin).
    pub fn serve_addresses(&self) -> (SocketAddr, SocketAddr) {
        let listener = field(
            &self.wait_stderr("\"listener.address\""),
            "listener.address",
        );
        let admin = field(&self.wait_stderr("\"admin.address\""), "admin.address");
        (listener.parse().unwrap(), admin.parse().unwrap())
    }

    /// Waits for the child to exit and its output to be read to the end: (status, every stdout
    /// line, every stderr line).
    pub fn finish(&mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        let status = self.child.wait().unwrap();
        for pump in self.pumps.drain(..) {
            pump.join().unwrap();
        }
        let [out, err] = &self.transcript;
        (
            status,
            out.lock().unwrap().clone(),
            err.lock().unwrap().clone(),
        )
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Peak resident memory of the child (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }
}

/// Waits up to 30 s for a line containing `needle`.
pub fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line containing {needle:?} within 30 s"),
        }
    }
}

fn field(json_line: &str, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json_line).unwrap();
    v[name].as_str().unwrap().to_string()
}
