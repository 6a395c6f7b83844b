//! Start-up: `panal run` as a user starts it, timed from spawn to the first 200.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use panal_tests::panal_bin;

/// Milliseconds from spawning `panal run` on `manifest` with `data_dir` until
/// `GET /products` answers 200; the process is then stopped.
pub fn first_200(manifest: &str, data_dir: &Path) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("panal.toml");
    std::fs::write(&path, manifest).expect("write manifest");
    let started = Instant::now();
    let mut child = Command::new(panal_bin())
        .arg("run")
        .arg("--manifest")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("PANAL_TEST_JWT_SECRET", panal_tests::shop::SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn panal");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let _ = BufReader::new(stdout).read_line(&mut line);
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("panal did not start: {line:?}"))
        .to_string();
    let ms = loop {
        if get_200(&addr) {
            break started.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no 200 from {addr}"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    // SIGTERM: a clean stop checkpoints SQLite, as a user's restart would find it.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    ms
}

/// One plain HTTP/1.1 GET over a fresh socket; no client library warm-up in the timing.
fn get_200(addr: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let req = format!("GET /products HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
