//! Images compared by their pixels: what a render's council asks.
//!
//! Renders are not bit-exact across CPUs, GPUs and builds, and a renderer writes the date, the
//! render time and the scene's path into a PNG's metadata, so honest frames differ in bytes.
//! Two PNG files agree when their pixels do: the same width, height and channels (palettes
//! and low bit depths expanded, so the same picture saved either way compares alike), every
//! sample within a bound (in levels of 255 of full scale, 16-bit images scaled to it), and the
//! whole image at or above a peak signal-to-noise ratio. Metadata is never read.
//!
//! The bytes are another party's: decoding is bounded ([`MAX_IMAGE_BYTES`] of pixels, checked
//! before anything is allocated), and a file that does not decode is a difference, never a
//! panic. An animated PNG is compared byte for byte (its other frames are not its pixels).

/// The most bytes of decoded pixels one image may take (an 8K frame of 16-bit RGBA is
/// 265 MB). A larger one is a difference: a judge does not spend unbounded memory on a file
/// a stranger wrote.
pub const MAX_IMAGE_BYTES: usize = 512 << 20;
/// The bytes every PNG file begins with.
pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Whether `name` is compared as an image: a `.png`, in any case.
pub fn is_png_name(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| ext.eq_ignore_ascii_case("png"))
}

/// An image's pixels as compared.
#[derive(Debug)]
struct Pixels {
    width: u32,
    height: u32,
    color: png::ColorType,
    sixteen: bool,
    /// How the pixels are to be shown (gamma, chromaticities, sRGB intent, ICC profile):
    /// not metadata, since a viewer that manages colour shows the same pixels otherwise.
    colour: String,
    data: Vec<u8>,
}

fn decode(bytes: &[u8]) -> Result<Pixels, String> {
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            bytes: MAX_IMAGE_BYTES,
        },
    );
    // Palette to RGB, low bit depths to 8, transparency to alpha; 16 bits stay 16.
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("not a PNG image: {e}"))?;
    if reader.info().animation_control().is_some() {
        return Err("an animated PNG, compared byte for byte".into());
    }
    let (width, height) = (reader.info().width, reader.info().height);
    let colour = colour_of(reader.info());
    let (color, depth) = reader.output_color_type();
    let sample_bytes = if depth == png::BitDepth::Sixteen {
        2
    } else {
        1
    };
    let size = u64::from(width)
        .checked_mul(u64::from(height))
        .and_then(|n| n.checked_mul(color.samples() as u64 * sample_bytes))
        .filter(|&n| n <= MAX_IMAGE_BYTES as u64)
        .ok_or_else(|| {
            format!("{width}x{height} is larger than a judge decodes ({MAX_IMAGE_BYTES} bytes)")
        })?;
    let mut data = vec![0; size as usize];
    let frame = reader
        .next_frame(&mut data)
        .map_err(|e| format!("its pixels do not decode: {e}"))?;
    data.truncate(frame.buffer_size());
    Ok(Pixels {
        width,
        height,
        color,
        sixteen: depth == png::BitDepth::Sixteen,
        colour,
        data,
    })
}

/// How an image is to be shown, as one comparable text: its gamma, chromaticities, sRGB
/// rendering intent and ICC profile (by length and a hash).
fn colour_of(info: &png::Info<'_>) -> String {
    let icc = info.icc_profile.as_deref().unwrap_or_default();
    let hash = icc.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(1_099_511_628_211).wrapping_add(u64::from(b))
    });
    format!(
        "gamma {:?}, chromaticities {:?}, sRGB {:?}, ICC {} bytes #{hash:x}",
        info.gama_chunk,
        info.chrm_chunk,
        info.srgb,
        icc.len()
    )
}

/// An image's width and height, from its header alone.
fn header(bytes: &[u8]) -> Result<(u32, u32), String> {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .map_err(|e| e.to_string())?;
    Ok((reader.info().width, reader.info().height))
}

/// Samples as fractions of full scale.
fn samples(p: &Pixels) -> Box<dyn Iterator<Item = f64> + '_> {
    if p.sixteen {
        Box::new(
            p.data
                .chunks_exact(2)
                .map(|b| f64::from(u16::from_be_bytes([b[0], b[1]])) / 65535.0),
        )
    } else {
        Box::new(p.data.iter().map(|&b| f64::from(b) / 255.0))
    }
}

/// Why two PNG files differ beyond `min_psnr_db` and `max_diff` (levels of 255), or `None`
/// when their pixels agree. A file that is not a PNG image, or is too large to decode,
/// differs unless its bytes are the same.
pub fn png_difference(a: &[u8], b: &[u8], min_psnr_db: f64, max_diff: u8) -> Option<String> {
    if a == b {
        return None;
    }
    // Sizes from the headers first: two frames of different sizes are told apart without
    // decoding either (a stranger's frame costs a judge nothing to refuse).
    if let (Ok(ha), Ok(hb)) = (header(a), header(b)) {
        if ha != hb {
            return Some(format!(
                "{}x{} pixels against {}x{}",
                ha.0, ha.1, hb.0, hb.1
            ));
        }
    }
    let (pa, pb) = match (decode(a), decode(b)) {
        (Ok(pa), Ok(pb)) => (pa, pb),
        (Err(why), _) | (_, Err(why)) => return Some(why),
    };
    if (pa.width, pa.height) != (pb.width, pb.height) {
        return Some(format!(
            "{}x{} pixels against {}x{}",
            pa.width, pa.height, pb.width, pb.height
        ));
    }
    if pa.colour != pb.colour {
        // Found by an adversarial review: a gamma chunk added to an honest frame passed, and
        // showed washed out.
        return Some(format!(
            "shown differently (gamma, chromaticities, sRGB, ICC profile): {} against {}",
            pa.colour, pb.colour
        ));
    }
    if pa.color != pb.color || pa.sixteen != pb.sixteen || pa.data.len() != pb.data.len() {
        return Some(format!(
            "{:?} ({} bits) against {:?} ({} bits)",
            pa.color,
            if pa.sixteen { 16 } else { 8 },
            pb.color,
            if pb.sixteen { 16 } else { 8 }
        ));
    }
    // Alpha is bounded like any sample but left out of the ratio: an opaque frame's constant
    // alpha would add free signal (about 1.25 dB on RGBA).
    let channels = pa.color.samples();
    let alpha = matches!(
        pa.color,
        png::ColorType::Rgba | png::ColorType::GrayscaleAlpha
    );
    let (mut worst, mut worst_at, mut squares, mut n) = (0.0f64, 0usize, 0.0f64, 0usize);
    for (i, (x, y)) in samples(&pa).zip(samples(&pb)).enumerate() {
        let d = (x - y).abs();
        if d > worst {
            (worst, worst_at) = (d, i);
        }
        if alpha && i % channels == channels - 1 {
            continue;
        }
        squares += d * d;
        n += 1;
    }
    // A hair of slack: 16-bit levels scaled to 255 land between whole levels.
    if worst * 255.0 > f64::from(max_diff) + 1e-9 {
        let pixel = worst_at / channels;
        return Some(format!(
            "pixel ({}, {}) differs by {:.1} levels of 255 (at most {max_diff})",
            pixel % pa.width as usize,
            pixel / pa.width as usize,
            worst * 255.0
        ));
    }
    if squares > 0.0 {
        let psnr = 10.0 * (n as f64 / squares).log10();
        if psnr < min_psnr_db {
            return Some(format!(
                "a peak signal-to-noise ratio of {psnr:.2} dB (at least {min_psnr_db} dB)"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `width` x `height` PNG of `color` at `depth` bits, its samples from `sample`, with a
    /// text chunk `note` (what a renderer stamps).
    fn png_file(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        note: &str,
        sample: impl Fn(usize) -> u16,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.add_text_chunk("Date".into(), note.into()).unwrap();
        let mut w = enc.write_header().unwrap();
        let n = width as usize * height as usize * color.samples();
        let data: Vec<u8> = if depth == png::BitDepth::Sixteen {
            (0..n).flat_map(|i| sample(i).to_be_bytes()).collect()
        } else {
            (0..n).map(|i| sample(i) as u8).collect()
        };
        w.write_image_data(&data).unwrap();
        drop(w);
        out
    }

    fn rgb(note: &str, sample: impl Fn(usize) -> u16) -> Vec<u8> {
        png_file(
            16,
            8,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            note,
            sample,
        )
    }

    fn gradient(i: usize) -> u16 {
        (i * 7 % 256) as u16
    }

    /// Two renders of one frame that differ in their metadata (the date a renderer stamps)
    /// and by a level of noise here and there agree; one with a pixel changed beyond the
    /// bound, or noisy all over, does not; and neither do a different size or channels.
    #[test]
    fn pixels_are_compared_never_metadata() {
        let frame = rgb("2026-12-07 01:00", gradient);
        let same_pixels = rgb("2026-12-08 17:30", gradient);
        assert_ne!(frame, same_pixels, "the bytes differ");
        assert_eq!(png_difference(&frame, &same_pixels, 40.0, 0), None);
        let noisy = rgb("", |i| {
            let v = gradient(i);
            if i % 97 == 0 {
                v ^ 1
            } else {
                v
            }
        });
        assert_eq!(png_difference(&frame, &noisy, 40.0, 2), None);
        let forged = rgb("", |i| {
            if i == 50 {
                255 - gradient(i)
            } else {
                gradient(i)
            }
        });
        let why = png_difference(&frame, &forged, 40.0, 16).unwrap();
        assert!(
            why.contains("pixel (0, 1)") && why.contains("levels"),
            "{why}"
        );
        let washed = rgb("", |i| gradient(i).saturating_add(10).min(255));
        let why = png_difference(&frame, &washed, 40.0, 16).unwrap();
        assert!(why.contains("signal-to-noise"), "{why}");
        let smaller = png_file(
            8,
            8,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            "",
            gradient,
        );
        assert!(png_difference(&frame, &smaller, 40.0, 16)
            .unwrap()
            .contains("16x8 pixels against 8x8"));
        let alpha = png_file(
            16,
            8,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            "",
            gradient,
        );
        assert!(png_difference(&frame, &alpha, 40.0, 16).is_some());
    }

    /// The same pixels with a gamma chunk added show washed out in a viewer that manages
    /// colour: a difference, not metadata.
    #[test]
    fn how_pixels_are_shown_must_match_too() {
        let plain = rgb("", gradient);
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 16, 8);
        enc.set_color(png::ColorType::Rgb);
        enc.set_source_gamma(png::ScaledFloat::new(1.0));
        let mut w = enc.write_header().unwrap();
        let data: Vec<u8> = (0..16 * 8 * 3).map(|i| gradient(i) as u8).collect();
        w.write_image_data(&data).unwrap();
        drop(w);
        let why = png_difference(&plain, &out, 40.0, 32).unwrap();
        assert!(why.contains("shown differently"), "{why}");
    }

    /// 16-bit images are bounded in levels of 255 of full scale like 8-bit ones.
    #[test]
    fn sixteen_bit_images_are_bounded_at_full_scale() {
        let deep = |off: u16| {
            png_file(
                4,
                4,
                png::ColorType::Rgba,
                png::BitDepth::Sixteen,
                "",
                move |i| (i as u16).wrapping_mul(3000).saturating_add(off),
            )
        };
        // 257 sixteen-bit levels are one level of 255.
        assert_eq!(png_difference(&deep(0), &deep(257), 40.0, 1), None);
        assert!(png_difference(&deep(0), &deep(3 * 257), 40.0, 2).is_some());
    }

    /// What a stranger's output can hold: garbage named .png, a truncated image, one whose
    /// header claims more pixels than a judge decodes. Each is a difference with a reason,
    /// never a panic or an allocation of what the header claims.
    #[test]
    fn files_that_are_not_images_or_too_large_differ_without_harm() {
        let frame = rgb("", gradient);
        let why = png_difference(&frame, b"not a png at all", 40.0, 16).unwrap();
        assert!(why.contains("not a PNG image"), "{why}");
        let why = png_difference(&frame, &frame[..frame.len() - 20], 40.0, 16).unwrap();
        assert!(why.contains("decode"), "{why}");
        // A valid header for 60000 x 60000 RGBA at 16 bits (28.8 GB of pixels), then nothing.
        let mut huge = rgb("", gradient);
        huge[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        huge[24] = 16;
        huge[25] = 6;
        let crc = crc32(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.to_be_bytes());
        // Against a frame of another size: told apart from the headers, nothing decoded.
        let why = png_difference(&frame, &huge, 40.0, 16).unwrap();
        assert!(why.contains("16x8 pixels against 60000x60000"), "{why}");
        // Against one of the same claimed size: refused before any pixel is allocated.
        let mut huge2 = huge.clone();
        huge2.push(0);
        let why = png_difference(&huge, &huge2, 40.0, 16).unwrap();
        assert!(why.contains("larger than a judge decodes"), "{why}");
        assert_eq!(png_difference(b"same", b"same", 40.0, 0), None);
    }

    /// The CRC of a PNG chunk (type and data), as the format has it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn only_png_names_are_images() {
        assert!(is_png_name("frames/frame_0001.png"));
        assert!(is_png_name("A.PNG"));
        assert!(!is_png_name("frame.exr"));
        assert!(!is_png_name("png"));
    }
}
