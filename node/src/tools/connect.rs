//! How a CLI tool reaches a node: the connection flags every client-side subcommand
//! shares, and the SDK client made from them (an application's client, nothing more).

use std::net::SocketAddr;
use std::path::PathBuf;

use chorus_client::{Client, ClientConfig, Credentials};
use clap::Args;

use crate::config::{DEFAULT_DATA_DIR, admin_key_path};
use crate::tls::TlsPaths;
use crate::tools::error::CliError;

/// How a CLI command reaches a node: by default the local development node.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Node address.
    #[arg(
        long,
        env = "CHORUS_SERVER",
        default_value = "127.0.0.1:7400",
        global = true
    )]
    pub server: SocketAddr,
    /// The cluster CA certificate (default: <data-dir>/tls/ca.pem).
    #[arg(long, env = "CHORUS_CA", value_name = "PEM", global = true)]
    pub ca: Option<PathBuf>,
    /// A file holding the API key (mode 0600; preferred: a key on the command line is
    /// visible to every user in the process list).
    #[arg(
        long,
        env = "CHORUS_API_KEY_FILE",
        value_name = "FILE",
        global = true,
        conflicts_with = "api_key"
    )]
    pub api_key_file: Option<PathBuf>,
    /// API key (prefer --api-key-file or CHORUS_API_KEY; default: the admin key in
    /// <data-dir>/admin.key).
    #[arg(long, env = "CHORUS_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Data directory of the local node, where the defaults above are found. Its
    /// variable is not the agent's `CHORUS_DATA_DIR`, so that a shell set up for the
    /// CLI never moves a restarted agent onto another node's store.
    #[arg(long, env = "CHORUS_CLI_DATA_DIR", default_value = DEFAULT_DATA_DIR, global = true)]
    pub data_dir: PathBuf,
    /// The name the node's certificate is checked against (default: the IP dialed,
    /// which certificates made by `chorus certs node --ip` and the development ones
    /// carry).
    #[arg(long, env = "CHORUS_SERVER_NAME", global = true)]
    pub server_name: Option<String>,
}

impl ConnectArgs {
    /// The name the node's certificate must carry: `--server-name`, else the IP dialed.
    pub fn server_name(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| self.server.ip().to_string())
    }
}

/// Connects with the flags, falling back to the local node's CA and admin key.
pub async fn connect(args: &ConnectArgs, config: ClientConfig) -> Result<Client, CliError> {
    let ca = args
        .ca
        .clone()
        .unwrap_or_else(|| TlsPaths::dev(&args.data_dir).ca_cert);
    let api_key = match (&args.api_key, &args.api_key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(file)) => read_key_file(file)?,
        (None, None) => read_admin_key(&args.data_dir)?,
    };
    let credentials = Credentials::from_ca_file(&ca, api_key)?.with_server_name(args.server_name());
    Ok(Client::connect(&[args.server], credentials, config).await?)
}

/// Reads an API key file, refusing one others can read (as ssh refuses a private key).
fn read_key_file(path: &std::path::Path) -> Result<String, CliError> {
    crate::secrets::check_private_file(path).map_err(|e| CliError::Usage(e.to_string()))?;
    let key = std::fs::read_to_string(path).map_err(|e| {
        CliError::Usage(format!("reading the API key file {}: {e}", path.display()))
    })?;
    Ok(key.trim().to_string())
}

fn read_admin_key(data_dir: &std::path::Path) -> Result<String, CliError> {
    let path: PathBuf = admin_key_path(data_dir);
    let key = std::fs::read_to_string(&path).map_err(|e| {
        CliError::Usage(format!(
            "no API key: pass --api-key-file (or CHORUS_API_KEY_FILE, CHORUS_API_KEY), or start `chorus agent` once to create {} ({e})",
            path.display()
        ))
    })?;
    Ok(key.trim().to_string())
}
