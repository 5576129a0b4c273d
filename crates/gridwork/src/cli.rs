//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Gridwork: a decentralized GPU compute network. One binary for the node, the worker and the CLI.
#[derive(Debug, Parser)]
#[command(name = "gridwork", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Node API to talk to.
    #[arg(
        long,
        global = true,
        env = "GRIDWORK_NODE",
        default_value = "http://127.0.0.1:7650"
    )]
    pub(crate) node: String,
    /// Name of the keystore key that signs.
    #[arg(long, global = true, env = "GRIDWORK_KEY")]
    pub(crate) key: Option<String>,
    /// Gridwork's home directory (keystore, default node data).
    #[arg(long, global = true, env = "GRIDWORK_HOME")]
    pub(crate) home: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// The most GiB of chunks kept in the local cache (GRIDWORK_HOME/chunks) after a pull;
    /// the least recently used go first. The cache makes interrupted pulls resume and
    /// repeated pulls of a changed tree fetch only the changes. 0: keep nothing.
    #[arg(
        long,
        global = true,
        env = "GRIDWORK_CACHE_MAX_GIB",
        default_value_t = 10
    )]
    pub(crate) cache_max_gib: u64,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage keys in the encrypted keystore.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a node: ledger, API and block producer.
    Node(NodeArgs),
    /// Show an account's balance, stake, unbonding and escrow (default: the --key account).
    Balance {
        /// Address to show (default: the address of --key).
        address: Option<String>,
    },
    /// Send GRID to an address.
    Transfer {
        /// Recipient address (grid1...).
        to: String,
        /// Amount in GRID, such as 12.5.
        amount: String,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Lock, unbond and withdraw stake in the vault.
    #[command(subcommand)]
    Stake(StakeCommand),
    /// Look up transactions.
    #[command(subcommand)]
    Tx(TxCommand),
    /// Look up blocks.
    #[command(subcommand)]
    Block(BlockCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    #[cfg(feature = "bench")]
    Bench(BenchCommand),
    /// Submit, follow and collect jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Look up providers.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Publish, fund, follow and close services (stream tasks: an HTTP endpoint served by a
    /// council of providers); providers subscribe to serve them.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Run a worker: probe the hardware, stake, register, bid, run and check tasks.
    Worker(WorkerArgs),
    /// Show what a worker on this machine would offer: GPUs (NVIDIA through NVML), CPU, memory.
    Probe(ProbeArgs),
    /// One command: a dev node and three local workers, a sample job, its settlement.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Move data: chunked, compressed, encrypted, resumable, de-duplicated.
    #[command(subcommand)]
    Data(DataCommand),
    /// Container images for jobs, through the data plane.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Internal: confine this process (limits, Landlock) and run a task program.
    #[command(hide = true)]
    SandboxExec(SandboxArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Send a local Docker image to the node (`docker save`, then a push of the archive:
    /// a new version that shares layers moves only the changed chunks); prints the image id
    /// to name in a job file (`[program] image = "img:<id>"`).
    Push {
        /// The image, as Docker names it (`pytorch-cpu:2.4`, or an image id).
        name: String,
        /// Parallel streams.
        #[arg(long, default_value_t = 8)]
        streams: usize,
        /// The Docker engine's socket.
        #[arg(long, default_value = gridwork_worker::docker::DEFAULT_SOCKET)]
        docker_socket: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DataCommand {
    /// Send a file or directory to the node; prints its content id. Only chunks the node
    /// lacks move, so a repeated or interrupted push sends only what is left.
    Push {
        /// File or directory.
        path: PathBuf,
        /// Parallel streams.
        #[arg(long, default_value_t = 8)]
        streams: usize,
    },
    /// Fetch a tree into a directory, verifying every chunk; resumes where it stopped.
    Pull {
        /// Content id.
        cid: String,
        /// Destination directory (new or empty, or the one an interrupted pull of the same
        /// tree was writing).
        #[arg(long)]
        out: PathBuf,
        /// Parallel streams.
        #[arg(long, default_value_t = 8)]
        streams: usize,
        /// Another source of chunks, repeatable: a node's base URL (http://host:port) or a
        /// provider's address (its worker's peer endpoint, as announced on the ledger).
        /// Chunks come from the node and every peer at once, each checked against its id.
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Also ask every provider that announced a peer endpoint (at most 16); those that
        /// lack the tree are skipped after one probe.
        #[arg(long)]
        from_providers: bool,
        /// Also keep the fetched chunks in the local cache (up to --cache-max-gib), so a
        /// later pull of this tree, or of another sharing chunks with it, fetches only what
        /// the cache lacks. Off: each byte is written once, to its file.
        #[arg(long)]
        keep_cache: bool,
    },
    /// Empty the local chunk cache (GRIDWORK_HOME/chunks). It only saves later pulls work;
    /// the node keeps pushed trees for its retention period.
    Gc,
    /// What the node stores for an account (default: --key): pinned trees, uploads not yet
    /// pinned, and its quota.
    Usage {
        /// Address (grid1...).
        address: Option<String>,
    },
    /// List a tree: paths, sizes, chunk counts.
    Ls {
        /// Content id.
        cid: String,
    },
    /// Let another key decrypt a tree.
    Share {
        /// Content id.
        cid: String,
        /// The recipient: a keystore name, or a public key in hex (`gridwork keys show`).
        recipient: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SandboxArgs {
    /// The only directory the program may write to.
    #[arg(long)]
    pub(crate) work: PathBuf,
    /// Address-space limit in MiB.
    #[arg(long)]
    pub(crate) memory_mib: Option<u64>,
    /// Largest file in MiB.
    #[arg(long)]
    pub(crate) max_file_mib: Option<u64>,
    /// A GPU's device node (or a directory of them) the program may open for writing
    /// (repeatable); with any, it may also write files under /proc, as CUDA needs.
    #[arg(long)]
    pub(crate) gpu_device: Vec<PathBuf>,
    /// A path the program may not read, though its work directory may lie beneath it
    /// (repeatable; the worker hides its home: keys, chunk cache, other tasks).
    #[arg(long)]
    pub(crate) hide: Vec<PathBuf>,
    /// Let the program open TCP connections and listen on TCP ports (without it, neither).
    #[arg(long)]
    pub(crate) network: bool,
    /// A control group (its directory) the program runs in, with all it starts (repeatable,
    /// one a cgroup v1 hierarchy): the worker makes one for each run, holding it to the job's
    /// memory and CPUs.
    #[arg(long)]
    pub(crate) cgroup: Vec<PathBuf>,
    /// End the run, the program and everything it started, after this many milliseconds.
    #[arg(long)]
    pub(crate) deadline_ms: Option<u64>,
    /// Write how the program ended to this file (`exit N`, `signal N` or `deadline`): the
    /// supervisor itself cannot always end by the program's signal (one it ignores, such as
    /// SIGPIPE, or one without a name).
    #[arg(long)]
    pub(crate) status_file: Option<PathBuf>,
    /// Confine this process and become the program (what the supervisor starts).
    #[arg(long, hide = true)]
    pub(crate) inner: bool,
    /// Be the first process of the run's pid namespace (what the inner process starts where
    /// the run has one), saying how the program ended on the pipe on standard input.
    #[arg(long, hide = true, requires = "inner")]
    pub(crate) pid_init: bool,
    /// End the run, the program and everything it started, once this file exists (how a
    /// worker stops a service's server).
    #[arg(long)]
    pub(crate) stop_file: Option<PathBuf>,
    /// The program is a service's server: it answers HTTP on the UNIX socket named by
    /// GRIDWORK_SOCKET (http.sock in its TMPDIR).
    #[arg(long)]
    pub(crate) serve: bool,
    /// Confine this process as a task's would be, print what held (JSON) and exit, running
    /// no program: how a worker finds, when it starts, whether its sandbox is whole here.
    #[arg(long, conflicts_with_all = ["inner", "deadline_ms", "status_file"])]
    pub(crate) check: bool,
    /// The program and its arguments.
    #[arg(last = true, required_unless_present = "check")]
    pub(crate) command: Vec<String>,
}

/// `gridwork probe`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProbeArgs {
    /// Also run the standard CPU benchmark (1 s on every core) and print the score a worker
    /// here declares (`Hardware::cpu_score`).
    #[arg(long)]
    pub(crate) bench: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Price asked per task-second, in GRID.
    #[arg(long)]
    pub(crate) price: String,
    /// Measure the CPU score again (the standard benchmark, 1 s on every core) rather than
    /// use the one kept from this machine's last measurement.
    #[arg(long)]
    pub(crate) bench: bool,
    /// Tasks run or checked at once.
    #[arg(long, default_value_t = 2)]
    pub(crate) capacity: u32,
    /// Let task programs read the home directory of the user running the worker (hidden by
    /// default: SSH keys, cloud credentials and browser profiles live there).
    #[arg(long)]
    pub(crate) tasks_may_read_home: bool,
    /// A program this worker offers tasks, `NAME` or `NAME=VERSION` (repeat for more);
    /// common ones (python3, blender, ffmpeg, ...) are found without it. Jobs that require
    /// software go only to workers that offer it.
    #[arg(long, value_name = "NAME[=VERSION]")]
    pub(crate) software: Vec<gridwork_worker::software::Declared>,
    /// How tasks run: `process` (confined processes on this machine's own system) or
    /// `docker` (also jobs that bring a container image, run through the Docker engine; jobs
    /// without one still run as processes).
    #[arg(long, value_enum, default_value_t = ExecutorArg::Process)]
    pub(crate) executor: ExecutorArg,
    /// Let tasks whose job asks for the network have it (by default such jobs are declined):
    /// outbound connections from the process sandbox, the engine's default bridge for
    /// containers. Results that depend on what a task fetches are only as reproducible as
    /// that is.
    #[arg(long)]
    pub(crate) allow_network: bool,
    /// Do not subscribe to services (stream tasks); by default the worker subscribes to those
    /// it can run and serves those whose council it sits on.
    #[arg(long)]
    pub(crate) no_services: bool,
    /// The Docker engine's socket (with `--executor docker`).
    #[arg(long, default_value = gridwork_worker::docker::DEFAULT_SOCKET)]
    pub(crate) docker_socket: PathBuf,
    /// How much the job images a docker worker loaded may take in its engine, in GiB; past
    /// it the least recently used are removed.
    #[arg(long, default_value_t = 50)]
    pub(crate) image_cache_max_gib: u64,
    /// How much cheaper, in percent, a docker worker bids for a task whose image it has
    /// loaded already (its bid says so; the run starts sooner). 0 prices both alike.
    #[arg(long, default_value_t = gridwork_worker::DEFAULT_CACHED_DISCOUNT_PCT,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) cached_discount: u8,
    /// The most one transaction may pay in fees, in GRID: steps go at the chain's minimum
    /// fee, and again at the fee the node names when its mempool is full, up to this.
    #[arg(long, default_value = "0.01")]
    pub(crate) max_fee: String,
    /// Stake to keep locked, in GRID (at least the chain's minimum).
    #[arg(long, default_value = "100")]
    pub(crate) stake: String,
    /// Work directory (default: GRIDWORK_HOME/worker/<key>).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// How often to look for work when no block arrives, in milliseconds (the worker follows
    /// the node's event stream and looks at every committed block).
    #[arg(long, default_value_t = 5_000)]
    pub(crate) poll_ms: u64,
    /// Serve chunks to other workers (and fetch from them) on this UDP address, e.g.
    /// `0.0.0.0:7702`; the address is published on the ledger. Off unless given.
    #[arg(long)]
    pub(crate) p2p_listen: Option<std::net::SocketAddr>,
    /// The address other workers reach this one at (repeatable; default: the listen
    /// address when it names a specific ip).
    #[arg(long)]
    pub(crate) p2p_announce: Vec<std::net::SocketAddr>,
    /// The most GiB of chunks the worker caches (inputs it pulled, outputs it serves to
    /// peers); past it the least recently used go, sparing those used in the last ten
    /// minutes (what goes is fetched again from the node when needed).
    #[arg(long, default_value_t = 50)]
    pub(crate) worker_cache_max_gib: u64,
    /// Address-space limit per task in MiB (default none: GPU runtimes reserve large ranges).
    #[arg(long)]
    pub(crate) max_memory_mib: Option<u64>,
    /// Largest file a task may write, in MiB.
    #[arg(long, default_value_t = 10_240)]
    pub(crate) max_file_mib: u64,
    /// The owner's approval of this worker (from `gridwork provider authorize`); without it
    /// the worker is its own owner.
    #[arg(long, env = "GRIDWORK_OWNER_APPROVAL")]
    pub(crate) owner_approval: Option<String>,
    /// Serve Prometheus metrics (tasks running, runs finished, run seconds, GPU use through
    /// NVML) at `http://ADDR/metrics`, e.g. `127.0.0.1:9102`. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
}

#[cfg(feature = "demo")]
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo chain here (default: a temporary directory).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Items in the sample job (two per task).
    #[arg(long, default_value_t = 6)]
    pub(crate) items: u64,
    /// Add a fourth worker that forges its results, to watch it get caught and slashed.
    #[arg(long)]
    pub(crate) liar: bool,
    /// Another demo instead of the batch job.
    #[command(subcommand)]
    pub(crate) what: Option<DemoWhat>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DemoWhat {
    /// A small model served by three providers through a gateway, under each response
    /// method: the answers, latency against the server called directly, what each provider
    /// earned (python3 on this machine runs the model).
    Service {
        /// Requests per response method.
        #[arg(long, default_value_t = 20)]
        requests: usize,
        /// Add a fourth provider that makes its answers up, to watch it get caught and slashed.
        #[arg(long)]
        liar: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// Validate a job file, upload its inputs, lock the deposit and publish the job.
    Submit {
        /// The job file (TOML; see docs/job.example.toml).
        file: PathBuf,
        /// Deposit in GRID (default: the file's, else the job's maximum cost).
        #[arg(long)]
        deposit: Option<String>,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Tasks, bids, executors, councils, votes, cost so far, and why nobody bid.
    Status {
        /// Job id.
        id: String,
    },
    /// Follow a job until it finishes.
    Watch {
        /// Job id.
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_s: u64,
        /// Pull each task's result into this directory as it settles (the requester's
        /// `--key`), as `job results` does: a render's frames appear in order as they come.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// What a task's program printed, streamed by its executor (or a council member) while
    /// it runs.
    Logs {
        /// Job id.
        id: String,
        /// Only this task (default: every task; needed with --follow unless the job has one).
        #[arg(long)]
        task: Option<u32>,
        /// Which output.
        #[arg(long, value_enum, default_value_t = StreamArg::Stdout)]
        stream: StreamArg,
        /// Whose run (default: the executor's).
        #[arg(long)]
        provider: Option<String>,
        /// Which attempt (default: the current one).
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing new output until the task is decided.
        #[arg(long, short)]
        follow: bool,
    },
    /// Download the accepted outputs of every settled task; a render's frames also come out
    /// in order in `frames/`, with a contact sheet and, where ffmpeg is installed, a video.
    Results {
        /// Job id.
        id: String,
        /// Directory to write `task-N/` folders into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Cancel a job; escrow not needed by running tasks comes back.
    Cancel {
        /// Job id.
        id: String,
        #[command(flatten)]
        send: SendArgs,
    },
}

/// A task program's output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StreamArg {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Publish a service from a service file (see docs/service.example.toml): pushes its
    /// inputs, locks its deposit (by default its reserve), prints its id.
    Create {
        /// The service file.
        file: PathBuf,
        /// Escrow in GRID (default: the file's `deposit`, else the service's reserve).
        #[arg(long)]
        deposit: Option<String>,
        #[command(flatten)]
        send: SendArgs,
    },
    /// A service's status, council, subscribers, downtime and what each member was paid.
    Status {
        /// Service id.
        id: String,
    },
    /// Services not closed.
    List,
    /// Add to a service's escrow (its requester).
    Fund {
        /// Service id.
        id: String,
        /// Amount in GRID.
        amount: String,
        #[command(flatten)]
        send: SendArgs,
    },
    /// End a service (its requester): members stop now, settle their last receipts within
    /// the settle window, then the rest of the escrow returns.
    Close {
        /// Service id.
        id: String,
        #[command(flatten)]
        send: SendArgs,
    },
    /// As a provider (`--key`), offer to serve a service at a price within its maximum;
    /// subscribers are drawn into its council as seats open.
    Subscribe {
        /// Service id.
        id: String,
        /// Price per response in GRID (default: the service's maximum).
        #[arg(long)]
        per_response: Option<String>,
        /// Price per byte of a response in GRID (default: the service's maximum).
        #[arg(long)]
        per_byte: Option<String>,
        #[command(flatten)]
        send: SendArgs,
    },
    /// As a provider (`--key`), stop serving a service (what it is owed it may still settle).
    Unsubscribe {
        /// Service id.
        id: String,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Run the service's gateway with its gateway key (`--key`): users send requests to
    /// URL/s/<SERVICE>/... with a key from `service key new`; the council's members fetch
    /// them here. Says on the ledger where it listens.
    Gateway {
        /// Service id.
        id: String,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: std::net::SocketAddr,
        /// The URL members reach it at (default: http://<listen address>).
        #[arg(long)]
        url: Option<String>,
    },
    /// API keys of a service's users, which its gateway accepts.
    #[command(subcommand)]
    Key(ServiceKeyCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceKeyCommand {
    /// Make a key for a user of the service (printed once; the gateway keeps its hash).
    New {
        /// Service id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProviderCommand {
    /// A provider's hardware, status, stake, reputation, earnings and slashes.
    Show {
        /// Provider address.
        address: String,
    },
    /// Every registered provider.
    List,
    /// As an owner (`--key`), approve a worker key to act for you: prints the approval the
    /// worker passes to `gridwork worker --owner-approval`. A council never holds two workers
    /// of one owner.
    Authorize {
        /// The worker's address.
        worker: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key (asks for a passphrase, or reads GRIDWORK_PASSPHRASE).
    New {
        /// Name of the key.
        name: String,
        /// Store it with no passphrase: anyone who reads the key file has the key.
        #[arg(long)]
        insecure_no_passphrase: bool,
    },
    /// List keys.
    List,
    /// Show a key's address and public key.
    Show {
        /// Name of the key.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// Start a one-node development chain (funded dev accounts, keys added as dev0, dev1, ...).
    #[arg(long)]
    pub(crate) dev: bool,
    /// Number of funded dev accounts.
    #[arg(long, default_value_t = 4, requires = "dev")]
    pub(crate) dev_accounts: u32,
    /// Unbonding period of a new dev chain, in milliseconds.
    #[arg(long, default_value_t = gridwork_node::DEV_UNBONDING_PERIOD_MS, requires = "dev")]
    pub(crate) dev_unbonding_period_ms: u64,
    /// Node configuration file (TOML).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (default: GRIDWORK_HOME/node).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// API listen address, such as 127.0.0.1:7650.
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// Genesis file (TOML or JSON) for a new chain.
    #[arg(long, conflicts_with = "dev")]
    pub(crate) genesis: Option<PathBuf>,
    /// Block interval in milliseconds.
    #[arg(long)]
    pub(crate) block_interval_ms: Option<u64>,
    /// Also serve chunks peer to peer on this UDP address, e.g. `0.0.0.0:7660`; the endpoint
    /// is published in `GET /v1/chain` and workers fetch from it beside HTTP.
    #[arg(long)]
    pub(crate) p2p_listen: Option<std::net::SocketAddr>,
    /// The address peers reach the node's endpoint at (repeatable; default: the listen
    /// address when it names a specific ip).
    #[arg(long)]
    pub(crate) p2p_announce: Vec<std::net::SocketAddr>,
    /// Also be the gateway of every service whose gateway key is `--key` (a requester's own
    /// node): users and members reach it on the API's address (`/s/<SERVICE>/...`,
    /// `/m/<SERVICE>/...`), as `gridwork service gateway` serves one service on a port of its
    /// own.
    #[arg(long)]
    pub(crate) gateway: bool,
    /// The address users and members reach the node's gateway at (default: the API's).
    #[arg(long, requires = "gateway")]
    pub(crate) gateway_url: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Fee in GRID.
    #[arg(long, default_value = "0")]
    pub(crate) fee: String,
    /// Return once the node admits the transaction instead of waiting for its block.
    #[arg(long)]
    pub(crate) no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StakeCommand {
    /// Lock GRID in the vault.
    Lock {
        /// Amount in GRID.
        amount: String,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Start unbonding locked GRID (withdrawable after the unbonding period).
    Unbond {
        /// Amount in GRID.
        amount: String,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Withdraw every matured unbonding to the balance.
    Withdraw {
        #[command(flatten)]
        send: SendArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TxCommand {
    /// Show a transaction and its receipt.
    Show {
        /// Transaction hash.
        hash: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BlockCommand {
    /// Show a block: `latest`, a height or a hash.
    Show {
        /// Block id.
        id: String,
    },
}

#[cfg(feature = "bench")]
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Push and pull a generated tree through a node on loopback, beside cp and rsync.
    Data {
        /// Size of the generated tree in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Work directory (emptied first).
        #[arg(long)]
        dir: PathBuf,
        /// Parallel streams.
        #[arg(long, default_value_t = 8)]
        streams: usize,
    },
    /// Jobs through bids, auctions, councils, commit-reveal and settlement on one node.
    Market {
        /// Simulated workers.
        #[arg(long, default_value_t = 50)]
        workers: u32,
        /// Jobs.
        #[arg(long, default_value_t = 20)]
        jobs: u32,
        /// Tasks per job.
        #[arg(long, default_value_t = 50)]
        tasks: u32,
        /// Council size.
        #[arg(long, default_value_t = 3)]
        council: u8,
        /// Where to write the bench chain.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// The market in virtual time (`gridwork-sim`): the real node with a memory store,
    /// simulated workers (some Byzantine, some dying), node restarts and late messages, all
    /// drawn from one seed; the same seed gives the same chain.
    Sim {
        /// Everything random is drawn from this.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Workers.
        #[arg(long, default_value_t = 1000)]
        workers: u32,
        /// Jobs.
        #[arg(long, default_value_t = 10)]
        jobs: u32,
        /// Tasks per job.
        #[arg(long, default_value_t = 1000)]
        tasks: u32,
        /// Council size (odd).
        #[arg(long, default_value_t = 1)]
        council: u8,
        /// Workers that forge their output as executor.
        #[arg(long, default_value_t = 0)]
        liars: u32,
        /// Council members that make their output up.
        #[arg(long, default_value_t = 0)]
        lazy: u32,
        /// Executors that win and never commit.
        #[arg(long, default_value_t = 0)]
        vanishing: u32,
        /// Workers that die at a random moment of the first minute.
        #[arg(long, default_value_t = 0)]
        deaths: u32,
        /// Node restarts at random moments of the first minute.
        #[arg(long, default_value_t = 0)]
        restarts: u32,
    },
    /// Reopen a stored chain as a node does at start (time, hot state, peak memory); `bench
    /// market` runs it in a fresh process after the market settles.
    #[command(hide = true)]
    Reopen {
        /// The chain database (`chain.redb`, or the bench's `market-bench.redb`).
        #[arg(long)]
        db: PathBuf,
    },
    /// Per-task overhead of the executors: a trivial program run through the process
    /// sandbox and through a container of IMAGE, and loading IMAGE into the engine (what a
    /// task of an image a worker has not cached waits for first).
    Executors {
        /// A local Docker image with `true` on its PATH (e.g. one made by `docker import`).
        #[arg(long)]
        image: String,
        /// Runs of each executor.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Work directory (emptied first).
        #[arg(long)]
        dir: PathBuf,
        /// The Docker engine's socket.
        #[arg(long, default_value = gridwork_worker::docker::DEFAULT_SOCKET)]
        docker_socket: PathBuf,
    },
    /// What comparing two answers of a service costs a gateway or a judge: embeddings as JSON
    /// of `--mib` MiB each, under a relative tolerance: the same bytes, numbers within the
    /// tolerance (read to the end), a difference at the first number (stops there), and
    /// BLAKE3 of the same bytes (what an exact service's hash costs).
    Equivalence {
        /// The size of each answer, in MiB.
        #[arg(long, default_value_t = 4)]
        mib: usize,
    },
    /// The node binary on loopback under hostile clients (slow connections, silent event
    /// subscribers, a mempool flood, repeated-id fetches, unsigned large uploads), with a
    /// normal client's transfers timed before and during the attack.
    Hostile {
        /// Work directory (emptied first).
        #[arg(long)]
        dir: PathBuf,
        /// Slow connections held at once.
        #[arg(long, default_value_t = 1000)]
        slow: usize,
        /// Event subscribers that never read.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Signed transfers the flooding sender sends.
        #[arg(long, default_value_t = 50_000)]
        flood: u64,
        /// Fetches of one chunk repeated to the id limit, unsigned.
        #[arg(long, default_value_t = 200)]
        fetches: usize,
        /// Unsigned uploads declaring 60 MiB.
        #[arg(long, default_value_t = 100)]
        uploads: usize,
        /// The normal client's transfers, idle and then under attack.
        #[arg(long, default_value_t = 100)]
        transfers: usize,
        /// The attack lasts at least this many seconds.
        #[arg(long, default_value_t = 30)]
        attack_secs: u64,
    },
    /// Signed transfers through admission, block production and durable commit.
    Ledger {
        /// Funded sender accounts.
        #[arg(long, default_value_t = 1000)]
        accounts: u32,
        /// Signed transfers.
        #[arg(long, default_value_t = 100_000)]
        transfers: u64,
        /// Where to write the bench chain.
        #[arg(long)]
        data_dir: PathBuf,
        /// Block interval in milliseconds.
        #[arg(long, default_value_t = 200)]
        block_interval_ms: u64,
        /// Most transactions per block.
        #[arg(long, default_value_t = 20_000)]
        max_block_txs: usize,
        /// Transactions per admission batch.
        #[arg(long, default_value_t = 1024)]
        batch: usize,
        /// Concurrent submitting threads (default: one per core).
        #[arg(long)]
        submitters: Option<usize>,
    },
}

/// How a worker runs tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExecutorArg {
    /// Confined processes only.
    Process,
    /// Container images through the Docker engine, and processes.
    Docker,
}
