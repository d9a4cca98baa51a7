//! Harness for the end-to-end client tests: a real `sluice serve` process on its own port and
//! data directory, and a runner for the client scripts under tests/clients.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A broker process. Dropping it kills the process; the directories go with it.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    /// The admin API (`sluice plugin list|reset`, `/metrics`).
    pub admin_port: u16,
    pub data_dir: tempfile::TempDir,
    /// Broker log, config file and whatever the test writes: kept out of the data directory.
    scratch: tempfile::TempDir,
    config: Option<PathBuf>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::launch(None)
    }

    pub fn start_with_config(toml: &str) -> Broker {
        Broker::launch(Some(toml))
    }

    /// Like `start_with_config`, with `prepare` run on the data directory before the broker
    /// starts (e.g. `sluice user create --data-dir` for the first user).
    pub fn start_prepared(toml: &str, prepare: impl FnOnce(&Path)) -> Broker {
        Broker::launch_prepared(Some(toml), prepare)
    }

    fn launch(toml: Option<&str>) -> Broker {
        Broker::launch_prepared(toml, |_| {})
    }

    fn launch_prepared(toml: Option<&str>, prepare: impl FnOnce(&Path)) -> Broker {
        let data_dir = tempfile::Builder::new()
            .prefix("sluice-data-")
            .tempdir()
            .expect("data dir");
        let scratch = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir()
            .expect("scratch dir");
        let config = toml.map(|text| {
            let path = scratch.path().join("sluice.toml");
            fs::write(&path, text).expect("write broker config");
            path
        });
        let mut broker = Broker {
            child: None,
            port: free_port(),
            admin_port: free_port(),
            data_dir,
            scratch,
            config,
        };
        prepare(broker.data_dir.path());
        broker.spawn();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is not running").id()
    }

    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    pub fn admin(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// The body of `GET path` on the admin API (`/metrics`, `/v1/pipelines`).
    pub fn admin_get(&self, path: &str) -> String {
        http(&self.admin(), "GET", path, None).1
    }

    /// The directory the broker watches for pipelines.
    pub fn plugins_dir(&self) -> PathBuf {
        self.scratch.path().join("plugins")
    }

    fn log_path(&self) -> PathBuf {
        self.scratch.path().join("broker.log")
    }

    fn spawn(&mut self) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("broker log");
        writeln!(log, "==== sluice serve --listen {} ====", self.bootstrap()).ok();
        let mut cmd = command(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--admin")
            .arg(self.admin())
            .arg("--plugins-dir")
            .arg(self.plugins_dir());
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("broker log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn the sluice binary"));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let addr: SocketAddr = self.bootstrap().parse().unwrap();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .unwrap()
                .try_wait()
                .expect("poll broker")
            {
                panic!(
                    "sluice exited ({status}) before accepting connections\n{}",
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "sluice did not accept connections on {addr} within {READY_TIMEOUT:?}\n{}",
                    self.log_tail()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush or clean up, like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and data directory (killing the process first if it runs).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("broker is not running");
        if let Some(status) = child.try_wait().expect("poll broker") {
            panic!("sluice exited ({status})\n{}", self.log_tail());
        }
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!("---- broker log (last 60 lines) ----\n{tail}")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One HTTP/1.1 request to `addr` (the admin API, the metrics listener), with the admin
/// token as a bearer token if given: (status code, body).
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).expect("HTTP listener");
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    )
    .expect("HTTP request");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("HTTP response");
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// A process for a test to start. `cargo test` puts the build directories of native
/// dependencies on LD_LIBRARY_PATH, and rdkafka-sys's (the worker's librdkafka, built without
/// zstd or TLS) holds a librdkafka.so.1: kcat would load it instead of the system's. Those
/// entries are left out.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    if let Some(p) = std::env::var_os("LD_LIBRARY_PATH") {
        let kept: Vec<PathBuf> = std::env::split_paths(&p)
            .filter(|d| !d.to_string_lossy().contains("rdkafka-sys"))
            .collect();
        match std::env::join_paths(kept) {
            Ok(j) if !j.is_empty() => {
                c.env("LD_LIBRARY_PATH", j);
            }
            _ => {
                c.env_remove("LD_LIBRARY_PATH");
            }
        }
    }
    c
}

/// The source tree's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `sluice` binary under test, as a command.
pub fn sluice() -> Command {
    command(env!("CARGO_BIN_EXE_sluice"))
}

/// A port for a listener a test starts. Not from the kernel's ephemeral range, where a bind
/// to port 0 picks from: every outgoing connection takes its local port there too, and one
/// (any test's client, running in parallel) took such a port between this call and the
/// broker's bind ("Address already in use", a red CI run). Ports below that range instead,
/// handed out in turn within the test process and each checked free now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u32, ephemeral_low.min(65_535));
    if hi > lo + 1_000 {
        let span = hi - lo;
        // Another test process at the same time (a second checkout) starts elsewhere.
        let start = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (lo + (start + n) % span) as u16;
            // tests/kafka/cluster.sh's nodes (BASE_PORT 29090, controllers 100 above).
            if (29_000..29_300).contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

/// tests/clients in the source tree.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients")
}

/// A client script running as a child process, its output going to files in the broker's scratch dir.
pub struct Script {
    pub label: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

pub struct Finished {
    pub label: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn report(&self) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "killed after the time limit".to_string(),
        };
        format!(
            "{} -> {status}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            self.label, self.stdout, self.stderr
        )
    }
}

impl Script {
    /// `program` is python3, node or bash; `script` is relative to tests/clients.
    pub fn spawn(broker: &Broker, program: &str, script: &str, args: &[&str]) -> Script {
        let path = clients_dir().join(script);
        assert!(path.exists(), "missing client script {}", path.display());
        let base = script.replace('/', "_");
        let n = fs::read_dir(broker.scratch())
            .map(|d| d.count())
            .unwrap_or(0);
        let stdout = broker.scratch().join(format!("{base}.{n}.out"));
        let stderr = broker.scratch().join(format!("{base}.{n}.err"));
        let label = format!(
            "{program} {script} --bootstrap {} {}",
            broker.bootstrap(),
            args.join(" ")
        );
        let child = command(program)
            .arg(&path)
            .arg("--bootstrap")
            .arg(broker.bootstrap())
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .env("KAFKAJS_NO_PARTITIONER_WARNING", "1")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("script stdout file"))
            .stderr(File::create(&stderr).expect("script stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        Script {
            label,
            child,
            stdout,
            stderr,
        }
    }

    /// A Java program from the classpath of tests/clients/java (built by tests/run.sh): our
    /// scenarios, or Kafka's own tools. `args` follow the class name.
    pub fn spawn_java(broker: &Broker, class: &str, args: &[&str]) -> Script {
        let java = clients_dir().join("java");
        let n = fs::read_dir(broker.scratch())
            .map(|d| d.count())
            .unwrap_or(0);
        let stdout = broker.scratch().join(format!("{class}.{n}.out"));
        let stderr = broker.scratch().join(format!("{class}.{n}.err"));
        let classpath = format!(
            "{}:{}/*",
            java.join("target/classes").display(),
            java.join("target/dependency").display()
        );
        let child = command("java")
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-cp")
            .arg(classpath)
            .arg(class)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("java stdout file"))
            .stderr(File::create(&stderr).expect("java stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run java: {e}"));
        Script {
            label: format!("java {class} {}", args.join(" ")),
            child,
            stdout,
            stderr,
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll script").is_none()
    }

    /// Wait for the script, killing it if it outlives the limit.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll script") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            sleep(Duration::from_millis(100));
        };
        Finished {
            label: std::mem::take(&mut self.label),
            status,
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run a script to completion and fail the test, with its output and the broker log, unless it
/// exits 0. Returns its stdout.
pub fn run_ok(
    broker: &Broker,
    program: &str,
    script: &str,
    args: &[&str],
    limit: Duration,
) -> String {
    let done = Script::spawn(broker, program, script, args).finish(limit);
    assert!(
        done.success(),
        "client script failed\n{}\n{}",
        done.report(),
        broker.log_tail()
    );
    print!("{}", done.stdout);
    done.stdout
}

/// Fail (never skip) when a client the scenario needs is missing, saying how to install it.
pub fn require(program: &str, args: &[&str], what: &str, install: &str) {
    let ok = command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{what} is required for this test but is not available. Install it with: {install}"
    );
}

pub fn require_python_modules(modules: &[&str]) {
    let import = format!("import {}", modules.join(", "));
    require(
        "python3",
        &["-c", &import],
        &format!("python3 with the modules {modules:?}"),
        "apt-get install python3 && pip install -r tests/clients/requirements.txt",
    );
}

pub fn require_kafkajs() {
    require(
        "node",
        &["--version"],
        "node (Node.js 18 or newer)",
        "apt-get install nodejs npm",
    );
    let kafkajs = clients_dir().join("node/node_modules/kafkajs/package.json");
    assert!(
        kafkajs.exists(),
        "kafkajs is required for this test but {} is missing. Install it with: npm ci --prefix tests/clients/node",
        kafkajs.display()
    );
}

pub fn require_kcat() {
    require("kcat", &["-V"], "kcat", "apt-get install kcat");
}

/// The Java client scenarios need Java 17 and the Maven build of tests/clients/java.
pub fn require_java_clients() {
    require(
        "java",
        &["-version"],
        "java (17 or newer)",
        "apt-get install openjdk-17-jre-headless",
    );
    let built = clients_dir().join("java/target/dependency");
    assert!(
        built.exists(),
        "the Java client scenarios are not built ({} is missing). Build them with: mvn -q -B -f tests/clients/java/pom.xml package",
        built.display()
    );
}
