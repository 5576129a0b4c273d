//! Printing: one JSON document with `--json`, readable text without.

use serde::Serialize;

/// Prints `value` as JSON, or `text` for people.
pub(crate) fn emit<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

/// Prints an error: a JSON error document on stdout with `--json`, a line on stderr otherwise.
pub(crate) fn print_error(err: &anyhow::Error, json: bool) {
    let code = err
        .downcast_ref::<gridwork_client::ClientError>()
        .and_then(|e| e.code().map(str::to_string))
        .unwrap_or_else(|| "error".to_string());
    let message = format!("{err:#}");
    if json {
        let doc = serde_json::json!({ "error": { "code": code, "message": message } });
        println!("{doc}");
    } else {
        eprintln!("error: {message}");
    }
}

/// A table of label/value rows, aligned.
pub(crate) fn rows(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}
