//! Node configuration: a TOML file, then environment overrides, then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gridwork_types::Amount;
use serde::{Deserialize, Serialize};

/// Default API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7650";

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node config.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (names the field).
        message: String,
    },
    /// An environment variable has a bad value.
    #[error("environment variable {name}={value} is invalid: {expected}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

/// Default of [`NodeConfig::chunk_account_quota_bytes`]: 10 GiB per account.
pub(crate) const DEFAULT_ACCOUNT_QUOTA_BYTES: u64 = 10 << 30;

/// How a node runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where the chain database and the genesis copy live.
    pub data_dir: PathBuf,
    /// API listen address.
    pub listen: SocketAddr,
    /// The Solo sequencer cuts a block this often while transactions wait.
    pub block_interval_ms: u64,
    /// The most transactions in one block.
    pub max_block_txs: usize,
    /// The most transactions waiting at once.
    pub mempool_capacity: usize,
    /// The most bytes of transactions waiting at once.
    pub mempool_max_bytes: usize,
    /// The most transactions one sender may have waiting.
    pub mempool_max_per_sender: usize,
    /// A genesis file (TOML or JSON) for a new chain; ignored once the chain exists, except
    /// that it must match.
    pub genesis: Option<PathBuf>,
    /// Most bytes the data plane's chunk store may hold (none: the disk is the limit).
    pub chunk_quota_bytes: Option<u64>,
    /// Most bytes one account may keep on the node (default 10 GiB; none, from code: no limit but the
    /// store's): pinned trees, charged to the account that signed the pin, and uploads not
    /// yet pinned.
    pub chunk_account_quota_bytes: Option<u64>,
    /// What an account must hold, balance and stake together, for the node to take its
    /// uploads, pins and key grants (default 1 GRID, in base units): accounts are free to
    /// make, so without it every dust account would bring its own quota.
    pub chunk_min_funds: Amount,
    /// How long a pinned tree is kept after its last pin (each push pins its tree); trees
    /// that open jobs read or produced are kept past it.
    pub chunk_retention_secs: u64,
    /// How long chunks that no pin names yet are kept (uploads still in progress).
    pub chunk_upload_grace_secs: u64,
    /// How often garbage collection runs (it also runs when the store is full).
    pub chunk_gc_interval_secs: u64,
    /// Most bytes kept of one task log (per run and stream); later output stays on the worker.
    pub log_limit_bytes: u64,
    /// Seconds a closed job's task logs are kept after their last write (they carry what
    /// programs printed of their inputs).
    pub log_retention_secs: u64,
    /// Serve the chunk store peer to peer on this UDP address too (none: HTTP only).
    pub p2p_listen: Option<SocketAddr>,
    /// The addresses peers reach the node's endpoint at (none: the listen address when it
    /// names a specific ip).
    pub p2p_announce: Vec<SocketAddr>,
    /// A request's headers must arrive within this many ms (it also bounds an idle
    /// keep-alive connection).
    pub http_header_timeout_ms: u64,
    /// API connections open at once; more are closed as they arrive.
    pub http_max_connections: usize,
    /// API connections open at once from one client address.
    pub http_max_connections_per_ip: usize,
    /// API connections open at once from one network (an IPv4 /24, an IPv6 /48).
    pub http_max_connections_per_network: usize,
    /// The longest gap, in ms, between two pieces of a request body.
    pub http_body_idle_timeout_ms: u64,
    /// A whole request body must arrive within this many ms.
    pub http_body_timeout_ms: u64,
    /// After `http_header_timeout_ms`, a request body must keep arriving at this many bytes
    /// a second on average.
    pub http_body_min_bytes_per_sec: u64,
    /// A response the client has taken nothing of for this many ms is cut off.
    pub http_write_idle_timeout_ms: u64,
    /// A response is cut off once the node has waited `http_write_idle_timeout_ms` in all on
    /// a client that took fewer than this many bytes a second meanwhile.
    pub http_write_min_bytes_per_sec: u64,
    /// Bytes of upload bodies and fetch answers the API holds in memory at once.
    pub http_body_memory_bytes: usize,
}

impl NodeConfig {
    /// The API server's connection limits.
    pub fn serve_limits(&self) -> crate::ServeLimits {
        let ms = |ms: u64| std::time::Duration::from_millis(ms.max(1));
        crate::ServeLimits {
            header_read_timeout: std::time::Duration::from_millis(
                self.http_header_timeout_ms.max(1),
            ),
            max_connections: self.http_max_connections.max(1),
            max_connections_per_ip: self.http_max_connections_per_ip.max(1),
            max_connections_per_network: self.http_max_connections_per_network.max(1),
            body_idle_timeout: ms(self.http_body_idle_timeout_ms),
            body_timeout: ms(self.http_body_timeout_ms),
            body_min_rate: self.http_body_min_bytes_per_sec,
            write_idle_timeout: ms(self.http_write_idle_timeout_ms),
            write_min_rate: self.http_write_min_bytes_per_sec,
            // At least one largest body, or no upload could ever be taken.
            body_memory_bytes: self
                .http_body_memory_bytes
                .max(gridwork_api::frames::MAX_UPLOAD_BYTES + (1 << 20)),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("gridwork-data"),
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7650))),
            block_interval_ms: 200,
            max_block_txs: 20_000,
            mempool_capacity: 500_000,
            mempool_max_bytes: crate::mempool::DEFAULT_MEMPOOL_MAX_BYTES,
            mempool_max_per_sender: crate::mempool::DEFAULT_MEMPOOL_MAX_PER_SENDER,
            genesis: None,
            chunk_quota_bytes: None,
            chunk_account_quota_bytes: Some(DEFAULT_ACCOUNT_QUOTA_BYTES),
            chunk_min_funds: Amount::grid(1),
            chunk_retention_secs: 7 * 24 * 3600,
            chunk_upload_grace_secs: 24 * 3600,
            chunk_gc_interval_secs: 3600,
            log_limit_bytes: crate::DEFAULT_LOG_LIMIT_BYTES,
            log_retention_secs: crate::DEFAULT_LOG_RETENTION_SECS,
            p2p_listen: None,
            p2p_announce: Vec::new(),
            http_header_timeout_ms: 10_000,
            http_max_connections: 1024,
            http_max_connections_per_ip: 64,
            http_max_connections_per_network: 256,
            http_body_idle_timeout_ms: 30_000,
            http_body_timeout_ms: 120_000,
            http_body_min_bytes_per_sec: crate::serve::DEFAULT_MIN_RATE,
            http_write_idle_timeout_ms: 30_000,
            http_write_min_bytes_per_sec: crate::serve::DEFAULT_MIN_RATE,
            http_body_memory_bytes: 1 << 30,
        }
    }
}

impl NodeConfig {
    /// Reads `file` (if given) over the defaults, then applies `GRIDWORK_DATA_DIR`,
    /// `GRIDWORK_LISTEN`, `GRIDWORK_BLOCK_INTERVAL_MS` and `GRIDWORK_GENESIS` from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => NodeConfig::default(),
        };
        if let Some(v) = env("GRIDWORK_DATA_DIR") {
            config.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("GRIDWORK_LISTEN") {
            config.listen = v.parse().map_err(|_| ConfigError::Env {
                name: "GRIDWORK_LISTEN",
                value: v.clone(),
                expected: "an address such as 127.0.0.1:7650",
            })?;
        }
        if let Some(v) = env("GRIDWORK_BLOCK_INTERVAL_MS") {
            config.block_interval_ms = v.parse().map_err(|_| ConfigError::Env {
                name: "GRIDWORK_BLOCK_INTERVAL_MS",
                value: v.clone(),
                expected: "a whole number of milliseconds",
            })?;
        }
        if let Some(v) = env("GRIDWORK_GENESIS") {
            config.genesis = Some(PathBuf::from(v));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nblock_interval_ms = 50\n",
        )
        .unwrap();
        let env = |k: &str| (k == "GRIDWORK_LISTEN").then(|| "127.0.0.1:9001".to_string());
        let config = NodeConfig::load(Some(&path), env).unwrap();
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.block_interval_ms, 50);
    }

    #[test]
    fn names_the_unknown_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "block_intervl_ms = 50\n").unwrap();
        let err = NodeConfig::load(Some(&path), |_| None).unwrap_err();
        assert!(err.to_string().contains("block_intervl_ms"), "{err}");
    }

    #[test]
    fn names_the_bad_environment_variable() {
        let err = NodeConfig::load(None, |k| {
            (k == "GRIDWORK_BLOCK_INTERVAL_MS").then(|| "soon".into())
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("GRIDWORK_BLOCK_INTERVAL_MS=soon"),
            "{err}"
        );
    }
}
