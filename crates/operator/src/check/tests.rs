use serde_json::Value;

use super::Inputs;
use super::documents::split_documents;
use super::read::read_text;

#[test]
fn documents_keep_their_line_numbers() {
    let text = "# comment\n---\na: 1\n---\n\n# x\nb: 2\n...\n---\n";
    let docs = split_documents(text);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].0, 3);
    assert_eq!(docs[1].0, 7);
    let v: Value = serde_yaml_ng::from_str(&docs[1].1).unwrap();
    assert_eq!(v["b"], 2);
}

#[test]
fn yaml_errors_point_at_the_line_in_the_file() {
    let mut inputs = Inputs::default();
    read_text(
        "f.yaml",
        "kind: ConfigMap\n---\nb: [1,\n",
        "default",
        &mut inputs,
    );
    assert_eq!(inputs.errors, 1, "{:?}", inputs.log);
    assert!(
        inputs.log[1].starts_with("error: f.yaml:4:1: invalid YAML: "),
        "{:?}",
        inputs.log
    );
}

#[test]
fn content_after_the_document_marker_is_read() {
    let docs = split_documents("--- {kind: Pod}\n");
    let v: Value = serde_yaml_ng::from_str(&docs[0].1).unwrap();
    assert_eq!(v["kind"], "Pod");
    assert_eq!(docs[0].0, 1);
}
