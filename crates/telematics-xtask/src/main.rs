//! Generates the man pages and shell completions of `telematicsd` and `telematicsctl` from
//! their clap definitions (`telematicsd::cli::command`, `telematicsctl::cli::command`), for
//! the Debian packages (`[package.metadata.deb]` assets).
//!
//! ```sh
//! cargo run -p telematics-xtask -- packaging/generated
//! ```
//!
//! writes `man/telematicsd.8`, `man/telematicsd-<sub>.8`, `man/telematicsctl.1`,
//! `man/telematicsctl-<sub>.1` and `completions/{telematicsd,telematicsctl}.{bash,fish}` plus
//! `completions/_telematicsd`, `completions/_telematicsctl` (zsh) under the given directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap_complete::Shell;

/// Writes the man page of `cmd` and of every visible subcommand (recursively) in `section`.
fn man_pages(cmd: clap::Command, section: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(cmd: clap::Command, section: &str, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, section, dir, out)?;
        }
        let path = clap_mangen::Man::new(cmd)
            .section(section)
            .manual("telematicsd")
            .source(format!("telematicsd {}", env!("CARGO_PKG_VERSION")))
            .generate_to(dir)
            .with_context(|| format!("write a man page into {}", dir.display()))?;
        out.push(path);
        Ok(())
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, section, dir, &mut out)?;
    Ok(out)
}

/// Writes bash, zsh and fish completions of `cmd` (named `bin`).
fn completions(mut cmd: clap::Command, bin: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            clap_complete::generate_to(shell, &mut cmd, bin, dir)
                .with_context(|| format!("write {shell} completion into {}", dir.display()))
        })
        .collect()
}

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: telematics-xtask <output directory>");
    };
    let out = PathBuf::from(out);
    let man = out.join("man");
    let comp = out.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let mut written = man_pages(telematicsd::cli::command(), "8", &man)?;
    written.extend(man_pages(telematicsctl::cli::command(), "1", &man)?);
    written.extend(completions(
        telematicsd::cli::command(),
        "telematicsd",
        &comp,
    )?);
    written.extend(completions(
        telematicsctl::cli::command(),
        "telematicsctl",
        &comp,
    )?);
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}
