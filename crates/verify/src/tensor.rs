//! Tensors compared element by element: what a training job's council asks of weights and
//! checkpoints.
//!
//! Under `NumericTolerance`, numpy arrays (`.npy`) and safetensors files (`.safetensors`) are
//! read as tensors rather than as text: the same names, element types and shapes, and each
//! pair of floating-point elements within the absolute or the relative tolerance (either
//! suffices, as numpy's `isclose` has it; two NaNs agree, as a run that diverges the same way
//! everywhere should); integers and booleans exactly. A safetensors file's free-form
//! `__metadata__` (a timestamp, a host name) is never compared.
//!
//! The bytes are another party's: every length and offset is checked against the file before
//! anything is read or allocated, and a file that does not parse is a difference, never a
//! panic.

use std::collections::BTreeMap;

/// An element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    Float { bytes: usize, bf16: bool },
    Int { bytes: usize, signed: bool },
    Bool,
}

impl Dtype {
    /// As numpy names it: `float32`, `int16`, `bfloat16`, `bool`.
    fn name(self) -> String {
        match self {
            Dtype::Float { bf16: true, .. } => "bfloat16".into(),
            Dtype::Float { bytes, .. } => format!("float{}", bytes * 8),
            Dtype::Int {
                bytes,
                signed: true,
            } => format!("int{}", bytes * 8),
            Dtype::Int { bytes, .. } => format!("uint{}", bytes * 8),
            Dtype::Bool => "bool".into(),
        }
    }

    fn size(self) -> usize {
        match self {
            Dtype::Float { bytes, .. } | Dtype::Int { bytes, .. } => bytes,
            Dtype::Bool => 1,
        }
    }
}

/// One tensor: its element type, byte order, shape and the bytes of its elements.
#[derive(Debug)]
struct Tensor<'a> {
    dtype: Dtype,
    big_endian: bool,
    shape: Vec<u64>,
    data: &'a [u8],
}

/// The elements `shape` holds, if the count fits.
fn count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
}

/// A numpy array file: its one tensor.
fn parse_npy(bytes: &[u8]) -> Result<Tensor<'_>, String> {
    let bad = |why: &str| format!("not a numpy array: {why}");
    let rest = bytes
        .strip_prefix(b"\x93NUMPY")
        .ok_or_else(|| bad("no magic"))?;
    let (&major, rest) = rest.split_first().ok_or_else(|| bad("short"))?;
    let rest = rest.get(1..).ok_or_else(|| bad("short"))?;
    let (len, rest) = match major {
        1 => {
            let b = rest.get(..2).ok_or_else(|| bad("short"))?;
            (usize::from(u16::from_le_bytes([b[0], b[1]])), &rest[2..])
        }
        2 | 3 => {
            let b = rest.get(..4).ok_or_else(|| bad("short"))?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            (len, &rest[4..])
        }
        v => return Err(bad(&format!("format version {v}"))),
    };
    let header = rest.get(..len).ok_or_else(|| bad("header past the end"))?;
    let data = &rest[len..];
    let header = std::str::from_utf8(header).map_err(|_| bad("header not text"))?;
    // Exactly the three keys, each once: numpy reads the header as a Python literal, where a
    // key given twice takes its last value, so a second `fortran_order` or `shape` would
    // load the same bytes transposed or reshaped while a judge read the first.
    let mut keys: Vec<&str> = header_keys(header);
    keys.sort_unstable();
    if keys != ["descr", "fortran_order", "shape"] {
        return Err(bad(&format!(
            "its header has the keys {keys:?}; a numpy array has descr, fortran_order and shape, once each"
        )));
    }
    let value = |key: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or_else(|| bad(&format!("no {key}")))?;
        let after = header[at + key.len() + 2..].trim_start();
        after
            .strip_prefix(':')
            .map(str::trim_start)
            .ok_or_else(|| bad(&format!("{key} has no value")))
    };
    let descr = value("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| bad("descr is not a simple type (records are not compared)"))?;
    if value("fortran_order")?.starts_with("True") {
        return Err(bad("Fortran order (save it C-ordered)"));
    }
    let shape = value("shape")?;
    let shape = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("shape"))?;
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<u64>().map_err(|_| bad("shape")))
        .collect::<Result<Vec<_>, _>>()?;
    let (big_endian, kind) = match descr.chars().next() {
        Some('>') => (true, &descr[1..]),
        Some('<' | '|' | '=') => (false, &descr[1..]),
        _ => return Err(bad("descr")),
    };
    let dtype = match kind {
        "f2" => Dtype::Float {
            bytes: 2,
            bf16: false,
        },
        "f4" => Dtype::Float {
            bytes: 4,
            bf16: false,
        },
        "f8" => Dtype::Float {
            bytes: 8,
            bf16: false,
        },
        "i1" | "i2" | "i4" | "i8" => Dtype::Int {
            bytes: kind[1..].parse().map_err(|_| bad("descr"))?,
            signed: true,
        },
        "u1" | "u2" | "u4" | "u8" => Dtype::Int {
            bytes: kind[1..].parse().map_err(|_| bad("descr"))?,
            signed: false,
        },
        "b1" => Dtype::Bool,
        other => return Err(bad(&format!("element type {other} is not compared"))),
    };
    let need = count(&shape)
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .ok_or_else(|| bad("shape too large"))?;
    if need != data.len() as u64 {
        return Err(bad(&format!(
            "{} bytes of elements where the shape needs {need}",
            data.len()
        )));
    }
    Ok(Tensor {
        dtype,
        big_endian,
        shape,
        data,
    })
}

/// The longest safetensors header read, as the reference loader has it.
const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;
/// The most dimensions a tensor may have.
const MAX_RANK: usize = 64;

/// One tensor as a safetensors header describes it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    dtype: String,
    #[serde(deserialize_with = "bounded_shape")]
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A shape of at most [`MAX_RANK`] dimensions, refused as soon as it is longer (a stranger's
/// header must not make a judge allocate what it likes).
fn bounded_shape<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    struct Shape;
    impl<'de> serde::de::Visitor<'de> for Shape {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a shape of at most {MAX_RANK} dimensions")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut dims = Vec::new();
            while let Some(d) = seq.next_element::<u64>()? {
                if dims.len() == MAX_RANK {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_RANK} dimensions"
                    )));
                }
                dims.push(d);
            }
            Ok(dims)
        }
    }
    d.deserialize_seq(Shape)
}

/// A safetensors header: its tensors by name (each name once), its metadata a map of strings.
struct Header(BTreeMap<String, Entry>);

impl<'de> serde::Deserialize<'de> for Header {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Header, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Header;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a safetensors header")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Header, A::Error> {
                let mut tensors = BTreeMap::new();
                let mut metadata = false;
                while let Some(name) = map.next_key::<String>()? {
                    if name == "__metadata__" {
                        if std::mem::replace(&mut metadata, true) {
                            return Err(serde::de::Error::custom("__metadata__ twice"));
                        }
                        map.next_value::<BTreeMap<String, String>>()?;
                        continue;
                    }
                    let entry = map.next_value::<Entry>()?;
                    if tensors.insert(name.clone(), entry).is_some() {
                        return Err(serde::de::Error::custom(format!("{name} twice")));
                    }
                }
                Ok(Header(tensors))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The keys of a numpy header: each `'name'` followed by a colon.
fn header_keys(header: &str) -> Vec<&str> {
    let mut keys = Vec::new();
    let mut rest = header;
    while let Some(open) = rest.find('\'') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('\'') else {
            break;
        };
        let (word, tail) = (&after[..close], &after[close + 1..]);
        if tail.trim_start().starts_with(':') {
            keys.push(word);
        }
        rest = tail;
    }
    keys
}

/// A safetensors file's tensors, by name, as the reference loader accepts them: a header of
/// at most 100 MB, each name once, data regions that tile the data exactly (sorted,
/// contiguous, from 0 to its end).
fn parse_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, Tensor<'_>>, String> {
    let bad = |why: &str| format!("not a safetensors file: {why}");
    let len = bytes.get(..8).ok_or_else(|| bad("short"))?;
    let len = u64::from_le_bytes(len.try_into().map_err(|_| bad("short"))?);
    if len > MAX_SAFETENSORS_HEADER {
        return Err(bad(&format!(
            "a header of {len} bytes; at most {MAX_SAFETENSORS_HEADER}"
        )));
    }
    let header_end = 8u64
        .checked_add(len)
        .filter(|&e| e <= bytes.len() as u64)
        .ok_or_else(|| bad("header past the end"))? as usize;
    let Header(header) =
        serde_json::from_slice(&bytes[8..header_end]).map_err(|e| bad(&e.to_string()))?;
    let data = &bytes[header_end..];
    let mut regions: Vec<(u64, u64)> = header
        .values()
        .map(|e| (e.data_offsets[0], e.data_offsets[1]))
        .collect();
    regions.sort_unstable();
    let mut at = 0;
    for (start, end) in regions {
        if start != at || end < start {
            return Err(bad("data regions overlap, leave gaps or run backwards"));
        }
        at = end;
    }
    if at != data.len() as u64 {
        return Err(bad(&format!(
            "the tensors cover {at} bytes of {} bytes of data",
            data.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (name, e) in header {
        let dtype = match e.dtype.as_str() {
            "F64" => Dtype::Float {
                bytes: 8,
                bf16: false,
            },
            "F32" => Dtype::Float {
                bytes: 4,
                bf16: false,
            },
            "F16" => Dtype::Float {
                bytes: 2,
                bf16: false,
            },
            "BF16" => Dtype::Float {
                bytes: 2,
                bf16: true,
            },
            "I64" => Dtype::Int {
                bytes: 8,
                signed: true,
            },
            "I32" => Dtype::Int {
                bytes: 4,
                signed: true,
            },
            "I16" => Dtype::Int {
                bytes: 2,
                signed: true,
            },
            "I8" => Dtype::Int {
                bytes: 1,
                signed: true,
            },
            "U64" => Dtype::Int {
                bytes: 8,
                signed: false,
            },
            "U32" => Dtype::Int {
                bytes: 4,
                signed: false,
            },
            "U16" => Dtype::Int {
                bytes: 2,
                signed: false,
            },
            "U8" => Dtype::Int {
                bytes: 1,
                signed: false,
            },
            "BOOL" => Dtype::Bool,
            other => return Err(bad(&format!("{name}: element type {other:?}"))),
        };
        let [start, end] = e.data_offsets;
        let need = count(&e.shape).and_then(|n| n.checked_mul(dtype.size() as u64));
        if need != Some(end - start) {
            return Err(bad(&format!("{name}: its bytes do not match its shape")));
        }
        out.insert(
            name,
            Tensor {
                dtype,
                big_endian: false,
                shape: e.shape,
                data: &data[start as usize..end as usize],
            },
        );
    }
    Ok(out)
}

/// Element `i` of `t` as a float (floats) or an exact integer (the rest).
enum Element {
    Float(f64),
    Exact(i128),
}

fn element(t: &Tensor<'_>, i: usize) -> Element {
    let size = t.dtype.size();
    let raw = &t.data[i * size..(i + 1) * size];
    let mut buf = [0u8; 8];
    // As little-endian, whatever the file's order.
    for (k, &b) in raw.iter().enumerate() {
        let at = if t.big_endian { size - 1 - k } else { k };
        buf[at] = b;
    }
    let bits = u64::from_le_bytes(buf);
    match t.dtype {
        Dtype::Float { bytes: 8, .. } => Element::Float(f64::from_bits(bits)),
        Dtype::Float { bytes: 4, .. } => Element::Float(f64::from(f32::from_bits(bits as u32))),
        Dtype::Float { bf16: true, .. } => {
            Element::Float(f64::from(f32::from_bits((bits as u32) << 16)))
        }
        Dtype::Float { .. } => Element::Float(half_to_f64(bits as u16)),
        Dtype::Int {
            bytes,
            signed: true,
        } => {
            let shift = 64 - 8 * bytes as u32;
            Element::Exact(i128::from(((bits << shift) as i64) >> shift))
        }
        Dtype::Int { .. } | Dtype::Bool => Element::Exact(i128::from(bits)),
    }
}

/// An IEEE 754 half-precision value.
fn half_to_f64(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// The first difference between two tensors beyond tolerance, if any.
fn tensor_difference(a: &Tensor<'_>, b: &Tensor<'_>, abs: f64, rel: f64) -> Option<String> {
    if a.dtype != b.dtype || a.shape != b.shape {
        return Some(format!(
            "{} {:?} against {} {:?}",
            a.dtype.name(),
            a.shape,
            b.dtype.name(),
            b.shape
        ));
    }
    let n = a.data.len() / a.dtype.size().max(1);
    for i in 0..n {
        match (element(a, i), element(b, i)) {
            (Element::Float(x), Element::Float(y)) => {
                if x == y || (x.is_nan() && y.is_nan()) {
                    continue;
                }
                let diff = (x - y).abs();
                if !diff.is_finite() || (diff > abs && diff > rel * x.abs().max(y.abs())) {
                    return Some(format!("element {i}: {x:e} and {y:e} differ by {diff:e}"));
                }
            }
            (Element::Exact(x), Element::Exact(y)) if x == y => {}
            (Element::Exact(x), Element::Exact(y)) => {
                return Some(format!("element {i}: {x} and {y} differ"))
            }
            _ => return Some(format!("element {i}: differs in kind")),
        }
    }
    None
}

/// Whether `name` is compared as a tensor file, and how.
pub(crate) fn kind_of(name: &str) -> Option<TensorFile> {
    let (_, ext) = name.rsplit_once('.')?;
    match ext.to_ascii_lowercase().as_str() {
        "npy" => Some(TensorFile::Npy),
        "safetensors" => Some(TensorFile::Safetensors),
        _ => None,
    }
}

/// A format of tensor files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorFile {
    /// A numpy array (`.npy`).
    Npy,
    /// A safetensors file (`.safetensors`).
    Safetensors,
}

/// Why two tensor files of `kind` differ beyond `abs` or `rel`, or `None` when every element
/// agrees. A file that does not parse differs unless its bytes are the same.
pub fn tensor_file_difference(
    kind: TensorFile,
    a: &[u8],
    b: &[u8],
    abs: f64,
    rel: f64,
) -> Option<String> {
    if a == b {
        return None;
    }
    match kind {
        TensorFile::Npy => match (parse_npy(a), parse_npy(b)) {
            (Ok(ta), Ok(tb)) => tensor_difference(&ta, &tb, abs, rel),
            (Err(why), _) | (_, Err(why)) => Some(why),
        },
        TensorFile::Safetensors => match (parse_safetensors(a), parse_safetensors(b)) {
            (Ok(ta), Ok(tb)) => {
                if ta.keys().ne(tb.keys()) {
                    return Some(format!(
                        "tensors {:?} against {:?}",
                        ta.keys().collect::<Vec<_>>(),
                        tb.keys().collect::<Vec<_>>()
                    ));
                }
                ta.iter().find_map(|(name, t)| {
                    tensor_difference(t, &tb[name], abs, rel).map(|why| format!("{name}: {why}"))
                })
            }
            (Err(why), _) | (_, Err(why)) => Some(why),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `.npy` file of little-endian f32 `values` in `shape`.
    pub(crate) fn npy_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        for v in values {
            out.extend(v.to_le_bytes());
        }
        out
    }

    /// A safetensors file of f32 tensors, with `metadata`.
    fn safetensors(tensors: &[(&str, &[usize], &[f32])], metadata: &str) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::json!({ "saved": metadata }),
        );
        let mut data = Vec::new();
        for (name, shape, values) in tensors {
            let start = data.len();
            for v in *values {
                data.extend(v.to_le_bytes());
            }
            header.insert(
                (*name).into(),
                serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [start, data.len()] }),
            );
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header);
        out.extend(data);
        out
    }

    #[test]
    fn numpy_arrays_agree_within_tolerance_and_not_beyond() {
        let a = npy_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let near = npy_f32(&[2, 2], &[1.0, 2.000_001, 3.0, 4.0]);
        let far = npy_f32(&[2, 2], &[1.0, 2.1, 3.0, 4.0]);
        let reshaped = npy_f32(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let npy = TensorFile::Npy;
        assert_eq!(tensor_file_difference(npy, &a, &near, 1e-5, 0.0), None);
        let why = tensor_file_difference(npy, &a, &far, 1e-5, 0.0).unwrap();
        assert!(why.starts_with("element 1"), "{why}");
        assert!(tensor_file_difference(npy, &a, &far, 0.0, 0.1).is_none());
        assert!(tensor_file_difference(npy, &a, &reshaped, 1.0, 1.0).is_some());
        let nan = npy_f32(&[1], &[f32::NAN]);
        let nan2 = npy_f32(&[1], &[f32::from_bits(f32::NAN.to_bits() | 1)]);
        assert_eq!(tensor_file_difference(npy, &nan, &nan2, 0.0, 0.0), None);
    }

    #[test]
    fn safetensors_compare_by_name_and_never_their_metadata() {
        let a = safetensors(&[("w", &[2], &[0.5, 0.25]), ("b", &[1], &[1.0])], "Monday");
        let b = safetensors(
            &[("b", &[1], &[1.0]), ("w", &[2], &[0.5, 0.250_000_1])],
            "Tuesday",
        );
        let c = safetensors(&[("w", &[2], &[0.5, 0.3]), ("b", &[1], &[1.0])], "Monday");
        let missing = safetensors(&[("w", &[2], &[0.5, 0.25])], "Monday");
        let st = TensorFile::Safetensors;
        assert_eq!(tensor_file_difference(st, &a, &b, 1e-6, 0.0), None);
        let why = tensor_file_difference(st, &a, &c, 1e-6, 0.0).unwrap();
        assert!(why.starts_with("w: element 1"), "{why}");
        assert!(tensor_file_difference(st, &a, &missing, 1.0, 1.0).is_some());
    }

    /// What a stranger's output can hold: garbage, a header that claims more than the file
    /// has, offsets past the end. Each is a difference with a reason, never a panic.
    #[test]
    fn files_that_do_not_parse_differ_without_harm() {
        let good = npy_f32(&[2], &[1.0, 2.0]);
        let npy = TensorFile::Npy;
        for junk in [
            b"garbage".to_vec(),
            good[..good.len() - 1].to_vec(),
            b"\x93NUMPY\x01\x00\xff\xff".to_vec(),
        ] {
            let why = tensor_file_difference(npy, &good, &junk, 1.0, 1.0).unwrap();
            assert!(why.starts_with("not a numpy array"), "{why}");
        }
        let st = TensorFile::Safetensors;
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend(b"{}");
        let lying = {
            let header = br#"{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4]}}"#;
            let mut out = (header.len() as u64).to_le_bytes().to_vec();
            out.extend(header);
            out.extend([0u8; 4]);
            out
        };
        for junk in [huge, lying, b"short".to_vec()] {
            let why = tensor_file_difference(st, &junk, b"x", 1.0, 1.0).unwrap();
            assert!(why.starts_with("not a safetensors file"), "{why}");
        }
    }

    /// Found by the fuzzer: a type description starting with a character of more than one
    /// byte was split inside it.
    #[test]
    fn a_type_description_of_any_text_is_refused_not_split() {
        let header = "{'descr': 'é4', 'fortran_order': False, 'shape': (1,), }";
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        file.extend((header.len() as u16).to_le_bytes());
        file.extend(header.as_bytes());
        file.extend([0u8; 4]);
        let good = npy_f32(&[1], &[0.0]);
        let why = tensor_file_difference(TensorFile::Npy, &good, &file, 1.0, 1.0).unwrap();
        assert!(why.contains("descr"), "{why}");
    }

    /// Found by an adversarial review: numpy takes a key given twice at its last value, a judge
    /// took the first, so the same bytes loaded transposed passed as the honest array. And a
    /// safetensors file whose regions overlap or leave gaps, which the reference loader
    /// refuses, passed. Both are refused now, as is a header past 100 MB.
    #[test]
    fn headers_a_real_loader_reads_otherwise_are_refused() {
        let good = npy_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let header_of = |text: &str| {
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend((text.len() as u16).to_le_bytes());
            out.extend(text.as_bytes());
            for v in [1.0f32, 2.0, 3.0, 4.0] {
                out.extend(v.to_le_bytes());
            }
            out
        };
        for header in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'fortran_order': True, }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'extra': 1, }",
        ] {
            let why = tensor_file_difference(TensorFile::Npy, &good, &header_of(header), 1.0, 1.0)
                .unwrap();
            assert!(why.contains("once each"), "{why}");
        }
        let st = TensorFile::Safetensors;
        let file = |header: &str, data: usize| {
            let mut out = (header.len() as u64).to_le_bytes().to_vec();
            out.extend(header.as_bytes());
            out.extend(vec![0u8; data]);
            out
        };
        let honest = file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            8,
        );
        for (header, data) in [
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                12,
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                8,
            ),
        ] {
            let why = tensor_file_difference(st, &honest, &file(header, data), 1.0, 1.0).unwrap();
            assert!(why.starts_with("not a safetensors file"), "{header}: {why}");
        }
        let mut huge = (200u64 << 20).to_le_bytes().to_vec();
        huge.extend(b"{}");
        let why = tensor_file_difference(st, &honest, &huge, 1.0, 1.0).unwrap();
        assert!(why.contains("at most"), "{why}");
        let deep = format!(
            r#"{{"a":{{"dtype":"F32","shape":[{}],"data_offsets":[0,0]}}}}"#,
            vec!["0"; 100].join(",")
        );
        let why = tensor_file_difference(st, &honest, &file(&deep, 0), 1.0, 1.0).unwrap();
        assert!(why.contains("dimensions"), "{why}");
    }

    #[test]
    fn integers_and_halves_read_as_written() {
        assert_eq!(half_to_f64(0x3c00), 1.0);
        assert_eq!(half_to_f64(0xc000), -2.0);
        let t = Tensor {
            dtype: Dtype::Int {
                bytes: 2,
                signed: true,
            },
            big_endian: true,
            shape: vec![1],
            data: &[0xff, 0xfe],
        };
        assert!(matches!(element(&t, 0), Element::Exact(-2)));
    }
}
