//! The repository's YAML files (`examples/`, `tests/bad-policies/`, `deploy/`…) and their
//! documents, as JSON values.

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

/// The path of `sub` in the repository.
pub fn repo_path(sub: &str) -> PathBuf {
    let tests_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate.parent().unwrap_or(tests_crate).join(sub)
}

/// The `.yaml` files of the repository's directory `sub`, sorted.
pub fn yaml_files(sub: &str) -> Vec<PathBuf> {
    let dir = repo_path(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The non-empty documents of the YAML stream `text`; panics naming `what` if one does not
/// parse.
pub fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The non-empty documents of the YAML file `path`.
pub fn yaml_file_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read YAML file");
    yaml_documents(&text, &path.display().to_string())
}
