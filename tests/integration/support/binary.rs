//! The real `keygate` binary as a child process, for smoke tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `keygate` child; killed on drop.
pub struct Running {
    pub child: Child,
    /// Lines the child printed on stdout (banner) — collected by a reader thread.
    pub stdout: mpsc::Receiver<String>,
    /// Lines the child printed on stderr (logs).
    pub stderr: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `keygate ARGS…`.
pub fn spawn(args: &[&str]) -> Running {
    spawn_with_env(args, &[])
}

/// Starts `keygate ARGS…` with extra environment variables.
pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keygate binary starts");
    let stdout = pump(child.stdout.take().unwrap());
    let stderr = pump(child.stderr.take().unwrap());
    Running {
        child,
        stdout,
        stderr,
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
