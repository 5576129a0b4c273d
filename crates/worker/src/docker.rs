//! The Docker Engine API over its Unix socket: what the container executor needs, and no
//! more.
//!
//! A dozen calls (`/_ping`, `/version`, `/info`, image load, inspect and tag, container
//! create, start, wait, logs, kill, remove, list by label), each one HTTP/1.1 request on its
//! own connection to `/var/run/docker.sock` (or the socket given), at API version 1.41 (Docker
//! 20.10 and later). A full client library (bollard) would bring a large generated crate for
//! calls this executor never makes; this module is the part it does make, over the hyper
//! the node already links.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// The API version every path is prefixed with.
const API: &str = "/v1.41";

/// How long one engine call may take (but loading an image, [`LOAD_TIMEOUT`], and waiting
/// for a container, which the task's deadline bounds).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long loading one image may take.
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The most bytes of each output stream of one container kept in its log file.
pub const LOG_CAP: u64 = 64 << 20;

/// The default socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The socket could not be reached.
    #[error("cannot reach the Docker engine at {socket}: {source} (is dockerd running, and may this user use its socket?)")]
    Connect {
        /// The socket.
        socket: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("Docker engine request {what}: {message}")]
    Http {
        /// The request.
        what: String,
        /// What failed.
        message: String,
    },
    /// The engine answered with an error.
    #[error("Docker engine refused {what} ({status}): {message}")]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// A file of the run could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

type Body = BoxBody<Bytes, std::io::Error>;

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn json_body(value: &Value) -> Body {
    Full::new(Bytes::from(value.to_string()))
        .map_err(|never| match never {})
        .boxed()
}

/// A Docker engine, reached at its Unix socket.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
}

impl Engine {
    /// The engine at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Engine {
        Engine {
            socket: socket.into(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request; the status and the whole body, or the body as it comes when
    /// `stream` is set (its frames are then the caller's to read).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: &str,
    ) -> Result<(StatusCode, hyper::body::Incoming), EngineError> {
        let what = format!("{method} {path}");
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| EngineError::Connect {
                socket: self.socket.display().to_string(),
                source,
            })?;
        let http = |e: hyper::Error| EngineError::Http {
            what: what.clone(),
            message: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(format!("{API}{path}"))
            .header("host", "docker")
            .header("content-type", content_type)
            .body(body)
            .map_err(|e| EngineError::Http {
                what: what.clone(),
                message: e.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(http)?;
        Ok((response.status(), response.into_body()))
    }

    /// One request whose answer is read whole, within [`CALL_TIMEOUT`]; an error status is
    /// a [`EngineError::Refused`] with the engine's message.
    /// `method path` with no body; `Some(status)` when the engine refused it with one of
    /// `expected` (which the caller reads as an answer), `None` when it did it.
    async fn call_or_refused(
        &self,
        method: Method,
        path: &str,
        expected: &[u16],
    ) -> Result<Option<u16>, EngineError> {
        match self.call(method, path, None).await {
            Ok(_) => Ok(None),
            Err(EngineError::Refused { status, .. }) if expected.contains(&status) => {
                Ok(Some(status))
            }
            Err(e) => Err(e),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Bytes, EngineError> {
        let what = format!("{method} {path}");
        tokio::time::timeout(CALL_TIMEOUT, self.call_unbounded(method, path, body))
            .await
            .map_err(|_| EngineError::Http {
                what,
                message: format!("no answer within {CALL_TIMEOUT:?}"),
            })?
    }

    /// [`Engine::call`] without a time limit (waiting for a container, which the caller
    /// bounds by the task's deadline).
    async fn call_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Bytes, EngineError> {
        let body = body.as_ref().map_or_else(empty, json_body);
        self.send_whole(method, path, body, "application/json")
            .await
            .map(|(_, bytes)| bytes)
    }

    /// One request whose answer is read whole: its status and body, or, for an error
    /// status, a [`EngineError::Refused`] with the engine's message.
    async fn send_whole(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: &str,
    ) -> Result<(StatusCode, Bytes), EngineError> {
        let what = format!("{method} {path}");
        let (status, incoming) = self.send(method, path, body, content_type).await?;
        let bytes = incoming
            .collect()
            .await
            .map_err(|e| EngineError::Http {
                what: what.clone(),
                message: e.to_string(),
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(refused(what, status, &bytes));
        }
        Ok((status, bytes))
    }

    async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, EngineError> {
        let what = format!("{method} {path}");
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| EngineError::Http {
            what,
            message: format!("unreadable answer: {e}"),
        })
    }

    /// A GET whose answer the caller reads as it comes; an error status is read whole.
    async fn stream_get(
        &self,
        what: &str,
        path: &str,
    ) -> Result<hyper::body::Incoming, EngineError> {
        let (status, incoming) = self
            .send(Method::GET, path, empty(), "application/json")
            .await?;
        if !status.is_success() {
            let bytes = incoming
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(refused(what.to_string(), status, &bytes));
        }
        Ok(incoming)
    }

    /// The engine's version (`/version`), which also says it answers.
    pub async fn version(&self) -> Result<String, EngineError> {
        let v = self.call_json(Method::GET, "/version", None).await?;
        Ok(v["Version"].as_str().unwrap_or_default().to_string())
    }

    /// Whether the engine has the NVIDIA runtime (`/info`), so GPUs can be passed through.
    pub async fn has_nvidia_runtime(&self) -> Result<bool, EngineError> {
        let info = self.call_json(Method::GET, "/info", None).await?;
        Ok(info["Runtimes"]
            .as_object()
            .is_some_and(|r| r.contains_key("nvidia")))
    }

    /// The id (`sha256:...`) of image `name`.
    pub async fn image_id(&self, name: &str) -> Result<String, EngineError> {
        let v = self
            .call_json(
                Method::GET,
                &format!("/images/{}/json", encode_path(name)),
                None,
            )
            .await?;
        Ok(v["Id"].as_str().unwrap_or_default().to_string())
    }

    /// The paths image `name` declares as volumes (`Config.Volumes`).
    pub async fn image_volumes(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let v = self
            .call_json(
                Method::GET,
                &format!("/images/{}/json", encode_path(name)),
                None,
            )
            .await?;
        Ok(v["Config"]["Volumes"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Whether an image of this name (or id) is loaded.
    pub async fn has_image(&self, name: &str) -> Result<bool, EngineError> {
        let path = format!("/images/{}/json", encode_path(name));
        Ok(self
            .call_or_refused(Method::GET, &path, &[404])
            .await?
            .is_none())
    }

    /// Loads a `docker save` archive, streamed from disk, within an hour; the loaded image's
    /// id or name.
    pub async fn load(&self, archive: &Path) -> Result<String, EngineError> {
        tokio::time::timeout(LOAD_TIMEOUT, self.load_unbounded(archive))
            .await
            .map_err(|_| EngineError::Http {
                what: "POST /images/load".into(),
                message: format!("not loaded within {LOAD_TIMEOUT:?}"),
            })?
    }

    async fn load_unbounded(&self, archive: &Path) -> Result<String, EngineError> {
        let what = "POST /images/load".to_string();
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|source| EngineError::Io {
                path: archive.display().to_string(),
                source,
            })?;
        let frames = tokio_stream_of(file).map(|chunk| chunk.map(Frame::data));
        let body = BoxBody::new(StreamBody::new(frames));
        let (status, bytes) = self
            .send_whole(
                Method::POST,
                "/images/load?quiet=1",
                body,
                "application/x-tar",
            )
            .await?;
        // JSON messages, one after another: "Loaded image: NAME" or "Loaded image ID: ID",
        // or an error.
        let text = String::from_utf8_lossy(&bytes);
        let mut loaded = None;
        for message in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            let Ok(message) = message else { break };
            if let Some(e) = message["error"].as_str() {
                return Err(EngineError::Refused {
                    what,
                    status: status.as_u16(),
                    message: e.to_string(),
                });
            }
            let line = message["stream"].as_str().unwrap_or_default().trim();
            if let Some(name) = line
                .strip_prefix("Loaded image ID: ")
                .or_else(|| line.strip_prefix("Loaded image: "))
            {
                loaded = Some(name.to_string());
            }
        }
        loaded.ok_or_else(|| EngineError::Refused {
            what,
            status: status.as_u16(),
            message: format!("the archive loaded no image: {}", text.trim()),
        })
    }

    /// The images whose names start with `reference` (`gridwork/image`): for each, its tags,
    /// its size in bytes and when it was created (seconds since the epoch).
    pub async fn images(
        &self,
        reference: &str,
    ) -> Result<Vec<(Vec<String>, u64, i64)>, EngineError> {
        let filters = json!({ "reference": [reference] }).to_string();
        let v = self
            .call_json(
                Method::GET,
                &format!("/images/json?filters={}", encode_query(&filters)),
                None,
            )
            .await?;
        Ok(v.as_array()
            .map(|all| {
                all.iter()
                    .map(|i| {
                        let tags = i["RepoTags"]
                            .as_array()
                            .map(|t| {
                                t.iter()
                                    .filter_map(|x| x.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        (
                            tags,
                            i["Size"].as_u64().unwrap_or(0),
                            i["Created"].as_i64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Removes the tag (or image) `name`; one a container still uses stays (`false`).
    pub async fn remove_image(&self, name: &str) -> Result<bool, EngineError> {
        let path = format!("/images/{}", encode_path(name));
        // 404: gone already; 409: a container uses it.
        let refused = self
            .call_or_refused(Method::DELETE, &path, &[404, 409])
            .await?;
        Ok(refused != Some(409))
    }

    /// Tags image `image` as `repo:tag`.
    pub async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), EngineError> {
        self.call(
            Method::POST,
            &format!("/images/{image}/tag?repo={repo}&tag={tag}"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Writes image `name` as a `docker save` archive to `out`.
    pub async fn save(&self, name: &str, out: &Path) -> Result<u64, EngineError> {
        let what = format!("GET /images/{name}/get");
        let mut incoming = self
            .stream_get(&what, &format!("/images/{}/get", encode_path(name)))
            .await?;
        let io = |source| EngineError::Io {
            path: out.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(out).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| EngineError::Http {
                what: what.clone(),
                message: e.to_string(),
            })?;
            if let Some(data) = frame.data_ref() {
                file.write_all(data).await.map_err(io)?;
                written += data.len() as u64;
            }
        }
        file.sync_all().await.map_err(io)?;
        Ok(written)
    }

    /// Creates a container from `spec` (the engine's create body); its id.
    pub async fn create(&self, spec: &Value) -> Result<String, EngineError> {
        let v = self
            .call_json(Method::POST, "/containers/create", Some(spec.clone()))
            .await?;
        Ok(v["Id"].as_str().unwrap_or_default().to_string())
    }

    /// Starts container `id`.
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.call(Method::POST, &format!("/containers/{id}/start"), None)
            .await
            .map(|_| ())
    }

    /// Waits for container `id` to stop; its exit code and whether the kernel's OOM killer
    /// ended it.
    pub async fn wait(&self, id: &str) -> Result<(i64, bool), EngineError> {
        let what = format!("POST /containers/{id}/wait");
        let bytes = self
            .call_unbounded(
                Method::POST,
                &format!("/containers/{id}/wait?condition=not-running"),
                None,
            )
            .await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| EngineError::Http {
            what: what.clone(),
            message: format!("unreadable answer: {e}"),
        })?;
        let code = v["StatusCode"].as_i64().ok_or_else(|| EngineError::Http {
            what,
            message: format!("no exit code in {v}"),
        })?;
        let state = self
            .call_json(Method::GET, &format!("/containers/{id}/json"), None)
            .await?;
        Ok((code, state["State"]["OOMKilled"].as_bool().unwrap_or(false)))
    }

    /// Sends SIGKILL to container `id` (one that already stopped is fine).
    pub async fn kill(&self, id: &str) -> Result<(), EngineError> {
        let path = format!("/containers/{id}/kill");
        self.call_or_refused(Method::POST, &path, &[409]).await?;
        Ok(())
    }

    /// Removes container `id` and its anonymous volumes, stopping it if it runs.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let path = format!("/containers/{id}?force=true&v=true");
        self.call_or_refused(Method::DELETE, &path, &[404]).await?;
        Ok(())
    }

    /// The ids of every container, running or not, carrying label `key=value`.
    pub async fn labelled(&self, key: &str, value: &str) -> Result<Vec<String>, EngineError> {
        let filters = json!({ "label": [format!("{key}={value}")] }).to_string();
        let v = self
            .call_json(
                Method::GET,
                &format!(
                    "/containers/json?all=true&filters={}",
                    encode_query(&filters)
                ),
                None,
            )
            .await?;
        Ok(v.as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|c| c["Id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Follows container `id`'s output into `stdout` and `stderr` until it ends (the engine
    /// frames each piece with its stream: 1 out, 2 err).
    pub async fn logs_to(&self, id: &str, stdout: &Path, stderr: &Path) -> Result<(), EngineError> {
        let what = format!("GET /containers/{id}/logs");
        let mut incoming = self
            .stream_get(
                &what,
                &format!("/containers/{id}/logs?follow=true&stdout=true&stderr=true"),
            )
            .await?;
        let open = |path: &Path| {
            let path = path.to_path_buf();
            async move {
                tokio::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&path)
                    .await
                    .map_err(|source| EngineError::Io {
                        path: path.display().to_string(),
                        source,
                    })
            }
        };
        let (mut out, mut err) = (open(stdout).await?, open(stderr).await?);
        let mut pending: Vec<u8> = Vec::new();
        // Bytes written per stream: past LOG_CAP the rest is read and dropped.
        let mut written = [0u64; 2];
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else { break };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while pending.len() >= 8 {
                let size =
                    u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]) as usize;
                if pending.len() < 8 + size {
                    break;
                }
                let stream = usize::from(pending[0] == 2);
                let target = if stream == 1 { &mut err } else { &mut out };
                let room = LOG_CAP.saturating_sub(written[stream]) as usize;
                let piece = &pending[8..8 + size.min(room)];
                written[stream] += piece.len() as u64;
                if let Err(source) = target.write_all(piece).await {
                    return Err(EngineError::Io {
                        path: stdout.display().to_string(),
                        source,
                    });
                }
                pending.drain(..8 + size);
            }
        }
        let _ = out.flush().await;
        let _ = err.flush().await;
        Ok(())
    }
}

/// Checks a `docker save` archive before the engine sees it: at most `max_bytes`, and one
/// image with no tags (`manifest.json`: one entry, `RepoTags` empty). A tagged archive would
/// have the engine move those tags (`gridwork/image:<another job's image>`, or a provider's
/// own `ubuntu:latest`) to what it loads. `gridwork image push` saves by image id, which
/// writes no tags. The reason, when refused.
///
/// The engine unpacks the whole archive before it reads it, a later entry overwriting an
/// earlier one of the same name, so the whole archive is read here, and read as strictly as
/// the engine's own reader (Go's `archive/tar`) could read it otherwise: every entry a plain
/// file or directory under a relative name, no name twice, no extended (PAX or GNU) headers
/// that could rename an entry or resize it, no legacy `repositories` file, and an OCI
/// `index.json` naming no image. (A review found a second `manifest.json` at the end of an
/// archive moved a tag while the first, read alone, had none.)
pub fn check_archive(path: &Path, max_bytes: u64) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size > max_bytes {
        return Err(format!(
            "the image archive is {size} bytes; this worker takes images of at most {max_bytes}"
        ));
    }
    let push = "(push it with `gridwork image push`)";
    let mut names: std::collections::HashSet<String> = Default::default();
    let mut manifest: Option<Value> = None;
    let mut header = [0u8; 512];
    loop {
        if file.read_exact(&mut header).is_err() {
            return Err(format!(
                "the image archive ends without its end marker {push}"
            ));
        }
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let entry = tar_entry(&header)?;
        if !names.insert(entry.name.clone()) {
            return Err(format!(
                "the image archive names `{}` twice; the engine would load the last one {push}",
                entry.name
            ));
        }
        let padded = entry.length.div_ceil(512) * 512;
        let json_entry = |file: &mut std::fs::File, what: &str| -> Result<Value, String> {
            if entry.length > 1 << 20 {
                return Err(format!("the image archive's {what} is over 1 MiB"));
            }
            let mut text = vec![0u8; entry.length as usize];
            file.read_exact(&mut text).map_err(|e| e.to_string())?;
            file.seek(SeekFrom::Current((padded - entry.length) as i64))
                .map_err(|e| e.to_string())?;
            serde_json::from_slice(&text).map_err(|e| format!("the image archive's {what}: {e}"))
        };
        match (entry.name.as_str(), entry.is_dir) {
            ("repositories", _) => {
                return Err(format!(
                    "the image archive has a `repositories` file, which tags what it loads {push}"
                ))
            }
            ("manifest.json", false) => manifest = Some(json_entry(&mut file, "manifest.json")?),
            ("index.json", false) => {
                let index = json_entry(&mut file, "index.json")?;
                let named = index["manifests"].as_array().is_some_and(|all| {
                    all.iter().any(|m| {
                        m["annotations"].as_object().is_some_and(|a| {
                            a.contains_key("org.opencontainers.image.ref.name")
                                || a.contains_key("io.containerd.image.name")
                        })
                    })
                });
                if named {
                    return Err(format!(
                        "the image archive's index.json names an image, which the engine would tag {push}"
                    ));
                }
            }
            _ => {
                file.seek(SeekFrom::Current(padded as i64))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let Some(manifest) = manifest else {
        return Err(format!("the image archive has no manifest.json {push}"));
    };
    let images = manifest.as_array().map_or(0, Vec::len);
    if images != 1 {
        return Err(format!(
            "the image archive holds {images} images; a job's image is one"
        ));
    }
    let tags = manifest[0]["RepoTags"].as_array().map_or(0, Vec::len);
    if tags != 0 {
        return Err(format!(
            "the image archive carries {tags} tag(s); a job's image carries none (push it with `gridwork image push`, which saves by image id)"
        ));
    }
    Ok(())
}

/// One entry of a tar archive, as Go's `archive/tar` would read it.
struct TarEntry {
    /// Its name, without a leading `./` or a trailing `/`.
    name: String,
    /// Its size in bytes.
    length: u64,
    /// A directory (else a regular file).
    is_dir: bool,
}

/// Reads one tar header, refusing what could make the engine see another name or size than
/// this reading: extended headers, links and devices, absolute names or `..`, a size that is
/// not plain octal, a bad checksum.
fn tar_entry(header: &[u8; 512]) -> Result<TarEntry, String> {
    let field = |range: std::ops::Range<usize>| {
        let raw = &header[range];
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    };
    let octal = |range: std::ops::Range<usize>| {
        let text = field(range);
        let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
        u64::from_str_radix(text, 8).ok()
    };
    let stored = octal(148..156).ok_or("the image archive is not a tar file")?;
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    if stored != sum {
        return Err("the image archive is not a tar file (a header's checksum is wrong)".into());
    }
    let name = field(0..100);
    // POSIX ustar joins a prefix to the name; GNU and old tar keep other things there.
    let name = if &header[257..263] == b"ustar\0" && !field(345..500).is_empty() {
        format!("{}/{name}", field(345..500))
    } else {
        name
    };
    let kind = header[156];
    let is_dir = match kind {
        b'0' | 0 => false,
        b'5' => true,
        b'x' | b'g' | b'L' | b'K' => {
            return Err(format!(
                "the image archive has an extended header at `{name}` (a layer over 8 GiB, or a name over 100 bytes): not taken"
            ))
        }
        other => {
            return Err(format!(
                "the image archive has `{name}` of tar type `{}`; an image archive holds files and directories only",
                other as char
            ))
        }
    };
    let length = octal(124..136).ok_or_else(|| {
        format!("the image archive's size of `{name}` is not plain octal (a layer over 8 GiB?)")
    })?;
    let name = name
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_string();
    if name.is_empty() && is_dir {
        return Ok(TarEntry {
            name: ".".into(),
            length,
            is_dir,
        });
    }
    if name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "the image archive names `{name}`: not a plain relative path"
        ));
    }
    Ok(TarEntry {
        name,
        length,
        is_dir,
    })
}

/// A file as a stream of chunks of up to 1 MiB.
fn tokio_stream_of(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    futures_util::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

fn refused(what: String, status: StatusCode, body: &[u8]) -> EngineError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    EngineError::Refused {
        what,
        status: status.as_u16(),
        message,
    }
}

/// Percent-encodes a path segment, keeping `:` and `/` (image names).
fn encode_path(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:/@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value.
fn encode_query(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar entry: header (type `kind`) and data, padded.
    fn entry(name: &str, kind: u8, data: &[u8]) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    fn archive(entries: &[Vec<u8>]) -> tempfile::NamedTempFile {
        let mut bytes: Vec<u8> = entries.concat();
        bytes.extend_from_slice(&[0u8; 1024]);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    const UNTAGGED: &[u8] = br#"[{"Config":"c.json","RepoTags":null,"Layers":["l/layer.tar"]}]"#;
    const TAGGED: &[u8] =
        br#"[{"Config":"c.json","RepoTags":["gridwork/image:victim"],"Layers":["l/layer.tar"]}]"#;

    fn image(extra: Vec<Vec<u8>>) -> Result<(), String> {
        let mut entries = vec![
            entry("manifest.json", b'0', UNTAGGED),
            entry("c.json", b'0', b"{}"),
            entry("l/", b'5', b""),
            entry("l/layer.tar", b'0', &[0u8; 1024]),
        ];
        entries.extend(extra);
        check_archive(archive(&entries).path(), 1 << 30)
    }

    #[test]
    fn an_untagged_image_archive_is_taken() {
        assert_eq!(image(Vec::new()), Ok(()));
    }

    /// The review's archive: an untagged manifest first, a tagged one at the end. The engine
    /// unpacks both and loads the last, moving the tag; reading only the first passed it.
    #[test]
    fn a_second_manifest_that_would_move_a_tag_is_refused() {
        let why = image(vec![entry("manifest.json", b'0', TAGGED)]).unwrap_err();
        assert!(why.contains("`manifest.json` twice"), "{why}");
        let why = image(vec![entry("./manifest.json", b'0', TAGGED)]).unwrap_err();
        assert!(why.contains("twice"), "{why}");
    }

    #[test]
    fn tags_links_extended_headers_and_legacy_tag_files_are_refused() {
        let tagged = check_archive(
            archive(&[entry("manifest.json", b'0', TAGGED)]).path(),
            1 << 30,
        )
        .unwrap_err();
        assert!(tagged.contains("1 tag(s)"), "{tagged}");
        for (extra, expected) in [
            (entry("x", b'2', b""), "tar type `2`"),
            (entry("y", b'1', b""), "tar type `1`"),
            (entry("pax", b'x', b"30 path=manifest.json\n"), "extended header"),
            (entry("repositories", b'0', b"{}"), "`repositories`"),
            (entry("../escape", b'0', b""), "not a plain relative path"),
            (
                entry(
                    "index.json",
                    b'0',
                    br#"{"manifests":[{"annotations":{"io.containerd.image.name":"docker.io/library/postgres:16"}}]}"#,
                ),
                "names an image",
            ),
        ] {
            let why = image(vec![extra]).unwrap_err();
            assert!(why.contains(expected), "{expected}: {why}");
        }
        // An OCI index that names nothing is what newer engines save by id.
        assert_eq!(
            image(vec![entry("index.json", b'0', br#"{"manifests":[{}]}"#)]),
            Ok(())
        );
    }

    #[test]
    fn a_damaged_header_or_an_archive_without_its_end_is_refused() {
        let mut bad = entry("manifest.json", b'0', UNTAGGED);
        bad[0] = b'n';
        let why = check_archive(archive(&[bad]).path(), 1 << 30).unwrap_err();
        assert!(why.contains("checksum"), "{why}");
        let cut = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(cut.path(), entry("manifest.json", b'0', UNTAGGED)).unwrap();
        let why = check_archive(cut.path(), 1 << 30).unwrap_err();
        assert!(why.contains("end marker"), "{why}");
    }
}
