//! A training's loss curve, as `gridwork job results` draws it: the `loss.csv` a training
//! script leaves in its checkpoints (`step,loss` lines under a header, the example's form)
//! plotted into `loss.png`, steps across and the loss upwards on a logarithmic scale, so a
//! curve that falls by orders of magnitude stays readable.
//!
//! The file comes from an executor, so reading it is bounded: at most [`MAX_CSV_BYTES`], one
//! point a line, lines that are not two numbers skipped.

use std::path::{Path, PathBuf};

/// The largest `loss.csv` read.
pub(crate) const MAX_CSV_BYTES: u64 = 64 << 20;
const WIDTH: u32 = 800;
const HEIGHT: u32 = 400;
const MARGIN: u32 = 40;

/// The (step, loss) points of a `loss.csv`: a header line, then `step,loss` lines; points
/// whose loss is not a positive finite number are left out (they have no place on a log
/// scale). `None` when the file is not such a file.
pub fn read_loss(path: &Path) -> Option<Vec<(f64, f64)>> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_CSV_BYTES).read_to_string(&mut text).ok()?;
    let mut lines = text.lines();
    let header = lines.next()?;
    if !header.trim().eq_ignore_ascii_case("step,loss") {
        return None;
    }
    let points: Vec<(f64, f64)> = lines
        .filter_map(|l| {
            let (s, v) = l.split_once(',')?;
            let (s, v) = (s.trim().parse::<f64>().ok()?, v.trim().parse::<f64>().ok()?);
            (s.is_finite() && v.is_finite() && v > 0.0).then_some((s, v))
        })
        .collect();
    (!points.is_empty()).then_some(points)
}

/// Draws `points` into a PNG at `to`: grey axes, the curve in blue. Returns `to`.
pub fn plot_loss(points: &[(f64, f64)], to: &Path) -> std::io::Result<PathBuf> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut rgb = vec![255u8; w * h * 3];
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if (0..w as i64).contains(&x) && (0..h as i64).contains(&y) {
            let at = (y as usize * w + x as usize) * 3;
            rgb[at..at + 3].copy_from_slice(&c);
        }
    };
    let (m, right, bottom) = (
        i64::from(MARGIN),
        (w - 10) as i64,
        h as i64 - i64::from(MARGIN),
    );
    for x in m..=right {
        put(x, bottom, [128; 3]);
    }
    for y in 10..=bottom {
        put(m, y, [128; 3]);
    }
    let bound = |f: fn(f64, f64) -> f64, init: f64, of: fn(&(f64, f64)) -> f64| {
        points.iter().map(of).fold(init, f)
    };
    let (s0, s1) = (
        bound(f64::min, f64::INFINITY, |p| p.0),
        bound(f64::max, f64::NEG_INFINITY, |p| p.0),
    );
    let (l0, l1) = (
        bound(f64::min, f64::INFINITY, |p| p.1.log10()),
        bound(f64::max, f64::NEG_INFINITY, |p| p.1.log10()),
    );
    let span = |a: f64, b: f64| if b > a { b - a } else { 1.0 };
    let to_px = |(s, v): (f64, f64)| {
        let x = m as f64 + (s - s0) / span(s0, s1) * (right - m) as f64;
        let y = bottom as f64 - (v.log10() - l0) / span(l0, l1) * (bottom - 10) as f64;
        (x.round() as i64, y.round() as i64)
    };
    // At most one segment a pixel column: a million points draw as fast as eight hundred.
    let step = (points.len() / w).max(1);
    let mut last: Option<(i64, i64)> = None;
    for p in points.iter().step_by(step).chain(points.last()) {
        let (x, y) = to_px(*p);
        if let Some((x0, y0)) = last {
            // Bresenham between the points.
            let (dx, dy) = ((x - x0).abs(), -(y - y0).abs());
            let (sx, sy) = (if x0 < x { 1 } else { -1 }, if y0 < y { 1 } else { -1 });
            let (mut cx, mut cy, mut err) = (x0, y0, dx + dy);
            loop {
                put(cx, cy, [30, 90, 200]);
                if (cx, cy) == (x, y) {
                    break;
                }
                let e2 = 2 * err;
                if e2 >= dy {
                    err += dy;
                    cx += sx;
                }
                if e2 <= dx {
                    err += dx;
                    cy += sy;
                }
            }
        }
        last = Some((x, y));
    }
    let file = std::fs::File::create(to)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .and_then(|mut w| w.write_image_data(&rgb))
        .map_err(std::io::Error::other)?;
    Ok(to.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_csv_is_read_as_points_and_drawn_falling() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("loss.csv");
        let mut text = "step,loss\n".to_string();
        for n in 0..1000 {
            text.push_str(&format!("{n},{}\n", 1.0 / f64::from(n + 1)));
        }
        text.push_str("oops\n5,nan\n6,-1\n");
        std::fs::write(&csv, text).unwrap();
        let points = read_loss(&csv).unwrap();
        assert_eq!(points.len(), 1000);
        let png = plot_loss(&points, &dir.path().join("loss.png")).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        let blue = |x: usize| {
            (0..HEIGHT as usize)
                .find(|y| buf[(y * WIDTH as usize + x) * 3..][..3] == [30, 90, 200])
                .unwrap()
        };
        // Falling: higher on the left (a smaller row) than on the right.
        assert!(blue(MARGIN as usize + 2) < blue(WIDTH as usize - 12));
        // Not a loss file: no curve.
        std::fs::write(&csv, "epoch;accuracy\n1;0.5\n").unwrap();
        assert!(read_loss(&csv).is_none());
        assert!(read_loss(dir.path()).is_none());
    }
}
