//! Splitting a YAML stream into its documents.

/// The documents of a YAML stream: `(line of the document's first line, text)`. The text is
/// preceded by blank lines so that parser positions are positions in the file.
pub(super) fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let is_start = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        let is_end = line == "..." || line.starts_with("... ");
        if is_start || is_end {
            docs.push((start, std::mem::take(&mut current)));
            current = "\n".repeat(i);
            start = i;
            if is_start {
                // Keep content after the marker (`--- {a: 1}`) at its column.
                current.push_str("   ");
                current.push_str(&line[3..]);
            }
            current.push('\n');
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs.into_iter()
        .filter(|(_, doc)| {
            doc.lines().any(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            })
        })
        .map(|(start, doc)| {
            // Report the first line with content, not the `---` or a comment above it.
            let first = doc
                .lines()
                .enumerate()
                .skip(start)
                .find(|(_, l)| {
                    let t = l.trim();
                    !t.is_empty() && !t.starts_with('#') && t != "---"
                })
                .map_or(start, |(i, _)| i);
            (first + 1, doc)
        })
        .collect()
}
