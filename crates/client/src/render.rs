//! The render template: a job file's `[render]` section, a Blender scene and a frame range,
//! made into the program every worker runs.
//!
//! ```toml
//! [render]
//! scene = "./make_scene.py"   # a .blend, or a Python script that builds the scene
//! frames = [1, 48]            # first and last frame; each is one item
//! engine = "cycles"           # cycles (CPU path tracing) or workbench
//! samples = 16                # cycles' samples per pixel
//! resolution = [640, 360]     # the scene's own when left out
//! # tiles = [2, 2]            # split each frame into a grid; `job results` merges it
//! # image = "img:<id>"        # run in an image that has Blender
//! ```
//!
//! The scene travels as an input (added to `data.inputs` unless listed there). Every task
//! renders its frames with `blender -b`: the scene loaded (or built by its script from
//! Blender's factory settings), then settings the template fixes, the same on every worker:
//!
//! - the task's frames: `first + GRIDWORK_ITEM_START` to `first + GRIDWORK_ITEM_END - 1`; or,
//!   split into tiles, the task's tiles (one item a tile, rendered by border and cropped) to
//!   `$GRIDWORK_OUTPUTS/tiles/frame_NNNNN_tile_C_R.png`, which `gridwork job results` merges;
//! - PNG files at `$GRIDWORK_OUTPUTS/frames/frame_NNNNN.png` (the template sets the output path
//!   itself: a scene's own `//out/` path would put frames outside the outputs, and the job
//!   would settle with none), and the job requires at least one (`program.outputs`);
//! - no metadata and no stamp (Blender writes the date, the render time and the scene's path
//!   into each PNG by default, so honest frames would differ in bytes);
//! - for Cycles: the CPU, a fixed seed not animated over frames, no denoiser (its result
//!   depends on the CPU's instruction set).
//!
//! Frames are compared by their pixels (`[equivalence] kind = "image"`, 40 dB and 32 levels)
//! unless the job file says otherwise.

use gridwork_types::{Equivalence, Program};
use serde::Deserialize;

/// `[render]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRender {
    pub(crate) scene: String,
    frames: [u64; 2],
    #[serde(default = "cycles")]
    engine: String,
    samples: Option<u32>,
    resolution: Option<[u32; 2]>,
    tiles: Option<[u32; 2]>,
    pub(crate) image: Option<crate::jobfile::RawImage>,
}

fn cycles() -> String {
    "cycles".into()
}

/// The most samples per pixel a render job may ask for.
const MAX_SAMPLES: u32 = 1 << 16;
/// The largest frame side, in pixels.
const MAX_SIDE: u32 = 16_384;
/// Where a task's frames go, under `$GRIDWORK_OUTPUTS`.
pub(crate) const FRAMES_GLOB: &str = "frames/*.png";
/// Where a task's tiles go, under `$GRIDWORK_OUTPUTS`.
pub(crate) const TILES_GLOB: &str = "tiles/*.png";
/// The most tiles a frame may be split into, a side.
const MAX_TILES: u32 = 16;

/// What `[render]` makes of a job.
#[derive(Debug)]
pub(crate) struct RenderPlan {
    /// The program (its image is set by the caller).
    pub(crate) program: Program,
    /// One item a frame.
    pub(crate) items: u64,
    /// How frames are compared when the job file does not say.
    pub(crate) equivalence: Equivalence,
}

/// The image equivalence a render gets by default.
pub(crate) fn default_equivalence() -> Equivalence {
    Equivalence::Image {
        min_psnr_mdb: (crate::jobfile::DEFAULT_MIN_PSNR_DB * 1e3) as u32,
        max_diff: crate::jobfile::DEFAULT_MAX_PIXEL_DIFF,
    }
}

/// The program and items of `raw`, whose scene lands as `$GRIDWORK_INPUTS/<scene_file>`;
/// errors name the field.
pub(crate) fn plan(
    raw: &RawRender,
    scene_file: &str,
) -> Result<RenderPlan, (&'static str, String)> {
    let [first, last] = raw.frames;
    if last < first {
        return Err((
            "render.frames",
            format!("[{first}, {last}]: the last frame comes before the first"),
        ));
    }
    let frames = last - first + 1;
    let (cols, rows) = match raw.tiles {
        None => (1, 1),
        Some([c, r]) => {
            if !(1..=MAX_TILES).contains(&c) || !(1..=MAX_TILES).contains(&r) {
                return Err((
                    "render.tiles",
                    format!("[{c}, {r}]: from 1 to {MAX_TILES} tiles a side"),
                ));
            }
            // Every tile the same whole number of pixels, so the merged frame has no seam.
            match raw.resolution {
                Some([w, h]) if w % c == 0 && h % r == 0 => (c, r),
                Some([w, h]) => {
                    return Err((
                        "render.tiles",
                        format!("{w} x {h} pixels do not divide into {c} x {r} tiles of whole pixels; pick a resolution each side of the grid divides"),
                    ))
                }
                None => {
                    return Err((
                        "render.tiles",
                        "needs render.resolution, which the tiles must divide".into(),
                    ))
                }
            }
        }
    };
    let per_frame = u64::from(cols) * u64::from(rows);
    let items = frames
        .checked_mul(per_frame)
        .ok_or_else(|| ("render.tiles", "too many items".to_string()))?;
    let engine = match raw.engine.as_str() {
        "cycles" => "CYCLES",
        "workbench" => "BLENDER_WORKBENCH",
        other => {
            return Err((
                "render.engine",
                format!("is `{other}`; use `cycles` or `workbench` (Eevee needs a display, which workers have not)"),
            ))
        }
    };
    let mut settings = vec![
        "import bpy, os".to_string(),
        "s = bpy.context.scene".to_string(),
        "r = s.render".to_string(),
        format!("r.engine = '{engine}'"),
        "r.use_file_extension = True".to_string(),
        "r.use_overwrite = True".to_string(),
        "r.use_placeholder = False".to_string(),
        "r.image_settings.file_format = 'PNG'".to_string(),
        "r.image_settings.color_depth = '8'".to_string(),
        // Neither burnt into the pixels nor written as metadata.
        "r.use_stamp = False".to_string(),
        "[setattr(r, k, False) for k in dir(r) if k.startswith('use_stamp')]".to_string(),
    ];
    if let Some([w, h]) = raw.resolution {
        if !(1..=MAX_SIDE).contains(&w) || !(1..=MAX_SIDE).contains(&h) {
            return Err((
                "render.resolution",
                format!("[{w}, {h}]: each side from 1 to {MAX_SIDE} pixels"),
            ));
        }
        settings.push(format!("r.resolution_x = {w}"));
        settings.push(format!("r.resolution_y = {h}"));
        settings.push("r.resolution_percentage = 100".to_string());
    }
    match (engine, raw.samples) {
        ("CYCLES", samples) => {
            if let Some(n) = samples {
                if !(1..=MAX_SAMPLES).contains(&n) {
                    return Err(("render.samples", format!("is {n}; from 1 to {MAX_SAMPLES}")));
                }
                settings.push(format!("s.cycles.samples = {n}"));
            }
            settings.extend(
                [
                    "s.cycles.device = 'CPU'",
                    "s.cycles.seed = 0",
                    "s.cycles.use_animated_seed = False",
                    "s.cycles.use_denoising = False",
                ]
                .map(String::from),
            );
        }
        (_, Some(_)) => {
            return Err((
                "render.samples",
                "is for `cycles`; the workbench engine takes none".into(),
            ))
        }
        _ => {}
    }
    let scene = format!("inputs/{scene_file}");
    // A script that fails fails the run (exit 1), rather than rendering the scene as it was.
    let exit_code = ["--python-exit-code".to_string(), "1".to_string()];
    let mut args = vec!["-b".to_string()];
    if scene_file.ends_with(".blend") {
        args.push(scene);
        args.extend(exit_code);
    } else if scene_file.ends_with(".py") {
        // The script builds the scene from Blender's own defaults, the same everywhere.
        args.push("--factory-startup".into());
        args.extend(exit_code);
        args.extend(["--python".into(), scene]);
    } else {
        return Err((
            "render.scene",
            format!("`{scene_file}` is neither a .blend file nor a .py script that builds one"),
        ));
    }
    let outputs = if per_frame == 1 {
        // Whole frames: Blender's own animation render, over the task's frames.
        settings.extend([
            format!("s.frame_start = {first} + int(os.environ['GRIDWORK_ITEM_START'])"),
            format!("s.frame_end = {first} + int(os.environ['GRIDWORK_ITEM_END']) - 1"),
            "s.frame_step = 1".to_string(),
            "r.filepath = os.path.join(os.environ['GRIDWORK_OUTPUTS'], 'frames', 'frame_#####')"
                .to_string(),
        ]);
        args.extend(["--python-expr".into(), settings.join("\n")]);
        args.push("-a".into());
        FRAMES_GLOB
    } else {
        // Tiles: item i is tile i % (cols x rows) of frame first + i / (cols x rows), column
        // by column along a row, rows from the top (Blender's border counts from the bottom).
        settings.extend([
            "out = os.environ['GRIDWORK_OUTPUTS']".to_string(),
            format!("C, R, first = {cols}, {rows}, {first}"),
            "for i in range(int(os.environ['GRIDWORK_ITEM_START']), int(os.environ['GRIDWORK_ITEM_END'])):".to_string(),
            "    f, t = first + i // (C * R), i % (C * R)".to_string(),
            "    c, w = t % C, t // C".to_string(),
            "    s.frame_set(f)".to_string(),
            "    r.use_border, r.use_crop_to_border = True, True".to_string(),
            "    r.border_min_x, r.border_max_x = c / C, (c + 1) / C".to_string(),
            "    r.border_min_y, r.border_max_y = 1 - (w + 1) / R, 1 - w / R".to_string(),
            "    r.filepath = os.path.join(out, 'tiles', 'frame_%05d_tile_%d_%d.png' % (f, c, w))".to_string(),
            "    bpy.ops.render.render(write_still=True)".to_string(),
        ]);
        args.extend(["--python-expr".into(), settings.join("\n")]);
        TILES_GLOB
    };
    Ok(RenderPlan {
        program: Program {
            command: "blender".into(),
            args,
            outputs: vec![outputs.into()],
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        items,
        equivalence: default_equivalence(),
    })
}

/// How a render job's items map to frames, read back from the program the template wrote
/// (`None` for any other program): items count from `first`, `per_frame` items a frame (1, or
/// the tiles of the grid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLayout {
    /// The first frame.
    pub first: u64,
    /// Items a frame.
    pub per_frame: u64,
}

impl RenderLayout {
    /// Reads the layout of `program`, if the render template wrote it.
    pub fn of(program: &Program) -> Option<RenderLayout> {
        if program.command != "blender" {
            return None;
        }
        let settings = program
            .args
            .iter()
            .find(|a| a.starts_with("import bpy, os\n"))?;
        for line in settings.lines() {
            if let Some(rest) = line.strip_prefix("s.frame_start = ") {
                let first = rest.split(' ').next()?.parse().ok()?;
                return Some(RenderLayout {
                    first,
                    per_frame: 1,
                });
            }
            if let Some(rest) = line.strip_prefix("C, R, first = ") {
                let n: Vec<u64> = rest.split(", ").filter_map(|n| n.parse().ok()).collect();
                if let [c, r, first] = n[..] {
                    return Some(RenderLayout {
                        first,
                        per_frame: c.checked_mul(r)?.max(1),
                    });
                }
            }
        }
        None
    }

    /// The frames items `[start, end)` cover, first and last.
    pub fn frames(&self, (start, end): (u64, u64)) -> (u64, u64) {
        let frame = |item: u64| self.first.saturating_add(item / self.per_frame);
        (frame(start), frame(end.saturating_sub(1).max(start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawRender {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_render_is_one_item_a_frame_and_fixes_what_would_differ() {
        let p = plan(
            &raw("scene = \"./s.py\"\nframes = [3, 10]\nsamples = 8\nresolution = [64, 48]"),
            "s.py",
        )
        .unwrap();
        assert_eq!(p.items, 8);
        assert_eq!(p.program.command, "blender");
        assert_eq!(p.program.outputs, ["frames/*.png"]);
        let args = p.program.args.join(" ");
        assert!(args.starts_with("-b --factory-startup --python-exit-code 1 --python inputs/s.py"));
        assert!(args.ends_with(" -a"));
        for fixed in [
            "s.frame_start = 3 + int(os.environ['GRIDWORK_ITEM_START'])",
            "'GRIDWORK_OUTPUTS'], 'frames', 'frame_#####'",
            "r.use_stamp = False",
            "s.cycles.samples = 8",
            "s.cycles.seed = 0",
            "s.cycles.use_denoising = False",
            "r.resolution_x = 64",
        ] {
            assert!(args.contains(fixed), "{fixed}");
        }
        let blend = plan(&raw("scene = \"a.blend\"\nframes = [1, 1]"), "a.blend").unwrap();
        assert_eq!(&blend.program.args[..2], ["-b", "inputs/a.blend"]);
    }

    /// Split into tiles, a render is one item a tile, each task renders its tiles by border
    /// to `tiles/`, and the grid must divide the resolution into whole pixels.
    #[test]
    fn a_tiled_render_is_one_item_a_tile() {
        let p = plan(
            &raw("scene = \"s.py\"\nframes = [1, 4]\nresolution = [96, 54]\ntiles = [3, 2]"),
            "s.py",
        )
        .unwrap();
        assert_eq!(p.items, 24);
        assert_eq!(p.program.outputs, ["tiles/*.png"]);
        let args = p.program.args.join(" ");
        assert!(args.contains("C, R, first = 3, 2, 1"), "{args}");
        assert!(args.contains("bpy.ops.render.render(write_still=True)"));
        assert!(!args.ends_with(" -a"));
        let err = plan(
            &raw("scene = \"s.py\"\nframes = [1, 4]\nresolution = [100, 54]\ntiles = [3, 2]"),
            "s.py",
        )
        .unwrap_err();
        assert_eq!(err.0, "render.tiles");
        assert!(err.1.contains("do not divide"), "{}", err.1);
        let err = plan(
            &raw("scene = \"s.py\"\nframes = [1, 4]\ntiles = [2, 2]"),
            "s.py",
        )
        .unwrap_err();
        assert!(err.1.contains("needs render.resolution"), "{}", err.1);
    }

    /// `job status` and `job watch` read the frames of each task back from the program.
    #[test]
    fn the_layout_reads_back_from_the_program_the_template_wrote() {
        let whole = plan(&raw("scene = \"s.py\"\nframes = [5, 20]"), "s.py").unwrap();
        let layout = RenderLayout::of(&whole.program).unwrap();
        assert_eq!(
            layout,
            RenderLayout {
                first: 5,
                per_frame: 1
            }
        );
        assert_eq!(layout.frames((4, 8)), (9, 12));
        let tiled = plan(
            &raw("scene = \"s.py\"\nframes = [1, 4]\nresolution = [96, 54]\ntiles = [3, 2]"),
            "s.py",
        )
        .unwrap();
        let layout = RenderLayout::of(&tiled.program).unwrap();
        assert_eq!(
            layout,
            RenderLayout {
                first: 1,
                per_frame: 6
            }
        );
        assert_eq!(layout.frames((6, 12)), (2, 2));
        let mut other = whole.program.clone();
        other.command = "sh".into();
        assert_eq!(RenderLayout::of(&other), None);
    }

    #[test]
    fn what_no_worker_could_render_is_refused_naming_the_field() {
        for (text, field) in [
            ("scene = \"s.py\"\nframes = [5, 4]", "render.frames"),
            (
                "scene = \"s.py\"\nframes = [1, 2]\nengine = \"eevee\"",
                "render.engine",
            ),
            (
                "scene = \"s.py\"\nframes = [1, 2]\nsamples = 0",
                "render.samples",
            ),
            (
                "scene = \"s.py\"\nframes = [1, 2]\nengine = \"workbench\"\nsamples = 4",
                "render.samples",
            ),
            (
                "scene = \"s.py\"\nframes = [1, 2]\nresolution = [0, 9]",
                "render.resolution",
            ),
            ("scene = \"s.obj\"\nframes = [1, 2]", "render.scene"),
        ] {
            let scene = raw(text).scene.trim_start_matches("./").to_string();
            let err = plan(&raw(text), &scene).unwrap_err();
            assert_eq!(err.0, field, "{text}: {}", err.1);
        }
    }
}
