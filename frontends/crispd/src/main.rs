//! crispd: serves the Kubernetes CRI (gRPC over HTTP/2) on a Unix socket.
//! The command line; the daemon is the library (`lib.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crispd::config::{Config, LogFormat};
use crispd::{event_loop, pods, policy};

/// crisp's container runtime daemon: a CRI server for kubelet and crictl.
/// Without a subcommand, crispd serves.
#[derive(Parser, Debug)]
#[command(name = "crispd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML; every key optional) [default: /etc/crisp/config.toml]
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// CRI socket path [default: /run/crisp/crisp.sock]
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// Directory of persistent state [default: /var/lib/crisp]
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// Directory of runtime files [default: /run/crisp]
    #[arg(long, value_name = "DIR", global = true)]
    runtime_dir: Option<PathBuf>,
    /// Also listen on TCP, e.g. tcp://127.0.0.1:10010 (loopback only unless the config allows more)
    #[arg(long, value_name = "ADDR")]
    tcp_listen: Option<String>,
    /// Log level or tracing filter, e.g. info, debug, crispd=trace [default: info]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format [default: text]
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    print_config: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load images from an OCI image layout directory, an oci-archive or
    /// a docker-archive tarball (gzip or zstd allowed) into the image
    /// store, without a registry. Safe while crispd runs.
    Import {
        /// The layout directory or archive
        path: PathBuf,
        /// Name the image (REPOSITORY[:TAG]) when the archive does not
        #[arg(long, value_name = "REF")]
        name: Option<String>,
    },
    /// Pull an image, printing its ID: through the crispd serving on the
    /// socket (PullImage), else into the store directly; progress bars on
    /// stderr (lines when not a terminal). Safe while crispd runs.
    Pull {
        /// The image (busybox, registry.k8s.io/pause:3.10, ...)
        image: String,
        /// Credentials for the registry, as USERNAME:PASSWORD
        #[arg(long, value_name = "USER:PASS")]
        creds: Option<String>,
    },
    /// List the images in the store.
    Images,
    /// Read a token from stdin (one line) and print the
    /// `token_sha256 = "..."` line of an `[[access.identities]]` entry
    /// that accepts it: a salted hash, never the token.
    HashToken,
    /// (internal) A pod sandbox's holder process.
    #[command(hide = true)]
    Sandbox {
        #[arg(long)]
        id: String,
        #[arg(long)]
        hostname: Option<String>,
        #[arg(long)]
        pid_ns: bool,
        #[arg(long)]
        sysctl: Vec<String>,
        /// The holder's cgroup (made by crispd), which it joins itself.
        #[arg(long)]
        cgroup: Option<String>,
    },
    /// (internal) A container's monitor process.
    #[command(hide = true)]
    Monitor {
        #[arg(long)]
        id: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "")]
        log: String,
        #[arg(long)]
        cgroup: String,
        /// The container has a stdin for attached clients.
        #[arg(long)]
        stdin: bool,
        /// Its stdin is closed when the first client that wrote to it detaches.
        #[arg(long)]
        stdin_once: bool,
    },
    /// (internal) A monitor started ahead of need, waiting on stdin for
    /// its container's arguments.
    #[command(hide = true)]
    MonitorSpare {
        /// The pid of the crispd that started it (for `ps` readers only).
        #[arg(long)]
        daemon: Option<u32>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The re-executed helpers need no configuration.
    match &cli.command {
        Some(Command::HashToken) => return hash_token(),
        Some(Command::Sandbox {
            id: _,
            hostname,
            pid_ns,
            sysctl,
            cgroup,
        }) => return pods::sandbox::main(hostname.as_deref(), *pid_ns, sysctl, cgroup.as_deref()),
        Some(Command::Monitor {
            id,
            dir,
            log,
            cgroup,
            stdin,
            stdin_once,
        }) => {
            let mode = pods::monitor::StdinMode {
                stdin: *stdin,
                once: *stdin_once,
            };
            return pods::monitor::main(id, dir, log, cgroup, mode);
        }
        Some(Command::MonitorSpare { .. }) => return pods::spare::main(),
        _ => {}
    }
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crispd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(v) = cli.socket {
        config.socket = v;
    }
    if let Some(v) = cli.state_dir {
        config.state_dir = v;
    }
    if let Some(v) = cli.runtime_dir {
        config.runtime_dir = v;
    }
    if let Some(v) = cli.tcp_listen {
        config.tcp_listen = Some(v);
    }
    if let Some(v) = cli.log_level {
        config.log.level = v;
    } else if matches!(cli.command, Some(Command::Pull { .. }))
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        // The progress bars say what the pull's info lines would, and
        // lines between them would break their drawing.
        config.log.level = "warn".to_owned();
    }
    if let Some(v) = cli.log_format {
        config.log.format = v;
    }
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging(&config) {
        eprintln!("crispd: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Some(Command::Import { path, name }) => return import(&config, &path, name.as_deref()),
        Some(Command::Pull { image, creds }) => return pull(&config, &image, creds.as_deref()),
        Some(Command::Images) => return images(&config),
        Some(
            Command::Sandbox { .. }
            | Command::Monitor { .. }
            | Command::MonitorSpare { .. }
            | Command::HashToken,
        )
        | None => {}
    }
    let policy = match policy::Policy::from_config(&config.access) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("invalid access policy: {e}");
            return ExitCode::from(2);
        }
    };
    match event_loop::run(Arc::new(config), policy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn import(config: &Config, path: &std::path::Path, name: Option<&str>) -> ExitCode {
    match crisp_image::import_cli(&config.image_settings(), path, name) {
        Ok(imported) => {
            for i in imported {
                println!("{} {}", i.id, i.names.join(" "));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crispd import: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pull(config: &Config, image: &str, creds: Option<&str>) -> ExitCode {
    let credentials = match creds {
        None => crisp_image::registry::Credentials::default(),
        Some(c) => match c.split_once(':') {
            Some((username, password)) => crisp_image::registry::Credentials {
                username: username.to_owned(),
                password: password.to_owned(),
                ..Default::default()
            },
            None => {
                eprintln!("crispd pull: --creds must be USERNAME:PASSWORD");
                return ExitCode::from(2);
            }
        },
    };
    match crispd::cli_client::CliClient::connect(&config.socket) {
        Ok(client) => return pull_through_daemon(client, config, image, &credentials),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            eprintln!(
                "crispd pull: no crispd serves on {} ({e}): pulling into the store {} directly",
                config.socket.display(),
                config.image_settings().store_dir.display()
            );
        }
        Err(e) => {
            eprintln!(
                "crispd pull: cannot connect to crispd on {}: {e}",
                config.socket.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let progress = Arc::new(crispd::pull_bars::PullProgress::for_stderr());
    let observer: Arc<dyn crisp_image::PullObserver> = progress.clone();
    let pulled = crisp_image::pull_cli_observed(
        &config.image_settings(),
        image,
        &credentials,
        Some(observer),
    );
    progress.finish();
    match pulled {
        Ok(id) => {
            println!("{id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crispd pull: {e}");
            ExitCode::FAILURE
        }
    }
}

/// PullImage on the running crispd, showing the pull's progress from the
/// daemon's progress file (the CRI has no call that reports it).
fn pull_through_daemon(
    mut client: crispd::cli_client::CliClient,
    config: &Config,
    image: &str,
    credentials: &crisp_image::registry::Credentials,
) -> ExitCode {
    use crisp_proto::cri;
    let auth = (!credentials.username.is_empty()).then(|| cri::AuthConfig {
        username: credentials.username.clone(),
        password: credentials.password.clone(),
        ..Default::default()
    });
    let req = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    };
    eprintln!(
        "crispd pull: pulling {image} through crispd on {}",
        config.socket.display()
    );
    // The daemon's progress for this pull, from its progress file.
    let progress = crispd::pull_bars::PullProgress::for_stderr();
    let file = crispd::pull_bars::progress_file(&config.runtime_dir, image);
    let mut follower = crispd::pull_bars::FileFollower::default();
    let tick = |_waited: std::time::Duration| {
        if let Some(f) = &file {
            follower.look(f, &progress);
        }
    };
    let answer: std::io::Result<Result<cri::PullImageResponse, _>> =
        client.unary("/runtime.v1.ImageService/PullImage", &req, tick);
    if matches!(answer, Ok(Ok(_))) {
        follower.complete(&progress);
    }
    progress.finish();
    match answer {
        Ok(Ok(resp)) => {
            eprintln!("crispd pull: pulled {image}");
            println!("{}", resp.image_ref);
            ExitCode::SUCCESS
        }
        Ok(Err(status)) => {
            eprintln!("crispd pull: {:?}: {}", status.code, status.message);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "crispd pull: the call to crispd on {} failed: {e}",
                config.socket.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn hash_token() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("crispd hash-token: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let token = line.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        eprintln!("crispd hash-token: no token on stdin");
        return ExitCode::from(2);
    }
    match crispd::auth::TokenHash::generate(token.as_bytes()) {
        Ok(hash) => {
            println!("token_sha256 = \"{hash}\"");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crispd hash-token: cannot draw a salt: {e}");
            ExitCode::FAILURE
        }
    }
}

fn images(config: &Config) -> ExitCode {
    let root = config.image_settings().store_dir;
    let records = match crisp_image::store::Store::open(&root).and_then(|s| s.records()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "crispd images: cannot read the image store {}: {e}",
                root.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match crisp_image::print_table(&records, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn init_logging(config: &Config) -> Result<(), LogError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level).map_err(|source| {
        LogError::Level {
            level: config.log.level.clone(),
            source,
        }
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(LogError::Start)
}

/// Why logging could not be set up.
#[derive(Debug)]
enum LogError {
    /// `[log] level` is no tracing filter.
    Level {
        level: String,
        source: tracing_subscriber::filter::ParseError,
    },
    /// The subscriber could not be installed.
    Start(Box<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Level { level, source } => write!(f, "invalid log level {level:?}: {source}"),
            Self::Start(e) => write!(f, "cannot start logging: {e}"),
        }
    }
}
