//! Equivalence functions e(r, r'): does a council member's result match the executor's?
//!
//! Results are output trees on disk. [`equivalent`] compares two trees under an
//! [`Equivalence`]: `ExactHash` wants the same files with the same bytes; `NumericTolerance`
//! wants the same files, and in each file the same tokens, where tokens that are both numbers
//! may differ by at most the absolute tolerance or the relative tolerance (either suffices),
//! as numpy's `isclose` does, and numpy arrays and safetensors files the same tensors, element
//! by element under the same tolerances ([`tensor`]); `Image` wants the same files, PNG images among them compared by
//! their pixels alone ([`image`]), the others byte for byte. Pure: no network, no clock. Used
//! by workers, not by the ledger.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gridwork_types::Equivalence;

pub mod image;
pub mod tensor;

/// Why two trees could not be compared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Reading a tree failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The verdict, with the first difference found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Equivalent.
    Same,
    /// Not equivalent, and why.
    Different(String),
}

impl Verdict {
    /// Whether the trees are equivalent.
    pub fn is_same(&self) -> bool {
        matches!(self, Verdict::Same)
    }
}

/// One entry of a tree as compared: a regular file (its path, to read), or anything else
/// (a link, by its target as text; a FIFO or device, by kind), which is never opened: a
/// link in another party's output must not make a judge read its own machine's files, nor a
/// FIFO make it wait forever.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    File(PathBuf),
    Link(PathBuf),
    Special,
}

fn files(root: &Path) -> Result<BTreeMap<String, Item>, VerifyError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| VerifyError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| VerifyError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            let io = |source| VerifyError::Io {
                path: path.display().to_string(),
                source,
            };
            // The entry's own type: a link is not followed.
            let kind = entry.file_type().map_err(io)?;
            if kind.is_dir() {
                stack.push((path, rel));
            } else if kind.is_file() {
                out.insert(rel, Item::File(path));
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(io)?;
                out.insert(rel, Item::Link(target));
            } else {
                out.insert(rel, Item::Special);
            }
        }
    }
    Ok(out)
}

/// Compares the trees at `a` and `b` under `e`.
pub fn equivalent(e: &Equivalence, a: &Path, b: &Path) -> Result<Verdict, VerifyError> {
    let (fa, fb) = (files(a)?, files(b)?);
    if fa.keys().ne(fb.keys()) {
        let only: Vec<&String> = fa
            .keys()
            .filter(|k| !fb.contains_key(*k))
            .chain(fb.keys().filter(|k| !fa.contains_key(*k)))
            .collect();
        return Ok(Verdict::Different(format!(
            "the file sets differ: {only:?}"
        )));
    }
    for (name, ia) in &fa {
        let (pa, pb) = match (ia, &fb[name]) {
            (Item::File(pa), Item::File(pb)) => (pa, pb),
            (a, b) if a == b => continue,
            _ => {
                return Ok(Verdict::Different(format!(
                    "{name} differs in kind or link target"
                )))
            }
        };
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| VerifyError::Io {
                path: p.display().to_string(),
                source,
            })
        };
        let (ba, bb) = (read(pa)?, read(pb)?);
        if ba == bb {
            continue;
        }
        match e {
            Equivalence::ExactHash {} => return Ok(Verdict::Different(format!("{name} differs"))),
            Equivalence::NumericTolerance { abs_ppb, rel_ppb } => {
                let abs = *abs_ppb as f64 / 1e9;
                let rel = *rel_ppb as f64 / 1e9;
                let why = match tensor::kind_of(name) {
                    Some(kind) => tensor::tensor_file_difference(kind, &ba, &bb, abs, rel),
                    None => numeric_difference(&ba, &bb, abs, rel),
                };
                if let Some(why) = why {
                    return Ok(Verdict::Different(format!("{name}: {why}")));
                }
            }
            Equivalence::Image {
                min_psnr_mdb,
                max_diff,
            } => {
                let why = if image::is_png_name(name) {
                    image::png_difference(&ba, &bb, f64::from(*min_psnr_mdb) / 1e3, *max_diff)
                } else {
                    Some("differs (not a PNG image: compared byte for byte)".to_string())
                };
                if let Some(why) = why {
                    return Ok(Verdict::Different(format!("{name}: {why}")));
                }
            }
        }
    }
    Ok(Verdict::Same)
}

/// One answer of a service as compared: the HTTP status, content type and body its server
/// gave.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The HTTP status.
    pub status: u16,
    /// The content type (empty for none).
    pub content_type: &'a str,
    /// The body.
    pub body: &'a [u8],
}

impl<'a> From<&'a gridwork_types::JudgedAnswer> for Answer<'a> {
    fn from(a: &'a gridwork_types::JudgedAnswer) -> Answer<'a> {
        Answer {
            status: a.status,
            content_type: &a.content_type,
            body: &a.body,
        }
    }
}

/// Compares two answers of a service under `e`: the status and content type must be the
/// same; the bodies agree byte for byte under `ExactHash`; under `NumericTolerance` every
/// number in them within the tolerance and all text between the numbers the same
/// ([`numeric_text_difference`]: JSON, server-sent events, plain text); under `Image` by their
/// pixels when both are PNG images, else byte for byte.
pub fn answers_equivalent(e: &Equivalence, a: Answer<'_>, b: Answer<'_>) -> Verdict {
    if a.status != b.status {
        return Verdict::Different(format!("status {} against {}", a.status, b.status));
    }
    if a.content_type != b.content_type {
        return Verdict::Different(format!(
            "content type `{}` against `{}`",
            a.content_type.escape_debug(),
            b.content_type.escape_debug()
        ));
    }
    if a.body == b.body {
        return Verdict::Same;
    }
    let why = match e {
        Equivalence::ExactHash {} => Some("the bodies differ".to_string()),
        Equivalence::NumericTolerance { abs_ppb, rel_ppb } => {
            numeric_text_difference(a.body, b.body, *abs_ppb as f64 / 1e9, *rel_ppb as f64 / 1e9)
        }
        Equivalence::Image {
            min_psnr_mdb,
            max_diff,
        } => {
            if a.body.starts_with(image::PNG_MAGIC) && b.body.starts_with(image::PNG_MAGIC) {
                image::png_difference(a.body, b.body, f64::from(*min_psnr_mdb) / 1e3, *max_diff)
            } else {
                Some("the bodies differ (not both PNG images: compared byte for byte)".into())
            }
        }
    };
    match why {
        Some(why) => Verdict::Different(why),
        None => Verdict::Same,
    }
}

/// A piece of a text as [`numeric_text_difference`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece<'a> {
    /// A number as written, and its value.
    Number(&'a [u8], f64),
    /// The text up to the next number.
    Text(&'a [u8]),
}

/// Cuts `text` into numbers (`-`, digits, an optional fraction and exponent: JSON's numbers)
/// and the text between them, lazily: a comparison stops at the first difference. A number
/// stands alone: one that begins or ends inside a word (`gpt2`, `v1`, `12px`, a hex digest,
/// an id) is text, the whole word, compared byte for byte.
struct Pieces<'a> {
    text: &'a [u8],
    /// Where the next search for a number starts.
    at: usize,
    /// Where the text not yet given starts.
    text_from: usize,
    /// A number found after text, given after it.
    number: Option<Piece<'a>>,
}

fn pieces(text: &[u8]) -> Pieces<'_> {
    Pieces {
        text,
        at: 0,
        text_from: 0,
        number: None,
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Pieces<'a> {
    fn digits(&self, mut i: usize) -> usize {
        while self.text.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    }

    /// The next number at or after `at`: its span and value.
    fn next_number(&mut self) -> Option<(usize, usize, f64)> {
        let text = self.text;
        let mut i = self.at;
        while i < text.len() {
            let digit = text[i].is_ascii_digit();
            let minus = text[i] == b'-' && text.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(digit || minus) {
                i += 1;
                continue;
            }
            // A minus after a word is a hyphen: the number starts at its digits.
            if minus && i > 0 && is_word(text[i - 1]) {
                i += 1;
                continue;
            }
            if digit && i > 0 && is_word(text[i - 1]) {
                // Inside a word: skip the rest of it.
                while i < text.len() && is_word(text[i]) {
                    i += 1;
                }
                continue;
            }
            let from = i;
            let mut end = self.digits(if minus { i + 1 } else { i });
            if text.get(end) == Some(&b'.') && text.get(end + 1).is_some_and(u8::is_ascii_digit) {
                end = self.digits(end + 1);
            }
            if matches!(text.get(end), Some(b'e' | b'E')) {
                let sign = usize::from(matches!(text.get(end + 1), Some(b'+' | b'-')));
                if text.get(end + 1 + sign).is_some_and(u8::is_ascii_digit) {
                    end = self.digits(end + 1 + sign);
                }
            }
            if text.get(end).is_some_and(|b| is_word(*b)) {
                // It runs into a word (`12px`, `3e`, `0x1f`): the whole word is text.
                i = end;
                while i < text.len() && is_word(text[i]) {
                    i += 1;
                }
                continue;
            }
            let value = std::str::from_utf8(&text[from..end])
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|v| v.is_finite());
            match value {
                Some(value) => {
                    self.at = end;
                    return Some((from, end, value));
                }
                None => i = end,
            }
        }
        self.at = text.len();
        None
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        if let Some(number) = self.number.take() {
            return Some(number);
        }
        let text = self.text;
        match self.next_number() {
            Some((from, end, value)) => {
                let number = Piece::Number(&text[from..end], value);
                let before = &text[self.text_from..from];
                self.text_from = end;
                if before.is_empty() {
                    Some(number)
                } else {
                    self.number = Some(number);
                    Some(Piece::Text(before))
                }
            }
            None if self.text_from < text.len() => {
                let rest = &text[self.text_from..];
                self.text_from = text.len();
                Some(Piece::Text(rest))
            }
            None => None,
        }
    }
}

/// The first difference beyond tolerance between two texts that hold numbers, if any: each
/// number within the absolute or the relative tolerance of the other's (either suffices, as
/// numpy's `isclose`), whole numbers on both sides (no fraction nor exponent: ids, counts,
/// indices) the same, the text between them byte for byte. Unlike the files of a job's
/// output (numbers between blanks and commas), a service's answer is read whole: the numbers
/// of a JSON document or a stream of events among the text around them.
pub fn numeric_text_difference(a: &[u8], b: &[u8], abs: f64, rel: f64) -> Option<String> {
    let (mut pa, mut pb) = (pieces(a), pieces(b));
    let shown = |p: &Piece<'_>| match p {
        Piece::Number(s, _) | Piece::Text(s) => {
            let s = String::from_utf8_lossy(s);
            s.chars().take(40).collect::<String>()
        }
    };
    for i in 0.. {
        let (x, y) = match (pa.next(), pb.next()) {
            (None, None) => return None,
            (Some(x), None) | (None, Some(x)) => {
                return Some(format!(
                    "piece {i}: one answer goes on (`{}`) where the other ends",
                    shown(&x).escape_debug()
                ))
            }
            (Some(x), Some(y)) => (x, y),
        };
        match (&x, &y) {
            (Piece::Number(xs, u), Piece::Number(ys, v)) => {
                // Whole numbers on both sides (ids, counts, indices) are exact.
                let whole = |s: &[u8]| !s.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
                let diff = (u - v).abs();
                let within = !(whole(xs) && whole(ys))
                    && (diff <= abs || diff <= rel * v.abs().max(u.abs()));
                if xs != ys && !within {
                    return Some(format!(
                        "piece {i}: {} and {} differ by {diff:e}",
                        String::from_utf8_lossy(xs),
                        String::from_utf8_lossy(ys)
                    ));
                }
            }
            (Piece::Text(s), Piece::Text(t)) if s == t => {}
            _ => {
                return Some(format!(
                    "piece {i}: `{}` and `{}` differ",
                    shown(&x).escape_debug(),
                    shown(&y).escape_debug()
                ));
            }
        }
    }
    None
}

/// The first difference beyond tolerance between two texts of numbers, if any.
fn numeric_difference(a: &[u8], b: &[u8], abs: f64, rel: f64) -> Option<String> {
    let (ta, tb) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    let split = |s: &str| {
        s.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (wa, wb) = (split(&ta), split(&tb));
    if wa.len() != wb.len() {
        return Some(format!("{} tokens against {}", wa.len(), wb.len()));
    }
    for (i, (x, y)) in wa.iter().zip(&wb).enumerate() {
        if x == y {
            continue;
        }
        match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(u), Ok(v)) if u.is_finite() && v.is_finite() => {
                let diff = (u - v).abs();
                if diff > abs && diff > rel * v.abs().max(u.abs()) {
                    return Some(format!("token {i}: {x} and {y} differ by {diff:e}"));
                }
            }
            _ => return Some(format!("token {i}: `{x}` and `{y}` differ")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let bytes: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_bytes())).collect();
        tree_of_bytes(&bytes)
    }

    fn tree_of_bytes(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        dir
    }

    fn json(body: &str) -> Answer<'_> {
        Answer {
            status: 200,
            content_type: "application/json",
            body: body.as_bytes(),
        }
    }

    /// A model's answers read as numbers among text: embeddings that differ in their last
    /// digits agree; a number beyond the tolerance, a word, a key or a status that differs
    /// does not.
    #[test]
    fn answers_agree_when_their_numbers_do_and_their_text_is_the_same() {
        let e = Equivalence::NumericTolerance {
            abs_ppb: 1_000,
            rel_ppb: 1_000_000,
        };
        let a = r#"{"model":"gpt2","data":[{"embedding":[0.12345678,-1.5e-3,7]}]}"#;
        let near = r#"{"model":"gpt2","data":[{"embedding":[0.12345691,-1.5000001e-3,7.0]}]}"#;
        assert!(answers_equivalent(&e, json(a), json(near)).is_same());
        for other in [
            r#"{"model":"gpt2","data":[{"embedding":[0.125,-1.5e-3,7]}]}"#,
            r#"{"model":"gpt3","data":[{"embedding":[0.12345678,-1.5e-3,7]}]}"#,
            r#"{"model":"gpt2","data":[{"embedding":[0.12345678,-1.5e-3]}]}"#,
            r#"{"model":"gpt2","data":[{"embeddinG":[0.12345678,-1.5e-3,7]}]}"#,
            r#"{"model":"gpt2","data":[{"embedding":[0.12345678,1.5e-3,7]}]}"#,
        ] {
            assert!(
                !answers_equivalent(&e, json(a), json(other)).is_same(),
                "{other}"
            );
        }
        let failed = Answer {
            status: 500,
            ..json(a)
        };
        assert!(!answers_equivalent(&e, json(a), failed).is_same());
        let typed = Answer {
            content_type: "text/plain",
            ..json(a)
        };
        assert!(!answers_equivalent(&e, json(a), typed).is_same());
        // Exact wants the same bytes.
        assert!(!answers_equivalent(&Equivalence::ExactHash {}, json(a), json(near)).is_same());
        assert!(answers_equivalent(&Equivalence::ExactHash {}, json(a), json(a)).is_same());
        // A stream of events, numbers within tolerance.
        let sse = Answer {
            status: 200,
            content_type: "text/event-stream",
            body: b"data: {\"p\": 0.25}\n\ndata: [DONE]\n\n",
        };
        let sse_near = Answer {
            body: b"data: {\"p\": 0.2500001}\n\ndata: [DONE]\n\n",
            ..sse
        };
        assert!(answers_equivalent(&e, sse, sse_near).is_same());
    }

    /// Digits inside words are text, to the word's end: `v1` and `v2` are different words,
    /// and so are two ids or digests that differ in a digit, not close numbers (a review found
    /// `a12345678` read as `a1` and a number).
    #[test]
    fn digits_inside_words_are_text() {
        let e = Equivalence::NumericTolerance {
            abs_ppb: 10_000_000_000,
            rel_ppb: 0,
        };
        assert!(numeric_text_difference(b"model v1", b"model v2", 10.0, 0.0).is_some());
        for (a, b) in [
            (&b"id a12345678"[..], &b"id a12345679"[..]),
            (b"1234567a", b"1234568a"),
            (b"12px", b"13px"),
            (b"0x1f", b"0x2f"),
        ] {
            assert!(
                numeric_text_difference(a, b, 10.0, 1.0).is_some(),
                "{} {}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            );
        }
        // A hyphen after a word is text; the number after it still a number.
        assert!(numeric_text_difference(b"top-1 0.5", b"top-1 0.6", 0.2, 0.0).is_none());
        assert!(numeric_text_difference(b"x -1", b"x -1.5", 1.0, 0.0).is_none());
        // Whole numbers (ids, counts, indices) are exact; a float is within the tolerance.
        assert!(numeric_text_difference(b"id 12345678", b"id 12345679", 0.0, 1e-3).is_some());
        assert!(numeric_text_difference(b"x 12345678.0", b"x 12345679", 0.0, 1e-3).is_none());
        // One answer longer than the other differs, however close what they share.
        assert!(numeric_text_difference(b"[1, 2]", b"[1, 2, 3]", 10.0, 1.0).is_some());
        assert!(numeric_text_difference(b"x 1.0", b"x 2", 10.0, 0.0).is_none());
        assert!(numeric_text_difference(b"x 1", b"x 2", 10.0, 0.0).is_some());
        assert!(answers_equivalent(&e, json("[1, 2]"), json("[1.5, 2]")).is_same());
        assert!(!answers_equivalent(&e, json("[1, 2]"), json("{1, 2}")).is_same());
    }

    #[test]
    fn exact_hash_wants_identical_bytes() {
        let a = tree(&[("out/loss.txt", "0.5\n")]);
        let b = tree(&[("out/loss.txt", "0.5\n")]);
        let c = tree(&[("out/loss.txt", "0.50001\n")]);
        let e = Equivalence::ExactHash {};
        assert!(equivalent(&e, a.path(), b.path()).unwrap().is_same());
        assert!(!equivalent(&e, a.path(), c.path()).unwrap().is_same());
    }

    #[test]
    fn numeric_tolerance_accepts_small_differences_only() {
        let a = tree(&[("w.txt", "weights 1.000000, 2.0\nstep 7")]);
        let near = tree(&[("w.txt", "weights 1.0000004, 2.0\nstep 7")]);
        let far = tree(&[("w.txt", "weights 1.1, 2.0\nstep 7")]);
        let word = tree(&[("w.txt", "weights 1.0, 2.0\nstep 8")]);
        let e = Equivalence::NumericTolerance {
            abs_ppb: 1_000,
            rel_ppb: 0,
        };
        assert!(equivalent(&e, a.path(), near.path()).unwrap().is_same());
        assert!(!equivalent(&e, a.path(), far.path()).unwrap().is_same());
        assert!(!equivalent(&e, a.path(), word.path()).unwrap().is_same());
    }

    /// Under `Image`, frames whose pixels agree are the same result whatever their metadata
    /// says; any other file must match byte for byte.
    #[test]
    fn image_equivalence_compares_frames_by_pixels_and_other_files_by_bytes() {
        let frame = |note: &str| {
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, 2, 2);
            enc.set_color(png::ColorType::Grayscale);
            enc.add_text_chunk("Date".into(), note.into()).unwrap();
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0, 64, 128, 255]).unwrap();
            drop(w);
            out
        };
        let write = tree_of_bytes;
        let a = write(&[("frames/0001.png", &frame("Monday")), ("log.txt", b"ok\n")]);
        let b = write(&[("frames/0001.png", &frame("Tuesday")), ("log.txt", b"ok\n")]);
        let c = write(&[("frames/0001.png", &frame("Monday")), ("log.txt", b"ok!\n")]);
        let e = Equivalence::Image {
            min_psnr_mdb: 40_000,
            max_diff: 8,
        };
        assert_eq!(equivalent(&e, a.path(), b.path()).unwrap(), Verdict::Same);
        assert!(!equivalent(&Equivalence::ExactHash {}, a.path(), b.path())
            .unwrap()
            .is_same());
        let v = equivalent(&e, a.path(), c.path()).unwrap();
        assert!(
            matches!(&v, Verdict::Different(why) if why.starts_with("log.txt")),
            "{v:?}"
        );
    }

    #[test]
    fn different_file_sets_are_different() {
        let a = tree(&[("a.txt", "1")]);
        let b = tree(&[("a.txt", "1"), ("b.txt", "2")]);
        let v = equivalent(&Equivalence::ExactHash {}, a.path(), b.path()).unwrap();
        assert!(matches!(v, Verdict::Different(why) if why.contains("b.txt")));
    }

    /// Another party's output holds a link to a file of the judge's machine, and a FIFO: the
    /// judge compares the link as a link (its target), never reading through it, and never
    /// opens the FIFO, so it neither leaks nor hangs.
    #[test]
    fn links_and_fifos_are_compared_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "the judge's key\n").unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                d.join("pipe"),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
        }
        std::os::unix::fs::symlink(&secret, a.join("key")).unwrap();
        std::os::unix::fs::symlink(&secret, b.join("key")).unwrap();
        std::fs::write(c.join("key"), "the judge's key\n").unwrap();
        let e = Equivalence::ExactHash {};
        assert_eq!(equivalent(&e, &a, &b).unwrap(), Verdict::Same);
        assert!(!equivalent(&e, &a, &c).unwrap().is_same());
    }
}
