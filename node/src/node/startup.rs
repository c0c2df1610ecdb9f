//! What a start decides once about this node: its standing among the members, and the
//! first admin key on a fresh store.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use tracing::info;

use crate::cluster::standing::Standing;
use crate::cluster::standing_file;
use crate::cluster::state::ClusterState;
use crate::config::{NodeConfig, admin_key_path};
use crate::secrets;

/// Loads the members' standings from the data dir (saving every change there) and
/// gives this node its first standing if it has none, or a new one if it departed:
/// warming when it `may_learn` (it replicates and joins through others) and its store
/// is `empty` or stale (back after a drain), so that it learns its partitions before
/// it votes.
pub fn keep_standings(
    state: &ClusterState,
    data_dir: &Path,
    may_learn: bool,
    empty: bool,
) -> anyhow::Result<()> {
    let file = data_dir.join(standing_file::STANDINGS_FILE);
    let own = state
        .keep_standings_in(file)
        .context("loading the members' standings")?;
    let next = match own {
        None => Standing::new(may_learn && empty),
        // Back after a drain: its copies are stale, so it learns before it votes.
        Some(own) if own.departed => own.changed(|s| {
            s.departed = false;
            s.warming = may_learn;
        }),
        Some(_) => return Ok(()),
    };
    state
        .set_own_standing(next)
        .context("saving this node's standing")?;
    Ok(())
}

/// Saves the first admin key beside the data (mode 0600, created new) and prints it
/// once, only to a terminal: under systemd or a pipe stdout ends up in a journal or a
/// file others may read, so then only the log names the file that holds the key.
pub fn announce_admin_key(config: &NodeConfig, key: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let path = admin_key_path(&config.data_dir);
    secrets::write_secret_file(&path, format!("{key}\n").as_bytes())?;
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        info!(
            file = %path.display(),
            "first start: an admin API key was created and saved (mode 0600); \
             it is not printed because stdout is not a terminal"
        );
        return Ok(());
    }
    let ca = config.tls_paths().ca_cert;
    let mut out = stdout.lock();
    writeln!(out, "Chorus first start: an admin API key was created.")?;
    writeln!(out)?;
    writeln!(out, "  {key}")?;
    writeln!(out)?;
    writeln!(
        out,
        "It is shown only this once, and saved to {} (mode 0600) for the local CLI.",
        path.display()
    )?;
    writeln!(
        out,
        "Clients verify this node with the CA certificate {}.",
        ca.display()
    )?;
    out.flush()?;
    Ok(())
}
