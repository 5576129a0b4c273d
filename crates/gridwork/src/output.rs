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

/// A time in ms since the Unix epoch as people read it: `2026-12-05 21:26:35.120 UTC`.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
        assert_eq!(utc(1_796_506_000_123), "2026-12-05 21:26:40.123 UTC");
    }
}
