//! Start-up: `panal run` as a user starts it, timed from spawn to the first 200.

use std::path::Path;
use std::time::{Duration, Instant};

use panal_tests::Panal;

/// Milliseconds from spawning `panal run` on `manifest` with `data_dir` until
/// `GET /products` answers 200; the process is then stopped (SIGTERM, as a user's
/// restart would leave the data dir).
pub fn first_200(manifest: &str, data_dir: &Path) -> f64 {
    let started = Instant::now();
    let panal = Panal::with(manifest, data_dir)
        .env(&[("PANAL_TEST_JWT_SECRET", panal_tests::shop::SECRET)])
        .start();
    let addr = panal.url.trim_start_matches("http://").to_string();
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
    panal.stop();
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
