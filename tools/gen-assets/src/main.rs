//! `gen-assets OUT_DIR`: writes the man pages (clap_mangen; one page per
//! program and one per subcommand, e.g. `triggerctl-watch.1`) and the bash,
//! zsh and fish completions (clap_complete) of trigger-db, triggerctl,
//! mobike-agent and xfrmctl, for the Debian packages
//! (`deploy/debian/build-debs.sh`; the crates' `[package.metadata.deb]`
//! assets name the layout below). It does not install anything.
//!
//! The pages come from the very clap definitions the binaries parse with:
//! the daemons' from their libraries (`trigger_db::cli`,
//! `mobike_agent::cli`), the two admin tools' from their `cli.rs`, compiled
//! in here with `#[path]` because those live beside the binaries. triggerctl's
//! `cli.rs` names its value parsers and flag types as `crate::add`,
//! `crate::time` and `crate::threshold`, so those modules (and the ones they
//! use in turn) are included too, under the same names; a new module that
//! `cli.rs` comes to need is added to the list below.
//!
//! Layout under OUT_DIR: `man/NAME.1`, `completions/bash/NAME`,
//! `completions/zsh/_NAME`, `completions/fish/NAME.fish` (the names the
//! shells look for in their vendor directories).

#![allow(
    dead_code,
    reason = "only the command lines of the included modules are used"
)]

#[path = "../../../trigger-db/src/bin/triggerctl/add.rs"]
mod add;
#[path = "../../../trigger-db/src/bin/triggerctl/cli.rs"]
mod cli;
#[path = "../../../trigger-db/src/bin/triggerctl/output.rs"]
mod output;
#[path = "../../../trigger-db/src/bin/triggerctl/threshold.rs"]
mod threshold;
#[path = "../../../trigger-db/src/bin/triggerctl/time.rs"]
mod time;
#[path = "../../../trigger-db/src/bin/triggerctl/timeline/mod.rs"]
mod timeline;
#[path = "../../../trigger-db/src/bin/triggerctl/verbs.rs"]
mod verbs;
#[path = "../../../ipsec-backend/src/bin/xfrmctl/cli.rs"]
mod xfrmctl_cli;

use std::{
    fs,
    path::{Path, PathBuf},
};

use clap::Parser as _;
use clap_complete::Shell;

/// Writes the man pages and shell completions of the project's programs.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    /// Directory to write into (created if missing; files in it are replaced).
    out_dir: PathBuf,
}

/// An installed program: its name and its command line.
type Program = (&'static str, fn() -> clap::Command);

/// Every installed program.
const PROGRAMS: [Program; 4] = [
    ("trigger-db", trigger_db::cli::command),
    ("triggerctl", cli::command),
    ("mobike-agent", mobike_agent::cli::command),
    ("xfrmctl", xfrmctl_cli::command),
];

/// What can go wrong writing the assets.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("the command line of {expected} calls itself {got} (`#[command(name)]` missing?)")]
    Name { expected: &'static str, got: String },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the man pages of {name} into {}: {source}", dir.display())]
    Man {
        name: &'static str,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn create_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(|source| Error::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Where a shell looks for the completions of `name`, under `dir`.
fn completion_path(dir: &Path, shell: Shell, name: &str) -> PathBuf {
    match shell {
        Shell::Zsh => dir.join("zsh").join(format!("_{name}")),
        Shell::Fish => dir.join("fish").join(format!("{name}.fish")),
        _ => dir.join(shell.to_string()).join(name),
    }
}

/// Writes the man pages and completions of one program; returns the paths
/// of the completion files.
fn write_program(
    out: &Path,
    name: &'static str,
    command: fn() -> clap::Command,
) -> Result<Vec<PathBuf>, Error> {
    // The name is what `--version` prints and the pages are named after;
    // a derive without `name` takes the package's, which is not the
    // binary's for triggerctl and xfrmctl.
    let mut cmd = command().bin_name(name);
    if cmd.get_name() != name {
        return Err(Error::Name {
            expected: name,
            got: cmd.get_name().to_owned(),
        });
    }
    let man = out.join("man");
    clap_mangen::generate_to(cmd.clone(), &man).map_err(|source| Error::Man {
        name,
        dir: man.clone(),
        source,
    })?;
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = completion_path(&out.join("completions"), shell, name);
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, name, &mut script);
        fs::write(&path, script).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    create_dir(&args.out_dir.join("man"))?;
    for shell in ["bash", "zsh", "fish"] {
        create_dir(&args.out_dir.join("completions").join(shell))?;
    }
    for (name, command) in PROGRAMS {
        write_program(&args.out_dir, name, command)?;
    }
    println!("{}", args.out_dir.display());
    Ok(())
}
