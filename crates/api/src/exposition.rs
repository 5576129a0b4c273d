//! The Prometheus text exposition format (version 0.0.4) that the node's and the worker's
//! `/metrics` speak.
//!
//! A key design decision: a small writer rather than a metrics library. Each program keeps
//! its counts in its own types (atomics, a mutex around a map) and writes them out here when
//! scraped, so a scrape costs one pass over a few dozen numbers and nothing registers itself
//! in global state.
//!
//! # Invariants
//!
//! - Every family is written whole, `# HELP` and `# TYPE` first and then all its samples, as
//!   the format requires: callers write one family at a time ([`Exposition::family`], then
//!   its samples).
//! - Label values are escaped (`\`, `"` and newlines); metric and label names are the
//!   caller's constants and must be valid names.
//! - A [`Histogram`] is written with cumulative `_bucket{le="..."}` samples ending in
//!   `le="+Inf"`, then `_sum` and `_count`.

use std::fmt::Write;

/// The `Content-Type` of an exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (restarts from zero when the program does).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value: integers are written exactly (amounts in base units pass `u64`),
/// floats as Prometheus reads them (`+Inf`, `-Inf`, `NaN`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An exact count.
    Int(u128),
    /// A measurement.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(u128::from(v))
    }
}

impl From<u128> for Value {
    fn from(v: u128) -> Self {
        Value::Int(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as u128)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) if v.is_nan() => f.write_str("NaN"),
            Value::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

/// Observations counted into fixed buckets, with their sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending; `+Inf` is implied.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is above every bound.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Upper bounds in seconds for request and run latencies: 1 ms to 60 s.
    pub const LATENCY_SECONDS: &'static [f64] = &[
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];

    /// Upper bounds in seconds for task runs: 1 s to 1 day.
    pub const RUN_SECONDS: &'static [f64] = &[
        1.0,
        5.0,
        15.0,
        60.0,
        300.0,
        900.0,
        3600.0,
        4.0 * 3600.0,
        24.0 * 3600.0,
    ];

    /// An empty histogram over `bounds` (ascending, finite).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, value: f64) {
        let bucket = self.bounds.partition_point(|b| *b < value);
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum.
    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// A text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts family `name`: its `# HELP` and `# TYPE` lines. Its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
        self
    }

    /// One sample of the current family.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Into<Value>,
    ) -> &mut Self {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", value.into());
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        value: impl Into<Value>,
    ) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// The samples of one labelled histogram of family `name` (started with
    /// [`Kind::Histogram`]).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = match h.bounds.get(i) {
                Some(bound) => Value::Float(*bound).to_string(),
                None => "+Inf".to_string(),
            };
            self.out.push_str(&bucket);
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count)
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (i, (name, value)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::new();
        e.family("x_total", Kind::Counter, "Back\\slash\nand newline.")
            .sample("x_total", &[("route", "a\"b\\c\nd")], 3u64);
        assert_eq!(
            e.finish(),
            "# HELP x_total Back\\\\slash\\nand newline.\n\
             # TYPE x_total counter\n\
             x_total{route=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        static BOUNDS: &[f64] = &[0.25, 1.0];
        let mut h = Histogram::new(BOUNDS);
        for v in [0.125, 0.25, 0.5, 2.0, 3.0] {
            h.observe(v);
        }
        let mut e = Exposition::new();
        e.family("lat_seconds", Kind::Histogram, "Latency.")
            .histogram("lat_seconds", &[("route", "/x")], &h);
        assert_eq!(
            e.finish(),
            "# HELP lat_seconds Latency.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{route=\"/x\",le=\"0.25\"} 2\n\
             lat_seconds_bucket{route=\"/x\",le=\"1\"} 3\n\
             lat_seconds_bucket{route=\"/x\",le=\"+Inf\"} 5\n\
             lat_seconds_sum{route=\"/x\"} 5.875\n\
             lat_seconds_count{route=\"/x\"} 5\n"
        );
    }

    #[test]
    fn large_amounts_and_special_floats_are_written_as_prometheus_reads_them() {
        let mut e = Exposition::new();
        e.single("a_total", Kind::Counter, "A.", u128::MAX)
            .single("b", Kind::Gauge, "B.", f64::INFINITY)
            .single("c", Kind::Gauge, "C.", 0.25);
        let text = e.finish();
        assert!(text.contains(&format!("a_total {}\n", u128::MAX)), "{text}");
        assert!(text.contains("b +Inf\n"), "{text}");
        assert!(text.contains("c 0.25\n"), "{text}");
    }
}
