//! A service's server on a worker: the service's program run in the task sandbox for as long
//! as the worker sits on its council, answering HTTP on a UNIX socket in its run's `tmp/`
//! (`GRIDWORK_SOCKET`), never on the network. The worker forwards each request the gateway
//! relays to it over that socket and reads the answer, bounded in size and time: whole when
//! the server gives its length, piece by piece when it streams ([`Served::Stream`]: server-sent
//! events, or a body of no stated length), so a token stream reaches the user as it is written.
//!
//! Why a socket and not a port: a task has no network of its own (a namespace with no
//! interface up, Landlock refusing TCP), so nothing outside could reach a port it listened
//! on, and a port would be reachable by every local user. A socket file in the run directory
//! is reachable by the worker alone (the run directory is hidden from other tasks).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use bytes::Bytes;
use gridwork_types::Program;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::sandbox::{
    run_dir, task_command, Launcher, RunGuard, SandboxError, Supervision, TaskEnv,
};

/// The largest response body a worker reads from its server (and relays).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Why a server did not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// It could not be started.
    #[error(transparent)]
    Start(#[from] SandboxError),
    /// Its container could not be made or started.
    #[error("the service's container: {0}")]
    Container(String),
    /// It exited (before it was ready, or while serving).
    #[error("the service's server exited ({status}); its stderr is in {stderr}")]
    Exited {
        /// How it ended.
        status: String,
        /// Where its standard error is.
        stderr: String,
    },
    /// It made no socket within the time it had to start.
    #[error("the service's server made no socket at $GRIDWORK_SOCKET within {0:?}")]
    NotReady(Duration),
    /// It did not answer within the time a response may take.
    #[error("the service's server did not answer within {0:?}")]
    Late(Duration),
    /// Its answer was not HTTP, or too large.
    #[error("the service's server answered badly: {0}")]
    BadAnswer(String),
}

/// A request relayed to a server.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path and query, from `/` (what followed `/s/<service>` at the gateway).
    pub path: String,
    /// The `content-type` of the body, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// A server's answer, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `content-type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// A server's answer as it comes.
#[derive(Debug)]
pub enum Served {
    /// A body of stated length, read whole.
    Whole(Answer),
    /// A body the server streams (`text/event-stream`, or no length stated), read piece by
    /// piece ([`Streaming::piece`]).
    Stream(Streaming),
}

/// A server's answer, streamed: its status and content type, then its body in pieces, within
/// the time the answer had and [`MAX_RESPONSE_BYTES`] in all.
#[derive(Debug)]
pub struct Streaming {
    /// The HTTP status.
    pub status: u16,
    /// The `content-type`, if any.
    pub content_type: Option<String>,
    body: hyper::body::Incoming,
    read: usize,
    until: tokio::time::Instant,
    within: Duration,
}

impl Streaming {
    /// The next piece of the body, or `None` at its end.
    pub async fn piece(&mut self) -> Result<Option<Bytes>, ServeError> {
        loop {
            let frame = match tokio::time::timeout_at(self.until, self.body.frame()).await {
                Err(_) => return Err(ServeError::Late(self.within)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(ServeError::BadAnswer(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers, if any, are not part of the answer; nor is a piece of no bytes.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            self.read = self.read.saturating_add(data.len());
            if self.read > MAX_RESPONSE_BYTES {
                return Err(ServeError::BadAnswer(format!(
                    "a response may be at most {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            return Ok(Some(data));
        }
    }

    /// The rest of the body, whole.
    async fn whole(mut self) -> Result<Answer, ServeError> {
        let mut body = Vec::new();
        while let Some(piece) = self.piece().await? {
            body.extend_from_slice(&piece);
        }
        Ok(Answer {
            status: self.status,
            content_type: self.content_type,
            body: body.into(),
        })
    }
}

/// Connects to the server's socket, `run/tmp/http.sock` beneath `work`, as the program made
/// it and nothing else. The program controls `run/` (it is `nobody`'s on a root worker): a
/// link it leaves there (to the Docker engine's socket, which is root on the host) must not be
/// followed by the worker, which forwards the requester's requests to whatever answers. So the
/// path is resolved beneath `work` with no link followed (`openat2`, `RESOLVE_NO_SYMLINKS`),
/// must be a socket, is connected through its file descriptor, and the process that answers
/// must run as the task's user (`task_uid`: `nobody` on a root worker, else the worker's own).
async fn connect(work: &Path, task_uid: u32) -> std::io::Result<tokio::net::UnixStream> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::os::fd::AsRawFd;
    let dir = rustix::fs::open(
        work,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let socket = rustix::fs::openat2(
        &dir,
        format!("run/tmp/{}", crate::confine::SERVICE_SOCKET),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )?;
    let kind = rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&socket)?.st_mode);
    if kind != rustix::fs::FileType::Socket {
        return Err(std::io::Error::other(format!(
            "$GRIDWORK_SOCKET is a {kind:?}, not a socket"
        )));
    }
    let stream =
        tokio::net::UnixStream::connect(format!("/proc/self/fd/{}", socket.as_raw_fd())).await?;
    let peer = rustix::net::sockopt::socket_peercred(&stream)?;
    if peer.uid.as_raw() != task_uid {
        return Err(std::io::Error::other(format!(
            "the process behind $GRIDWORK_SOCKET runs as uid {}, not the task's {task_uid}",
            peer.uid.as_raw()
        )));
    }
    Ok(stream)
}

/// A service's server, running. Dropping it kills its process group; [`Server::stop`] ends it
/// and everything it started.
pub struct Server {
    runner: Runner,
    /// The work directory: the socket is `run/tmp/http.sock` beneath it ([`connect`]).
    work: PathBuf,
    /// The user the server runs as, which must be the one answering on the socket.
    task_uid: u32,
    stderr: PathBuf,
    /// The link to its `tmp/` and its control group, while it runs.
    _guard: Option<RunGuard>,
}

/// What runs a server: a supervised process in the task sandbox, or a container of the
/// service's image.
enum Runner {
    Process {
        child: tokio::process::Child,
        stop_file: PathBuf,
    },
    Container(crate::container::ContainerServer),
}

impl Server {
    /// Starts `program` as a server in `work` (its inputs already in place), confined by
    /// `launcher` (unconfined without one: tests).
    pub fn start(
        program: &Program,
        work: &Path,
        env: &TaskEnv,
        launcher: Option<&Launcher>,
    ) -> Result<Server, ServeError> {
        let err = |source| SandboxError::new(&program.command, work, source);
        let run = run_dir(work);
        for dir in [run.join("inputs"), run.join("outputs"), run.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(err)?;
        }
        let stop_file = work.join("stop");
        let status_file = work.join("run-status");
        let _ = std::fs::remove_file(&stop_file);
        let _ = std::fs::remove_file(run.join("tmp").join(crate::confine::SERVICE_SOCKET));
        let stderr = work.join("stderr.log");
        let (mut cmd, guard) = task_command(
            program,
            work,
            env,
            launcher,
            &Supervision {
                deadline: None,
                status_file: &status_file,
                stop_file: Some(&stop_file),
            },
        )
        .map_err(|e| err(std::io::Error::other(e)))?;
        cmd.stdout(std::fs::File::create(work.join("stdout.log")).map_err(err)?)
            .stderr(std::fs::File::create(&stderr).map_err(err)?);
        let child = cmd.spawn().map_err(err)?;
        let own = rustix::process::geteuid();
        // Confined on a root worker, the task becomes `nobody`; else it is this user.
        let task_uid = match launcher {
            Some(_) if own.is_root() => crate::confine::NOBODY,
            _ => own.as_raw(),
        };
        Ok(Server {
            runner: Runner::Process { child, stop_file },
            work: work.to_path_buf(),
            task_uid,
            stderr,
            _guard: Some(guard),
        })
    }

    /// Starts `program` as a server in a container of image `cid` (loaded already) over
    /// `work` (its inputs in place), with the service's `limits` as a task's run has them.
    pub async fn start_container(
        containers: &crate::container::Containers,
        cid: &gridwork_types::Hash,
        program: &Program,
        limits: &gridwork_types::Requirements,
        work: &Path,
        env: &TaskEnv,
    ) -> Result<Server, ServeError> {
        let tmp = run_dir(work).join("tmp");
        let _ = std::fs::remove_file(tmp.join(crate::confine::SERVICE_SOCKET));
        let server = containers
            .serve(cid, program, limits, work, env)
            .await
            .map_err(|e| ServeError::Container(e.to_string()))?;
        Ok(Server {
            runner: Runner::Container(server),
            work: work.to_path_buf(),
            task_uid: crate::confine::NOBODY,
            stderr: work.join("stderr.log"),
            _guard: None,
        })
    }

    /// Waits until the server accepts connections on its socket, at most `within`.
    pub async fn ready(&mut self, within: Duration) -> Result<(), ServeError> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if connect(&self.work, self.task_uid).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() >= within {
                return Err(ServeError::NotReady(within));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An error if the server has exited.
    fn check_alive(&mut self) -> Result<(), ServeError> {
        let child = match &mut self.runner {
            Runner::Process { child, .. } => child,
            Runner::Container(c) => {
                return match c.exited() {
                    None => Ok(()),
                    Some(status) => Err(ServeError::Exited {
                        status,
                        stderr: self.stderr.display().to_string(),
                    }),
                }
            }
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(ServeError::Exited {
                status: status.to_string(),
                stderr: self.stderr.display().to_string(),
            }),
            Err(e) => Err(ServeError::Exited {
                status: e.to_string(),
                stderr: self.stderr.display().to_string(),
            }),
        }
    }

    /// Sends `request` to the server and reads its answer whole, within `within` and
    /// [`MAX_RESPONSE_BYTES`].
    pub async fn forward(
        &mut self,
        request: &Relayed,
        within: Duration,
    ) -> Result<Answer, ServeError> {
        match self.send(request, within).await? {
            Served::Whole(answer) => Ok(answer),
            Served::Stream(streaming) => streaming.whole().await,
        }
    }

    /// Sends `request` to the server: its answer whole when the server states its length,
    /// else as it streams; all of it within `within` and [`MAX_RESPONSE_BYTES`].
    pub async fn send(
        &mut self,
        request: &Relayed,
        within: Duration,
    ) -> Result<Served, ServeError> {
        self.check_alive()?;
        let until = tokio::time::Instant::now() + within;
        let (work, task_uid) = (self.work.clone(), self.task_uid);
        let exchange = async move {
            let stream = connect(&work, task_uid)
                .await
                .map_err(|e| ServeError::BadAnswer(format!("connecting: {e}")))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ServeError::BadAnswer(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let method = Method::from_bytes(request.method.as_bytes())
                .map_err(|e| ServeError::BadAnswer(format!("method: {e}")))?;
            let mut builder = Request::builder()
                .method(method)
                .uri(&request.path)
                .header("host", "gridwork-service");
            if let Some(ct) = &request.content_type {
                builder = builder.header("content-type", ct);
            }
            let req = builder
                .body(Full::new(request.body.clone()))
                .map_err(|e| ServeError::BadAnswer(e.to_string()))?;
            let response = sender
                .send_request(req)
                .await
                .map_err(|e| ServeError::BadAnswer(e.to_string()))?;
            let status: StatusCode = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // As the gateway decides it (`may_stream`): an answer with no body goes whole.
            let streams = gridwork_types::may_stream(&request.method, status.as_u16())
                && (content_type
                    .as_deref()
                    .is_some_and(|ct| ct.starts_with("text/event-stream"))
                    || !response.headers().contains_key("content-length"));
            if streams {
                return Ok(Served::Stream(Streaming {
                    status: status.as_u16(),
                    content_type,
                    body: response.into_body(),
                    read: 0,
                    until,
                    within,
                }));
            }
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    ServeError::BadAnswer(format!(
                        "{e} (a response may be at most {MAX_RESPONSE_BYTES} bytes)"
                    ))
                })?
                .to_bytes();
            Ok(Served::Whole(Answer {
                status: status.as_u16(),
                content_type,
                body,
            }))
        };
        match tokio::time::timeout_at(until, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(ServeError::Late(within)),
        }
    }

    /// Ends the server and everything it started: the supervisor is told to stop (it ends
    /// every process beneath it), and the process group is killed if it has not ended within
    /// five seconds.
    pub async fn stop(self) {
        let (mut child, stop_file) = match self.runner {
            Runner::Process { child, stop_file } => (child, stop_file),
            Runner::Container(c) => return c.stop().await,
        };
        let _ = std::fs::write(&stop_file, b"");
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            if let Some(pgid) = child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32))
            {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SocketPlanter`: a service's program leaves `$GRIDWORK_SOCKET` as a link to a socket
    /// outside its run (the Docker engine's, root on the host). The worker does not follow it:
    /// the host's daemon is never reached. A socket the program made itself is connected,
    /// but only when the process answering runs as the task's user.
    #[tokio::test]
    async fn the_worker_connects_to_the_servers_own_socket_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("service");
        let tmp = run_dir(&work).join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let own = rustix::process::geteuid().as_raw();
        // The host's daemon, outside the run.
        let daemon_path = dir.path().join("docker.sock");
        let daemon = tokio::net::UnixListener::bind(&daemon_path).unwrap();
        let socket = tmp.join(crate::confine::SERVICE_SOCKET);
        std::os::unix::fs::symlink(&daemon_path, &socket).unwrap();
        // Opened as the link itself (`O_PATH | O_NOFOLLOW`), it is no socket.
        let err = connect(&work, own).await.unwrap_err();
        assert!(err.to_string().contains("Symlink, not a socket"), "{err}");
        // `tmp` itself swapped for a link to the daemon's directory: not followed either.
        std::fs::remove_file(&socket).unwrap();
        std::fs::remove_dir(&tmp).unwrap();
        let beside =
            tokio::net::UnixListener::bind(dir.path().join(crate::confine::SERVICE_SOCKET))
                .unwrap();
        std::os::unix::fs::symlink(dir.path(), &tmp).unwrap();
        assert!(connect(&work, own).await.is_err());
        for listener in [&daemon, &beside] {
            assert!(
                tokio::time::timeout(Duration::from_millis(100), listener.accept())
                    .await
                    .is_err(),
                "a daemon outside the run was reached"
            );
        }
        // The server's own socket: connected, as the task's user only.
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();
        let server = tokio::net::UnixListener::bind(&socket).unwrap();
        assert!(connect(&work, own).await.is_ok());
        let _ = server.accept().await.unwrap();
        let err = connect(&work, own.wrapping_add(1)).await.unwrap_err();
        assert!(err.to_string().contains("not the task's"), "{err}");
        // Not a socket at all.
        drop(server);
        std::fs::remove_file(&socket).unwrap();
        std::fs::write(&socket, "").unwrap();
        let err = connect(&work, own).await.unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
    }
}
