//! What programs this machine offers tasks, and whether a job's program is among them.
//!
//! A worker registers the programs it found with its hardware (`Hardware::software`), so
//! the ledger draws councils for a job that requires `blender >= 4.0` only among providers
//! that list it, and the worker itself declines such a job, saying what it lacks, instead of
//! running it and failing. Two sources:
//!
//! - a fixed table of common task programs ([`KNOWN`]), looked up on the tasks' `PATH`
//!   ([`TASK_PATH`]) and asked for their version with their usual flag;
//! - the provider's own declarations (`gridwork worker --software NAME[=VERSION]`): with a
//!   version it is taken as written, without one the program is looked up and asked
//!   `--version` like the table's.
//!
//! Only programs the provider installed run here, each with a fixed argument list: a job
//! never chooses what the worker executes outside the sandbox. A version is the first run of
//! dotted numbers in what the program printed (`Blender 4.0.2` is 4.0.2); a program that
//! prints none is listed with an empty version, which meets a bare `name` requirement and no
//! `name >= version` one.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gridwork_types::{check_software_name, Program, Software};

/// The `PATH` tasks run with (the sandbox sets nothing else).
pub const TASK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Common task programs and the arguments that make each print its version (none: the
/// program is listed without one).
pub const KNOWN: &[(&str, &[&str])] = &[
    ("sh", &[]),
    ("bash", &["--version"]),
    ("python3", &["--version"]),
    ("python", &["--version"]),
    ("blender", &["--version"]),
    ("ffmpeg", &["-version"]),
    ("node", &["--version"]),
    ("Rscript", &["--version"]),
    ("julia", &["--version"]),
    ("java", &["-version"]),
    ("gcc", &["--version"]),
    ("nvcc", &["--version"]),
    ("rsync", &["--version"]),
    ("convert", &["-version"]),
];

/// How long a program may take to say its version (Blender loads for a while).
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

/// The most bytes of a version answer read.
const VERSION_OUTPUT: u64 = 64 * 1024;

/// A program the provider declares: `NAME` or `NAME=VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The program as tasks call it.
    pub name: String,
    /// Its version, when the provider wrote one.
    pub version: Option<String>,
}

impl std::str::FromStr for Declared {
    type Err = String;

    fn from_str(text: &str) -> Result<Declared, String> {
        let (name, version) = match text.split_once('=') {
            Some((name, version)) => (name.trim(), Some(version.trim().to_string())),
            None => (text.trim(), None),
        };
        check_software_name(name).map_err(|e| format!("`{text}` {e}"))?;
        if let Some(v) = &version {
            if v.is_empty() || v.len() > gridwork_types::MAX_SOFTWARE_TEXT {
                return Err(format!(
                    "`{text}` has an empty or overlong version; write NAME or NAME=VERSION, as in blender=4.0.2"
                ));
            }
        }
        Ok(Declared {
            name: name.to_string(),
            version,
        })
    }
}

/// The programs this machine offers tasks: the provider's declarations first, then what
/// of [`KNOWN`] is installed. A declared program that is not on the tasks' `PATH` and has
/// no version is left out, with a warning.
pub fn probe_software(declared: &[Declared]) -> Vec<Software> {
    let mut found: Vec<Software> = Vec::new();
    for d in declared {
        if found.iter().any(|s| s.name == d.name) {
            continue;
        }
        let version = match &d.version {
            Some(v) => v.clone(),
            None => match find_on_path(&d.name) {
                Some(path) => version_of(&path, &["--version"]),
                None => {
                    tracing::warn!(program = %d.name, path = TASK_PATH, "a declared program is not on the tasks' PATH; not offered");
                    continue;
                }
            },
        };
        found.push(Software {
            name: d.name.clone(),
            version,
        });
    }
    let known: Vec<(&str, PathBuf, &[&str])> = KNOWN
        .iter()
        .filter(|(name, _)| !found.iter().any(|s| s.name == *name))
        .filter_map(|(name, args)| find_on_path(name).map(|p| (*name, p, *args)))
        .collect();
    // Asked side by side: a slow starter (Blender) does not hold up the rest.
    let versions: Vec<String> = std::thread::scope(|scope| {
        let asks: Vec<_> = known
            .iter()
            .map(|(_, path, args)| {
                scope.spawn(move || {
                    if args.is_empty() {
                        String::new()
                    } else {
                        version_of(path, args)
                    }
                })
            })
            .collect();
        asks.into_iter()
            .map(|a| a.join().unwrap_or_default())
            .collect()
    });
    for ((name, _, _), version) in known.iter().zip(versions) {
        found.push(Software {
            name: (*name).to_string(),
            version,
        });
    }
    found.truncate(gridwork_types::Hardware::MAX_LISTED);
    found
}

/// Why this worker cannot run `program`: its command names no executable file on the
/// tasks' `PATH`. `None` when it can, or when the command is a path (`./run.sh`, an input
/// of the job), which only the run can tell.
pub fn missing_command(program: &Program) -> Option<String> {
    let command = program.command.trim();
    if command.contains('/') || find_on_path(command).is_some() {
        return None;
    }
    Some(format!(
        "software: the program `{command}` is not installed on this worker (tasks' PATH {TASK_PATH})"
    ))
}

/// `name` as the tasks' `PATH` resolves it: the first executable regular file.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    TASK_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `path args` with nothing on stdin, a clean environment and a time limit, and reads
/// the first dotted number it printed (stdout, else stderr); empty when none.
fn version_of(path: &Path, args: &[&str]) -> String {
    let child = Command::new(path)
        .args(args)
        .env_clear()
        .env("PATH", TASK_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return String::new();
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        return String::new();
    };
    let read = |pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.take(VERSION_OUTPUT).read_to_string(&mut text);
            text
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < VERSION_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(program = %path.display(), "did not say its version in time");
                break;
            }
        }
    }
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    first_version(&out)
        .or_else(|| first_version(&err))
        .unwrap_or_default()
}

/// The first run of dotted numbers with at least one dot (`Python 3.11.7` is 3.11.7), or
/// else the first number.
pub fn first_version(text: &str) -> Option<String> {
    let runs: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|run| run.trim_matches('.'))
        .filter(|run| !run.is_empty())
        .collect();
    runs.iter()
        .find(|run| run.contains('.'))
        .or(runs.first())
        .map(|run| {
            run.chars()
                .take(gridwork_types::MAX_SOFTWARE_TEXT)
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_what_programs_print() {
        assert_eq!(first_version("Python 3.11.7\n").as_deref(), Some("3.11.7"));
        assert_eq!(
            first_version("Blender 4.0.2\n\tbuild date: 2024-01-01\n").as_deref(),
            Some("4.0.2")
        );
        assert_eq!(
            first_version("ffmpeg version 5.1.6-0+deb12u1 Copyright (c) 2000-2024").as_deref(),
            Some("5.1.6")
        );
        assert_eq!(first_version("v20.20.2").as_deref(), Some("20.20.2"));
        assert_eq!(first_version("no digits").as_deref(), None);
    }

    #[test]
    fn declarations_read_name_and_optional_version() {
        assert_eq!(
            "blender=4.0.2".parse::<Declared>(),
            Ok(Declared {
                name: "blender".into(),
                version: Some("4.0.2".into())
            })
        );
        assert_eq!("sh".parse::<Declared>().unwrap().version, None);
        assert!("bad name".parse::<Declared>().is_err());
        assert!("x=".parse::<Declared>().is_err());
    }

    #[test]
    fn the_tasks_shell_is_found_and_a_missing_program_is_named() {
        let sh = Program {
            command: "sh".into(),
            args: vec![],
            outputs: vec![],
            image: None,
            network: false,
            vendor_images: Vec::new(),
        };
        assert_eq!(missing_command(&sh), None);
        let absent = Program {
            command: "no-such-program-here".into(),
            ..sh.clone()
        };
        let why = missing_command(&absent).unwrap();
        assert!(
            why.contains("`no-such-program-here` is not installed"),
            "{why}"
        );
        let path = Program {
            command: "./run.sh".into(),
            ..sh
        };
        assert_eq!(missing_command(&path), None);
        let offered = probe_software(&["custom-tool=1.2".parse().unwrap()]);
        assert_eq!(offered[0].name, "custom-tool");
        assert_eq!(offered[0].version, "1.2");
        assert!(offered.iter().any(|s| s.name == "sh"), "{offered:?}");
    }
}
