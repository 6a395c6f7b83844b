//! Snapshot tests of manifest errors: each `tests/ui/*.toml` is checked with the real
//! `panal check`, and its stderr must equal the `.err` file beside it. Run with
//! `PANAL_BLESS=1` to rewrite the snapshots after a deliberate change, then review them.

use std::path::Path;
use std::process::Command;

use panal_tests::{component, panal_bin, repo};

/// Copies tests/ui to a temp dir with the binary fixtures the cases need.
fn ui_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    for entry in std::fs::read_dir(repo().join("tests/ui")).expect("tests/ui") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    std::fs::copy(component("probe"), dir.path().join("probe.wasm")).expect("probe");
    // The smallest core module: a valid header and nothing else.
    std::fs::write(dir.path().join("core-module.wasm"), b"\0asm\x01\0\0\0").expect("core");
    dir
}

fn check(dir: &Path, case: &str) -> (bool, String) {
    let out = Command::new(panal_bin())
        .args(["check", "--manifest"])
        .arg(dir.join(format!("{case}.toml")))
        .arg("--data-dir")
        .arg(dir.join(".panal"))
        .env("RUST_LOG", "off")
        .env_remove("PANAL_UI_SURELY_UNSET_VAR")
        .output()
        .expect("run panal check");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&dir.display().to_string(), "$DIR");
    (out.status.success(), stderr)
}

#[test]
fn every_bad_manifest_fails_with_its_snapshot() {
    let dir = ui_dir();
    let bless = std::env::var_os("PANAL_BLESS").is_some();
    let mut cases: Vec<String> = std::fs::read_dir(repo().join("tests/ui"))
        .expect("tests/ui")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "ui cases: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let (ok, stderr) = check(dir.path(), case);
        assert!(!ok, "{case}: panal check accepted a bad manifest");
        let snapshot = repo().join(format!("tests/ui/{case}.err"));
        if bless {
            std::fs::write(&snapshot, &stderr).expect("bless");
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
        if expected != stderr {
            failures.push(format!("--- {case}: expected\n{expected}--- got\n{stderr}"));
        }
    }
    assert!(
        failures.is_empty(),
        "snapshot mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_good_manifest_checks_clean() {
    let dir = ui_dir();
    let manifest = dir.path().join("good.toml.txt");
    std::fs::write(
        &manifest,
        "version = 1\n[components.p]\nsource = \"probe.wasm\"\nroutes = [\"/p\"]\nkeyvalue = [\"default\"]\n",
    )
    .expect("write");
    let out = Command::new(panal_bin())
        .args(["check", "--manifest"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(dir.path().join(".panal"))
        .output()
        .expect("run panal check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 components: p)"));
}
