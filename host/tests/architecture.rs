//! ARCHITECTURE.md stays true: every file path, `Type::member`, `module::item` and
//! identifier it names in backticks exists in the project's sources. A rename or a move
//! that leaves the document behind fails here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Folders of the project the document may name (besides the root's own files).
const ROOTS: &[&str] = &[
    "host",
    "gateway",
    "nats",
    "tests",
    "components",
    "scripts",
    "docs",
    "fuzz",
    "wit",
];

/// What the project holds: its files (paths from the root) and the text of its sources.
struct Project {
    paths: Vec<String>,
    sources: String,
}

impl Project {
    fn read(root: &Path) -> Self {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(root).expect("root") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_file() || ROOTS.contains(&name) {
                walk(&path, &mut files);
            }
        }
        let mut paths = Vec::new();
        let mut sources = String::new();
        for file in files {
            let relative = file.strip_prefix(root).expect("under root");
            paths.push(relative.to_string_lossy().into_owned());
            let source = ["rs", "toml", "py", "wit", "sh", "js", "just"]
                .iter()
                .any(|e| file.extension().is_some_and(|x| x == *e))
                || file.file_name().is_some_and(|n| n == "justfile");
            // Not this checker's own text, whose examples of what is gone would be found.
            if source && !file.ends_with("host/tests/architecture.rs") {
                sources.push_str(&std::fs::read_to_string(&file).unwrap_or_default());
                sources.push('\n');
            }
        }
        Self { paths, sources }
    }

    /// A file or folder whose path is `named` or ends with `/named`.
    fn has_path(&self, named: &str) -> bool {
        let named = named.trim_end_matches('/');
        self.paths.iter().any(|p| {
            let mut at = p.as_str();
            loop {
                if at == named || at.starts_with(&format!("{named}/")) {
                    return true;
                }
                match at.split_once('/') {
                    Some((_, rest)) => at = rest,
                    None => return false,
                }
            }
        })
    }

    /// `word` as a whole word somewhere in the sources.
    fn has_word(&self, word: &str) -> bool {
        self.sources.match_indices(word).any(|(i, _)| {
            let before = self.sources[..i].chars().next_back();
            let after = self.sources[i + word.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        })
    }

    /// `name` declared as a type, trait or function (or an enum variant or constant).
    fn declares(&self, name: &str) -> bool {
        let items = [
            "struct", "enum", "trait", "type", "fn", "const", "mod", "static",
        ];
        items.iter().any(|i| self.has_word(&format!("{i} {name}")))
            || self.sources.lines().any(|l| {
                let l = l.trim_start();
                let field = ["pub(crate) ", "pub(super) ", "pub "]
                    .iter()
                    .find_map(|p| l.strip_prefix(p))
                    .unwrap_or(l);
                let variant = l.strip_prefix(name).is_some_and(|rest| {
                    rest.starts_with(',') || rest.starts_with(" {") || rest.starts_with('(')
                });
                variant || field.strip_prefix(name).is_some_and(|r| r.starts_with(':'))
            })
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn walk(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "target" || name.starts_with('.') || name == "node_modules" {
        return;
    }
    out.push(path.to_path_buf());
    for entry in std::fs::read_dir(path).into_iter().flatten() {
        walk(&entry.expect("entry").path(), out);
    }
}

/// The inline code spans of `doc`, fenced blocks left out.
fn spans(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        out.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
    }
    out
}

/// The workspace's crates, as code names them.
const CRATES: &[&str] = &[
    "panal",
    "panal_gateway",
    "panal_nats",
    "panal_sdk",
    "panal_tests",
];

/// What is wrong with one span, if it names something the project lacks.
fn missing(project: &Project, span: &str) -> Option<String> {
    let path_like = span.contains('/') || span.ends_with(".rs") || span.ends_with(".md");
    let plain = span.chars().all(|c| is_ident(c) || c == ':');
    // `wasi:http/handler` and the like are WIT names, not paths.
    let wit = span.contains(':') && !span.contains("::");
    if path_like && !wit && !span.starts_with('/') && !span.contains(char::is_whitespace) {
        let odd = span.contains(['$', '*', '…', '{', '<']) || span.starts_with(char::is_uppercase);
        return (!odd && !project.has_path(span)).then(|| format!("no file or folder `{span}`"));
    }
    if !plain || span.is_empty() {
        return None;
    }
    let parts: Vec<&str> = span.split("::").collect();
    let [.., owner, member] = parts.as_slice() else {
        return (!project.has_word(span)).then(|| format!("`{span}` is named nowhere"));
    };
    let used = project.has_word(&format!("{owner}::{member}"));
    if owner.starts_with(char::is_uppercase) && project.declares(owner) {
        return (!project.declares(member) && !used)
            .then(|| format!("`{span}`: `{owner}` declares no `{member}`"));
    }
    if owner.starts_with(char::is_lowercase) {
        let module = CRATES.contains(owner)
            || project.has_path(&format!("{owner}.rs"))
            || project.has_path(owner);
        return (!module || !project.declares(member))
            .then(|| format!("`{span}`: no module `{owner}` with `{member}`"));
    }
    (!project.has_word(owner) || !project.has_word(member))
        .then(|| format!("`{span}` is named nowhere"))
}

#[test]
fn every_path_and_symbol_architecture_md_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let project = Project::read(&root);
    let mut seen = HashSet::new();
    let wrong: Vec<String> = spans(&doc)
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .filter_map(|s| missing(&project, &s))
        .collect();
    assert!(
        wrong.is_empty(),
        "ARCHITECTURE.md names what the project does not have:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_catches_what_is_gone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let project = Project::read(&root);
    for gone in [
        "host/src/nowhere.rs",
        "Deployed::no_such_method",
        "registry::no_such_fn",
        "CallContext::no_such_field",
        "no_such_identifier_anywhere",
    ] {
        assert!(missing(&project, gone).is_some(), "{gone}");
    }
    for there in [
        "registry/version.rs",
        "Deployed::store",
        "CallContext::depth",
        "panal_nats::kv",
        "call_http",
        "Failure",
        "wasi:http/handler",
    ] {
        assert_eq!(missing(&project, there), None, "{there}");
    }
}
