//! A render's results put together (`gridwork job results`): every task's frames in order in
//! one directory, a contact sheet, and a video where `ffmpeg` is installed.
//!
//! Frames are the PNG files under each task's `frames/` (where the render template writes
//! them, `frame_NNNNN.png`), ordered by name, so by frame number, and the frames merged from
//! tiles (a render split into tiles writes `tiles/frame_NNNNN_tile_C_R.png`, column `C` and row
//! `R` from the top left; a frame is merged when every tile of its grid is there, all of one
//! size). The contact sheet
//! (`contact.png`) shows up to [`SHEET_FRAMES`] of them, evenly spaced, each
//! [`THUMB_WIDTH`] pixels wide, eight to a row. The video (`video.mp4`, 24 frames a second)
//! is H.264 where `ffmpeg` has it, MPEG-4 Part 2 otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The most frames a contact sheet shows.
pub(crate) const SHEET_FRAMES: usize = 64;
/// A thumbnail's width in the contact sheet, in pixels.
pub(crate) const THUMB_WIDTH: u32 = 160;
/// Thumbnails a row.
const SHEET_COLUMNS: usize = 8;
/// Between thumbnails, in pixels.
const GAP: u32 = 4;
/// The largest frame decoded for the sheet, in bytes of pixels.
const MAX_FRAME_BYTES: usize = 512 << 20;

/// What was put together.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    /// The frames, in order, in `out/frames/`.
    pub frames: Vec<PathBuf>,
    /// `out/contact.png`, unless no frame could be decoded.
    pub contact_sheet: Option<PathBuf>,
    /// `out/video.mp4`, or why there is none (no `ffmpeg`, or it failed).
    pub video: Result<PathBuf, String>,
    /// Frames left out, and why (a name two tasks both have, a file that is not a PNG).
    pub skipped: Vec<String>,
}

/// Why the results could not be put together.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FramesError {
    path: String,
    source: std::io::Error,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FramesError + '_ {
    move |source| FramesError {
        path: path.display().to_string(),
        source,
    }
}

/// Puts together the frames under `task_dirs` (each task's pulled output) in `out`; `None`
/// when no task has frames.
pub fn assemble_frames(
    task_dirs: &[PathBuf],
    out: &Path,
) -> Result<Option<Assembled>, FramesError> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let mut skipped = Vec::new();
    for dir in task_dirs {
        let frames = dir.join("frames");
        // A real directory: a link in a pulled output is not followed.
        if !real_dir(&frames) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&frames) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(io(&frames))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Regular files only: a link in an output is not followed.
            let regular = entry.file_type().is_ok_and(|t| t.is_file());
            if !regular || !name.to_ascii_lowercase().ends_with(".png") {
                continue;
            }
            if found.iter().any(|(n, _)| *n == name) {
                skipped.push(format!(
                    "{name}: more than one task has a frame of that name"
                ));
                continue;
            }
            found.push((name, entry.path()));
        }
    }
    let tiles = tiles_by_frame(task_dirs, &mut skipped);
    if found.is_empty() && tiles.is_empty() {
        return Ok(None);
    }
    let target = out.join("frames");
    std::fs::create_dir_all(&target).map_err(io(&target))?;
    let mut frames = Vec::with_capacity(found.len() + tiles.len());
    for (name, from) in &found {
        let to = target.join(name);
        let _ = std::fs::remove_file(&to);
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to).map_err(io(&to))?;
        }
        frames.push(to);
    }
    for (frame, grid) in &tiles {
        let name = format!("{frame}.png");
        if found.iter().any(|(n, _)| *n == name) {
            skipped.push(format!(
                "{name}: both a frame and tiles of it; the frame is kept"
            ));
            continue;
        }
        let to = target.join(&name);
        match merge(grid, &to) {
            Ok(()) => frames.push(to),
            Err(why) => skipped.push(format!("{name}: not merged: {why}")),
        }
    }
    frames.sort();
    let contact_sheet = contact_sheet(&frames, &out.join("contact.png"), &mut skipped)?;
    let video = video(&frames, &out.join("video.mp4"));
    Ok(Some(Assembled {
        frames,
        contact_sheet,
        video,
        skipped,
    }))
}

/// Whether `path` is a directory itself, not a link to one.
fn real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The tiles under each task's `tiles/`, by frame (`frame_NNNNN`), each as (column, row, path).
fn tiles_by_frame(
    task_dirs: &[PathBuf],
    skipped: &mut Vec<String>,
) -> std::collections::BTreeMap<String, Vec<(u32, u32, PathBuf)>> {
    let mut by_frame: std::collections::BTreeMap<String, Vec<(u32, u32, PathBuf)>> =
        Default::default();
    for dir in task_dirs {
        if !real_dir(&dir.join("tiles")) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir.join("tiles")) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let parsed = name.strip_suffix(".png").and_then(|stem| {
                let (frame, tile) = stem.split_once("_tile_")?;
                let (c, r) = tile.split_once('_')?;
                Some((
                    frame.to_string(),
                    c.parse::<u32>().ok()?,
                    r.parse::<u32>().ok()?,
                ))
            });
            let Some((frame, c, r)) = parsed else {
                continue;
            };
            let tiles = by_frame.entry(frame).or_default();
            if tiles.iter().any(|(tc, tr, _)| (*tc, *tr) == (c, r)) {
                skipped.push(format!("{name}: more than one task has this tile"));
                continue;
            }
            tiles.push((c, r, entry.path()));
        }
    }
    by_frame
}

/// Merges the tiles of one frame into `to`: every tile of the grid the highest column and
/// row name, all of one size. Sizes are read from the tiles' headers and the whole frame
/// checked against the bound before any tile is decoded, and tiles are decoded one at a time.
fn merge(tiles: &[(u32, u32, PathBuf)], to: &Path) -> Result<(), String> {
    let grid = |pick: fn(&(u32, u32, PathBuf)) -> u32| {
        tiles
            .iter()
            .map(pick)
            .max()
            .and_then(|m| m.checked_add(1))
            .ok_or_else(|| "a tile numbered past the largest grid".to_string())
    };
    let (cols, rows) = (grid(|t| t.0)?, grid(|t| t.1)?);
    if tiles.len() as u64 != u64::from(cols) * u64::from(rows) {
        return Err(format!(
            "{} of its {cols} x {rows} tiles are here",
            tiles.len()
        ));
    }
    let mut size = None;
    for (_, _, path) in tiles {
        let this = png_size(path)?;
        if size.is_some_and(|s| s != this) {
            return Err("its tiles differ in size".into());
        }
        size = Some(this);
    }
    let (tw, th) = size.ok_or("no tiles")?;
    let width = u64::from(tw) * u64::from(cols);
    let height = u64::from(th) * u64::from(rows);
    if width * height * 4 > MAX_FRAME_BYTES as u64 {
        return Err(format!("{width}x{height} is too large"));
    }
    let (width, height) = (width as usize, height as usize);
    let mut frame = vec![0u8; width * height * 4];
    for (c, r, path) in tiles {
        let tile = decode_rgba(path)?;
        if (tile.width, tile.height) != (tw, th) {
            return Err("a tile changed while it was read".into());
        }
        let (tw, th) = (tw as usize, th as usize);
        for y in 0..th {
            let from = y * tw * 4;
            let to_at = ((*r as usize * th + y) * width + *c as usize * tw) * 4;
            frame[to_at..to_at + tw * 4].copy_from_slice(&tile.data[from..from + tw * 4]);
        }
    }
    write_rgba(to, width as u32, height as u32, &frame).map_err(|e| e.to_string())
}

/// A PNG file's width and height, from its header alone.
fn png_size(path: &Path) -> Result<(u32, u32), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| e.to_string())?;
    Ok((reader.info().width, reader.info().height))
}

/// Writes 8-bit RGBA pixels as a PNG file.
fn write_rgba(path: &Path, width: u32, height: u32, data: &[u8]) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .and_then(|mut w| w.write_image_data(data))
        .map_err(std::io::Error::other)
}

/// An image as 8-bit RGBA.
struct Rgba {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

fn decode_rgba(path: &Path) -> Result<Rgba, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut decoder = png::Decoder::new_with_limits(
        std::io::BufReader::new(file),
        png::Limits {
            bytes: MAX_FRAME_BYTES,
        },
    );
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (width, height) = (reader.info().width, reader.info().height);
    let (color, _) = reader.output_color_type();
    // Bounded as the RGBA it becomes, not as it is stored (grey is a quarter of it).
    if u64::from(width) * u64::from(height) * 4 > MAX_FRAME_BYTES as u64 {
        return Err(format!("{width}x{height} is too large for the sheet"));
    }
    let size = u64::from(width) * u64::from(height) * color.samples() as u64;
    let mut buf = vec![0; size as usize];
    reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let data = match color {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::Indexed => return Err("a palette the decoder did not expand".into()),
    };
    Ok(Rgba {
        width,
        height,
        data,
    })
}

/// The tallest thumbnail, in pixels: a frame taller than four times its width is squeezed.
const THUMB_MAX_HEIGHT: u32 = 4 * THUMB_WIDTH;

/// `img` scaled to `width` pixels wide (box filter), its aspect kept up to
/// [`THUMB_MAX_HEIGHT`].
fn thumbnail(img: &Rgba, width: u32) -> Rgba {
    let (iw, ih) = (u64::from(img.width.max(1)), u64::from(img.height.max(1)));
    let (tw, th) = (
        u64::from(width),
        (ih * u64::from(width) / iw).clamp(1, u64::from(THUMB_MAX_HEIGHT)),
    );
    let mut data = vec![0u8; (tw * th * 4) as usize];
    for ty in 0..th {
        let (y0, y1) = (
            ty * ih / th,
            ((ty + 1) * ih / th).max(ty * ih / th + 1).min(ih),
        );
        for tx in 0..tw {
            let (x0, x1) = (
                tx * iw / tw,
                ((tx + 1) * iw / tw).max(tx * iw / tw + 1).min(iw),
            );
            let mut sum = [0u64; 4];
            let mut n = 0u64;
            for y in y0..y1 {
                for x in x0..x1 {
                    let at = ((y * iw + x) * 4) as usize;
                    for (c, s) in sum.iter_mut().enumerate() {
                        *s += u64::from(img.data[at + c]);
                    }
                    n += 1;
                }
            }
            let at = ((ty * tw + tx) * 4) as usize;
            for (c, s) in sum.iter().enumerate() {
                data[at + c] = (s / n.max(1)) as u8;
            }
        }
    }
    Rgba {
        width,
        height: th as u32,
        data,
    }
}

/// Writes the contact sheet of `frames` to `path`; `None` when none decodes.
fn contact_sheet(
    frames: &[PathBuf],
    path: &Path,
    skipped: &mut Vec<String>,
) -> Result<Option<PathBuf>, FramesError> {
    // Evenly spaced, first and last included.
    let shown: Vec<&PathBuf> = if frames.len() <= SHEET_FRAMES {
        frames.iter().collect()
    } else {
        (0..SHEET_FRAMES)
            .map(|i| &frames[i * (frames.len() - 1) / (SHEET_FRAMES - 1)])
            .collect()
    };
    let mut thumbs = Vec::new();
    for frame in shown {
        match decode_rgba(frame) {
            Ok(img) => thumbs.push(thumbnail(&img, THUMB_WIDTH)),
            Err(why) => skipped.push(format!(
                "{}: not on the contact sheet: {why}",
                frame.file_name().unwrap_or_default().to_string_lossy()
            )),
        }
    }
    if thumbs.is_empty() {
        return Ok(None);
    }
    let columns = thumbs.len().min(SHEET_COLUMNS) as u32;
    let rows = thumbs.len().div_ceil(SHEET_COLUMNS) as u32;
    let cell_h = thumbs.iter().map(|t| t.height).max().unwrap_or(1);
    let width = columns * (THUMB_WIDTH + GAP) + GAP;
    let height = rows * (cell_h + GAP) + GAP;
    // A dark grey ground.
    let mut sheet: Vec<u8> = [40u8, 40, 40, 255]
        .iter()
        .copied()
        .cycle()
        .take(width as usize * height as usize * 4)
        .collect();
    for (i, t) in thumbs.iter().enumerate() {
        let (col, row) = ((i % SHEET_COLUMNS) as u32, (i / SHEET_COLUMNS) as u32);
        let (left, top) = (GAP + col * (THUMB_WIDTH + GAP), GAP + row * (cell_h + GAP));
        for y in 0..t.height {
            let from = (y * t.width * 4) as usize;
            let to = (((top + y) * width + left) * 4) as usize;
            sheet[to..to + (t.width * 4) as usize]
                .copy_from_slice(&t.data[from..from + (t.width * 4) as usize]);
        }
    }
    write_rgba(path, width, height, &sheet).map_err(io(path))?;
    Ok(Some(path.to_path_buf()))
}

/// Encodes `frames` into `path` with `ffmpeg`, 24 frames a second.
fn video(frames: &[PathBuf], path: &Path) -> Result<PathBuf, String> {
    let found = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return Err("no video: ffmpeg is not installed".into());
    }
    // ffmpeg reads a numbered sequence: links named 000001.png, 000002.png, ... in a
    // directory of their own.
    let sequence = tempfile_dir(path).map_err(|e| format!("no video: {e}"))?;
    for (i, frame) in frames.iter().enumerate() {
        let link = sequence.join(format!("{:06}.png", i + 1));
        let absolute = std::path::absolute(frame).map_err(|e| format!("no video: {e}"))?;
        std::os::unix::fs::symlink(absolute, &link).map_err(|e| format!("no video: {e}"))?;
    }
    let input = sequence.join("%06d.png");
    let mut last_error = String::new();
    for codec in [
        &["-c:v", "libx264", "-pix_fmt", "yuv420p"][..],
        &["-c:v", "mpeg4", "-q:v", "3"],
    ] {
        let run = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-framerate", "24", "-i"])
            .arg(&input)
            // Even sides, which both codecs want.
            .args(["-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2"])
            .args(codec)
            .arg(path)
            .stdin(Stdio::null())
            .output();
        match run {
            Ok(out) if out.status.success() => {
                let _ = std::fs::remove_dir_all(&sequence);
                return Ok(path.to_path_buf());
            }
            Ok(out) => last_error = String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => last_error = e.to_string(),
        }
    }
    let _ = std::fs::remove_dir_all(&sequence);
    Err(format!("no video: ffmpeg failed: {last_error}"))
}

/// A fresh directory beside `path`.
fn tempfile_dir(path: &Path) -> std::io::Result<PathBuf> {
    let dir = path.with_extension("frames-sequence");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(path: &Path, width: u32, height: u32, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(file, width, height);
        enc.set_color(png::ColorType::Rgb);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&vec![shade; (width * height * 3) as usize])
            .unwrap();
    }

    /// Three tasks' frames come out in frame order in one directory, whatever task held them,
    /// with a contact sheet of all of them; a frame name two tasks both have is left out and
    /// said, and a task without frames adds nothing.
    #[test]
    fn frames_of_every_task_come_out_in_order_with_a_contact_sheet() {
        let base = tempfile::tempdir().unwrap();
        let task = |n: u32| base.path().join(format!("task-{n}"));
        frame(&task(1).join("frames/frame_00003.png"), 64, 36, 30);
        frame(&task(1).join("frames/frame_00004.png"), 64, 36, 40);
        frame(&task(0).join("frames/frame_00001.png"), 64, 36, 10);
        frame(&task(0).join("frames/frame_00002.png"), 64, 36, 20);
        frame(&task(2).join("frames/frame_00002.png"), 64, 36, 99);
        std::fs::create_dir_all(task(3).join("logs")).unwrap();
        std::fs::write(task(0).join("frames/notes.txt"), "not a frame").unwrap();
        let out = base.path().join("out");
        let dirs: Vec<PathBuf> = (0..4).map(task).collect();
        let done = assemble_frames(&dirs, &out).unwrap().unwrap();
        let names: Vec<String> = done
            .frames
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "frame_00001.png",
                "frame_00002.png",
                "frame_00003.png",
                "frame_00004.png"
            ]
        );
        assert_eq!(done.skipped.len(), 1, "{:?}", done.skipped);
        assert!(done.skipped[0].contains("frame_00002.png"));
        let sheet = decode_rgba(done.contact_sheet.as_ref().unwrap()).unwrap();
        // Four thumbnails of 160 x 90 in one row, with their gaps.
        assert_eq!((sheet.width, sheet.height), (4 * (160 + 4) + 4, 90 + 8));
        // The first thumbnail's middle is the first frame's shade.
        let at = ((4 + 45) * sheet.width as usize + 4 + 80) * 4;
        assert_eq!(&sheet.data[at..at + 4], [10, 10, 10, 255]);
        assert!(assemble_frames(&[task(3)], &base.path().join("none"))
            .unwrap()
            .is_none());
    }

    /// Tiles from several tasks merge into their frames, placed by column and row; a frame
    /// missing a tile is left out, saying how many are there.
    #[test]
    fn tiles_merge_into_frames_by_column_and_row() {
        let base = tempfile::tempdir().unwrap();
        let shades = [[10u8, 20, 30], [40, 50, 60]];
        for (c, r) in [(0u32, 0u32), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)] {
            let task = base.path().join(format!("task-{}", (c + r) % 2));
            let shade = shades[r as usize][c as usize];
            frame(
                &task.join(format!("tiles/frame_00001_tile_{c}_{r}.png")),
                4,
                3,
                shade,
            );
            if (c, r) != (2, 1) {
                frame(
                    &task.join(format!("tiles/frame_00002_tile_{c}_{r}.png")),
                    4,
                    3,
                    shade,
                );
            }
        }
        let out = base.path().join("out");
        let dirs = vec![base.path().join("task-0"), base.path().join("task-1")];
        let done = assemble_frames(&dirs, &out).unwrap().unwrap();
        assert_eq!(done.frames, [out.join("frames/frame_00001.png")]);
        assert!(
            done.skipped
                .iter()
                .any(|s| s.contains("frame_00002.png") && s.contains("5 of its 3 x 2 tiles")),
            "{:?}",
            done.skipped
        );
        let merged = decode_rgba(&done.frames[0]).unwrap();
        assert_eq!((merged.width, merged.height), (12, 6));
        let pixel = |x: usize, y: usize| merged.data[(y * 12 + x) * 4];
        assert_eq!([pixel(0, 0), pixel(5, 2), pixel(11, 0)], [10, 20, 30]);
        assert_eq!([pixel(0, 3), pixel(7, 5), pixel(11, 5)], [40, 50, 60]);
    }

    /// Found by an adversarial review: what a pulled output holds must not make `job results`
    /// follow it or allocate what it likes. A `frames` link to the requester's own pictures is
    /// not followed; a 1 x 100,000 frame (a few hundred bytes) gets a thumbnail no taller than
    /// four times its width; a tile grid numbered to the largest column is refused.
    #[test]
    fn a_pulled_output_cannot_steer_or_swell_the_assembly() {
        let base = tempfile::tempdir().unwrap();
        let private = base.path().join("Pictures");
        frame(&private.join("holiday.png"), 4, 4, 200);
        let linked = base.path().join("task-0");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(&private, linked.join("frames")).unwrap();
        let out = base.path().join("out");
        assert!(assemble_frames(&[linked], &out).unwrap().is_none());

        let tall = base.path().join("task-1");
        frame(&tall.join("frames/frame_00001.png"), 1, 100_000, 9);
        let done = assemble_frames(&[tall], &out).unwrap().unwrap();
        let sheet = decode_rgba(done.contact_sheet.as_ref().unwrap()).unwrap();
        assert_eq!(sheet.height, THUMB_MAX_HEIGHT + 2 * GAP);

        let wide = base.path().join("task-2");
        frame(
            &wide.join(format!("tiles/frame_00001_tile_{}_0.png", u32::MAX)),
            2,
            2,
            1,
        );
        let done = assemble_frames(&[wide], &base.path().join("out2"))
            .unwrap()
            .unwrap();
        assert!(
            done.frames.is_empty() && done.skipped.len() == 1,
            "{done:?}"
        );
    }

    /// With ffmpeg installed (Debian's `ffmpeg`, which `scripts/test-deps.sh` installs), the
    /// frames become a video; without it, the reason says so.
    #[test]
    fn frames_become_a_video_where_ffmpeg_is_installed() {
        let base = tempfile::tempdir().unwrap();
        let task = base.path().join("task-0");
        for n in 1..=6u8 {
            frame(
                &task.join(format!("frames/frame_{n:05}.png")),
                33,
                20,
                n * 30,
            );
        }
        let out = base.path().join("out");
        let done = assemble_frames(&[task], &out).unwrap().unwrap();
        let video = done
            .video
            .expect("ffmpeg (scripts/test-deps.sh installs it)");
        let size = std::fs::metadata(&video).unwrap().len();
        assert!(size > 0, "{}", video.display());
        assert!(!out.join("video.frames-sequence").exists());
    }
}
