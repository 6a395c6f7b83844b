//! A host's data dir on a small disk of its own (a tmpfs the harness mounts, as root),
//! so the nemesis can fill it up and free it again. Where mounting is not allowed the
//! dir is a plain temporary one and filling it is skipped (said once in the log).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How big each host's disk is: room for its deploy history of the run, its compile
/// cache and its outbox.
const SIZE_MB: u64 = 256;

/// One host's data dir.
pub struct Disk {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Disk {
    /// A fresh data dir, on a tmpfs of its own where that can be mounted.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("data dir");
        let size = format!("size={SIZE_MB}m");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("chaos: cannot mount a tmpfs (not root?): disk-full faults are skipped");
        }
        Self { dir, mounted }
    }

    /// The dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("chaos-filler")
    }

    /// Fill the disk to the last byte; false when it is no disk of its own.
    pub fn fill(&self) -> bool {
        if !self.mounted {
            return false;
        }
        let Ok(mut file) = std::fs::File::create(self.filler()) else {
            return true;
        };
        let block = vec![0u8; 1 << 20];
        while file.write_all(&block).is_ok() {}
        // Down to the last bytes: what a big write left free, a small one takes.
        while file.write_all(&[0u8; 512]).is_ok() {}
        let _ = file.sync_all();
        true
    }

    /// Room again.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.mounted {
            // Lazily: a process of the run may still hold a file open in it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
