//! The host's layering rule (ARCHITECTURE.md): a top-level module imports only modules
//! of a lower layer, so arrows point one way and there is no import circle. Read from
//! the sources, so a new `use crate::...` that points up fails here.

use std::collections::BTreeMap;
use std::path::Path;

/// Layers from the bottom; a module may import modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &[
        "manifest", "metrics", "logging", "secret", "traces", "roles",
    ],
    &["runtime"],
    &["capabilities"],
    &["registry"],
    &["cluster"],
    &["triggers"],
    &["admin"],
    &["server"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `crate::NAME` a file mentions, `use crate::{a, b}` included.
fn imports(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in src.match_indices("crate::") {
        let rest = &src[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut wrong = BTreeMap::new();
    let mut seen = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_string())
            .expect("a name");
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(own) = layer(&top) else {
            panic!("host/src/{top} is in no layer: add it to LAYERS and ARCHITECTURE.md");
        };
        seen += 1;
        let text = std::fs::read_to_string(file).expect("read");
        for used in imports(&text) {
            if used == top || used.is_empty() {
                continue;
            }
            match layer(&used) {
                Some(l) if l < own => {}
                _ => {
                    wrong
                        .entry(format!("{}", rel.display()))
                        .or_insert_with(Vec::new)
                        .push(used);
                }
            }
        }
    }
    assert!(seen > 20, "only {seen} files read from {}", src.display());
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways (see ARCHITECTURE.md): {wrong:#?}"
    );
}

#[test]
fn the_reader_sees_grouped_imports() {
    assert_eq!(
        imports("use crate::{runtime::x, manifest};\nlet a = crate::metrics::y;"),
        ["runtime", "manifest", "metrics"]
    );
}
