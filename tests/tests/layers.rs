//! The delivery code's shape, checked on its source: the network layer
//! knows neither the store nor the plugins' WIT types, files and functions
//! stay small enough to take over, and no decision is taken on an error's
//! text. These read files only; they run in milliseconds.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    assert!(!out.is_empty(), "no sources under {}", dir.display());
    out
}

/// The text before a file's unit tests.
fn code(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
}

/// Functions longer than `max` lines: (line, name, length). rustfmt's
/// layout: a function's closing brace is alone on a line at its indent.
fn long_functions(text: &str, max: usize) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let after_vis = trimmed
            .strip_prefix("pub(crate) ")
            .or_else(|| trimmed.strip_prefix("pub(super) "))
            .or_else(|| trimmed.strip_prefix("pub "))
            .unwrap_or(trimmed);
        let after_async = after_vis.strip_prefix("async ").unwrap_or(after_vis);
        let Some(rest) = after_async.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{indent}}}");
        if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
            let length = end + 2;
            if length > max {
                out.push((i + 1, name, length));
            }
        }
    }
    out
}

#[test]
fn the_network_layer_knows_neither_the_store_nor_wit() {
    let net = root().join("host/src/deliver/net");
    for (path, text) in sources(&net) {
        for forbidden in [
            "crate::store",
            "crate::runtime",
            "crate::caps",
            "crate::executor",
            "wit::",
            "deliver::failure",
            "Cause::",
        ] {
            assert!(
                !code(&text).contains(forbidden),
                "{} uses {forbidden}",
                path.display()
            );
        }
    }
}

#[test]
fn delivery_files_and_functions_stay_small() {
    let deliver = root().join("host/src/deliver");
    let mut too_long = Vec::new();
    for (path, text) in sources(&deliver) {
        let lines = text.lines().count();
        if lines > 600 {
            too_long.push(format!("{}: {lines} lines", path.display()));
        }
        for (line, name, length) in long_functions(&text, 80) {
            too_long.push(format!(
                "{}:{line}: fn {name} is {length} lines",
                path.display()
            ));
        }
    }
    assert!(too_long.is_empty(), "{too_long:#?}");
}

#[test]
fn the_function_length_check_sees_long_functions() {
    let body = "    let x = 1;\n".repeat(85);
    let text = format!("impl A {{\n    pub(super) async fn long() {{\n{body}    }}\n}}\n");
    assert_eq!(
        long_functions(&text, 80),
        [(2, "long".to_string(), 87)],
        "the check must find what it forbids"
    );
    assert!(long_functions("fn short() {\n}\n", 80).is_empty());
}

#[test]
fn no_decision_is_taken_on_the_text_of_an_error() {
    let host = root().join("host/src");
    let mut found = Vec::new();
    for (path, text) in sources(&host) {
        for (i, line) in code(&text).lines().enumerate() {
            let l = line.trim();
            if l.starts_with("//") {
                continue;
            }
            let on_text = [
                "to_string().contains(",
                "to_string().starts_with(",
                "to_string().ends_with(",
                "to_string() ==",
                "e.contains(\"",
                "err.contains(\"",
                "error.contains(\"",
                "message.contains(\"",
                "message.starts_with(\"",
            ];
            if on_text.iter().any(|p| l.contains(p)) {
                found.push(format!("{}:{}: {l}", path.display(), i + 1));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}
