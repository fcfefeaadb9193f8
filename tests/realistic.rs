//! The realistic upstream: a real FHIR server implementation (Medplum's `@medplum/fhir-router`
//! with its in-memory repository, wrapped by `tests/fhir-server/server.mjs`) run as a Node
//! child process on 127.0.0.1 port 0, loaded with a data set at start. It honours search
//! parameters, chains and reverse chains, `_include`/`_revinclude`, `_elements`/`_summary`,
//! conditional reads, paging and several operations (see the wrapper's header), so tests
//! against it see what a hospital's server would answer, not what a fake chose to.
//!
//! Needs `npm ci --prefix tests/fhir-server` (scripts/test.sh does it) and Node 20 or later.
//! Leaves out: lying (that is the hostile upstream's job, `hostile.rs`).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The wrapper process. Killed by its pid when dropped; it also exits by itself when its
/// stdin closes or its parent is gone (a `static` one outlives every `Drop`).
pub struct RealisticUpstream {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl RealisticUpstream {
    /// The fixture's directory (`tests/fhir-server`).
    pub fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fhir-server")
    }

    /// Starts the server with `resources` loaded; panics when it cannot (not installed, or a
    /// resource refused: the refusals are in the message).
    pub fn start(resources: &[Value]) -> RealisticUpstream {
        RealisticUpstream::try_start(resources).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server with `resources` loaded, or says why it could not: when Medplum's
    /// validation refuses resources, one JSON line per refused resource.
    pub fn try_start(resources: &[Value]) -> Result<RealisticUpstream, String> {
        let dir = RealisticUpstream::fixture_dir();
        if !dir.join("node_modules/@medplum/fhir-router").is_dir() {
            return Err(format!(
                "the realistic upstream is not installed in {}: run `npm ci --prefix tests/fhir-server` (scripts/test.sh does)",
                dir.display()
            ));
        }
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = data.path().join("data.json");
        std::fs::write(&file, Value::Array(resources.to_vec()).to_string())
            .map_err(|e| e.to_string())?;
        let mut command = Command::new("node");
        if node_major() < 22 {
            // @medplum/core reads the WebSocket global when it loads; Node 20 has it behind a flag.
            command.arg("--experimental-websocket");
        }
        let mut child = command
            .arg(dir.join("server.mjs"))
            .arg(&file)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("node runs (is Node.js installed?): {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let errors = Arc::new(Mutex::new(String::new()));
        let sink = errors.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("EBADENGINE") || line.contains("ExperimentalWarning") {
                    continue;
                }
                eprintln!("fhir-server: {line}");
                text.push_str(&line);
                text.push('\n');
                *sink.lock().expect("lock") = text.clone();
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep reading so the server never blocks on a full pipe.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        });
        let mut upstream = RealisticUpstream {
            child,
            base: String::new(),
            _data: data,
        };
        let line = rx.recv_timeout(Duration::from_secs(90)).unwrap_or_default();
        let base = line.trim();
        if !base.starts_with("http://127.0.0.1:") {
            // Give the error reader a moment to collect what the process said before it died.
            let _ = upstream.child.wait_timeout(Duration::from_secs(5));
            let said = errors.lock().expect("lock").clone();
            return Err(format!(
                "the realistic upstream did not start (status {:?}):\n{said}",
                upstream.child.try_wait().ok().flatten()
            ));
        }
        upstream.base = base.to_owned();
        Ok(upstream)
    }

    /// `http://127.0.0.1:PORT/fhir`.
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    /// The process id (for tests of the harness itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RealisticUpstream {
    fn drop(&mut self) {
        // `Child::kill` signals this child's pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

trait WaitTimeout {
    fn wait_timeout(&mut self, limit: Duration) -> std::io::Result<()>;
}

impl WaitTimeout for Child {
    fn wait_timeout(&mut self, limit: Duration) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + limit;
        while self.try_wait()?.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// The major version of the `node` on the path (0 when it cannot be told).
fn node_major() -> u32 {
    Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
        })
        .unwrap_or(0)
}
