//! Test support: a real mosquitto on a free loopback port, a real subscriber (mosquitto_sub),
//! the real `vakt` binary, and clips made with real GStreamer. Everything is cleaned up on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// TUD-Stadtmitte (640×480, 179 frames, people on a shopping street) and its MOT ground truth.
pub fn tud() -> (PathBuf, PathBuf) {
    let dir = repo_root().join("../shared/data/video/tud-stadtmitte");
    let clip = dir.join("TUD-Stadtmitte.mp4");
    assert!(clip.is_file(), "{} missing (../shared/data, see its README.md)", clip.display());
    (clip, dir.join("gt.txt"))
}

/// The verified model directory `deploy/test.sh` fills with `models/fetch.sh .data/models`.
pub fn models_dir() -> PathBuf {
    let p = repo_root().join(".data/models");
    assert!(
        p.join("yolox_nano/yolox_nano.onnx").is_file(),
        "{} missing: run models/fetch.sh .data/models",
        p.display()
    );
    p
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn demo_clip() -> PathBuf {
    let p = repo_root().join(".data/vtest.avi");
    assert!(p.is_file(), "{} missing: run deploy/fetch-demo-clip.sh", p.display());
    p
}

/// A loopback port no listener holds now and that this test process has not handed out before.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn wait_port(port: u16, up: bool, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() == up {
            return true;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    false
}

/// A mosquitto broker owned by the test, stopped by PID on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Mosquitto {
    /// Starts on a free port. Tests run in parallel and two can draw the same "free" port: the
    /// broker that loses the race exits at once, so a start only counts when our own process is
    /// still running after the port answers.
    pub fn start() -> Mosquitto {
        Self::with_conf(tempfile::tempdir().unwrap(), |port| {
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n")
        })
    }

    /// Starts on a free port with the configuration `conf` gives for that port, written into
    /// `dir` (which also holds the files the configuration names, and lives as long as the broker).
    pub fn with_conf(dir: tempfile::TempDir, conf: impl Fn(u16) -> String) -> Mosquitto {
        let path = dir.path().join("mosquitto.conf");
        let mut m = Mosquitto { port: 0, child: None, dir, conf: path };
        for _ in 0..10 {
            m.port = free_port();
            std::fs::write(&m.conf, conf(m.port)).unwrap();
            m.restart();
            std::thread::sleep(Duration::from_millis(150));
            if m.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none()) {
                return m;
            }
        }
        panic!("could not start mosquitto on a free port in 10 tries");
    }

    pub fn start_on(port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"),
        )
        .unwrap();
        let mut m = Mosquitto { port, child: None, dir, conf };
        m.restart();
        m
    }

    /// The directory of the broker's configuration.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(wait_port(self.port, false, Duration::from_secs(5)), "mosquitto did not stop");
    }

    pub fn restart(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (deploy/setup-dev.sh)");
        self.child = Some(child);
        assert!(wait_port(self.port, true, Duration::from_secs(5)), "mosquitto did not start on {}", self.port);
    }

    /// Restarts on the same port and checks that the broker answering is ours.
    pub fn restart_checked(&mut self) {
        self.restart();
        std::thread::sleep(Duration::from_millis(150));
        let alive = self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none());
        assert!(alive, "mosquitto could not take port {} again", self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Msg {
    pub retained: bool,
    pub topic: String,
    pub payload: String,
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.topic, self.payload))
    }
}

/// A real MQTT subscriber (mosquitto_sub) collecting every message under a filter.
pub struct Subscriber {
    child: Child,
    pub msgs: Arc<Mutex<Vec<Msg>>>,
}

impl Subscriber {
    /// Subscribes to `filter` and returns once the subscription demonstrably works.
    pub fn start(port: u16, filter: &str) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-F", "%r %t %p"])
            .args(["-t", filter, "-t", "vakt-test/probe"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub is installed");
        let out = child.stdout.take().unwrap();
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let m = msgs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut it = line.splitn(3, ' ');
                let (r, t, p) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""));
                m.lock().unwrap().push(Msg { retained: r == "1", topic: t.into(), payload: p.into() });
            }
        });
        let s = Subscriber { child, msgs };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "vakt-test/probe", "-m", "probe"])
                .status();
            // Retained messages delivered on subscribe are kept; probes are filtered by `all()`.
            if s.wait_for(|m| m.topic == "vakt-test/probe", Duration::from_millis(300)) {
                return s;
            }
        }
        panic!("subscriber never received its probe");
    }

    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().iter().filter(|m| m.topic != "vakt-test/probe").cloned().collect()
    }

    pub fn wait_for(&self, pred: impl Fn(&Msg) -> bool, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.msgs.lock().unwrap().iter().any(&pred) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.all().iter().filter(|m| m.topic.ends_with("/events")).map(Msg::json).collect()
    }

    pub fn statuses(&self) -> Vec<serde_json::Value> {
        self.all().iter().filter(|m| m.topic.ends_with("/status")).map(Msg::json).collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn vakt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vakt"));
    c.env("VAKT_LOG", "info");
    c
}

/// A config for tests: `extra` is appended (tables and keys).
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestConfig {
    pub fn new(broker_url: &str, source: &str, extra: &str) -> TestConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vakt.toml");
        // Object detection only where a test asks for it: it is slow in debug builds.
        let detect = if extra.contains("[detect]") { "" } else { "[detect]\nenabled = false\n" };
        let plain = if broker_url.starts_with("mqtt://") { "insecure_plaintext = true\n" } else { "" };
        let text = format!(
            r#"
[box]
id = "box-test"
site = "test-site"
state_dir = "state"

[source]
uri = "{source}"
stall_timeout = "2s"
reconnect_max = "2s"

[mqtt]
url = "{broker_url}"
{plain}health_interval = "1s"
keep_alive = "5s"

[storage]
record = false

[events]
start_after = "200ms"
update_interval = "1s"
end_after = "1s"
{detect}{extra}
"#
        );
        std::fs::write(&path, text).unwrap();
        TestConfig { dir, path }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// A running `vakt run`, killed on drop.
pub struct BoxProcess {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
}

impl BoxProcess {
    pub fn start(cfg: &Path) -> BoxProcess {
        BoxProcess::start_with(cfg, &[])
    }

    /// `vakt run` with extra arguments (fault injection).
    pub fn start_with(cfg: &Path, args: &[&str]) -> BoxProcess {
        let mut cmd = vakt();
        cmd.arg("--config").arg(cfg).arg("run").args(args);
        BoxProcess::spawn(cmd)
    }

    /// Runs a prepared `vakt ... run` command (extra environment, for instance).
    pub fn spawn(mut cmd: Command) -> BoxProcess {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let s = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = s.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        BoxProcess { child, stderr }
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for BoxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes an MJPEG AVI clip (160×120, 15 fps) with gst-launch-1.0 from a description that ends in
/// raw video and bounds its own length (`num-buffers`). No spaces inside caps.
pub fn make_clip(dir: &Path, name: &str, raw: &str) -> PathBuf {
    let out = dir.join(name);
    let desc = format!(
        "{raw} ! videoconvert ! videoscale ! video/x-raw,format=I420,width=160,height=120 ! jpegenc ! avimux ! filesink location={}",
        out.display()
    );
    let st = Command::new("gst-launch-1.0").arg("-q").args(desc.split(' ')).status().expect("gst-launch-1.0 installed");
    assert!(st.success(), "gst-launch-1.0 failed for {desc}");
    out
}

/// A bouncing ball over the whole frame, `frames` long at 15 fps.
pub fn ball_clip(dir: &Path, frames: u32) -> PathBuf {
    make_clip(
        dir,
        "ball.avi",
        &format!("videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=160,height=120,framerate=15/1"),
    )
}

pub fn run_vakt(args: &[&str]) -> Output {
    vakt().args(args).output().unwrap()
}

pub fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo_root().join("edge/docs/ref/event.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("the committed schema compiles")
}

/// A TCP relay between the box and the broker that a test can cut and restore: a network
/// outage as the box sees it (connections reset, new ones refused), while subscribers stay
/// connected to the broker directly.
pub struct Relay {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    /// Bumped at every cut: relaying threads of an older generation stop.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    pub fn start(to: u16) -> Relay {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (u, g) = (up.clone(), generation.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if !u.load(Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else { continue };
                let gen_now = g.load(Ordering::SeqCst);
                for (mut a, mut b) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                    let g = g.clone();
                    a.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16384];
                        while g.load(Ordering::SeqCst) == gen_now {
                            match a.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if b.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = a.shutdown(std::net::Shutdown::Both);
                        let _ = b.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, up, generation }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Resets every relayed connection and refuses new ones.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
