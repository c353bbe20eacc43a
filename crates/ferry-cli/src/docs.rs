//! `ferry completions` and `ferry man`: shell completion scripts and manual pages generated
//! from the clap definitions in `cli.rs`, so they always match the commands.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// `ferry completions SHELL`: the script on standard output.
pub fn completions(a: &CompletionsArgs) -> anyhow::Result<()> {
    // Generated into memory first: clap_complete panics if its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "ferry", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// `ferry man [DIR]`: every page into DIR, or the main page on standard output.
pub fn man(a: &ManArgs) -> anyhow::Result<()> {
    // As in the pages generate_to writes: `help` is no command of its own there.
    let cmd = Cli::command().disable_help_subcommand(true);
    let Some(dir) = &a.dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        let mut out = std::io::stdout().lock();
        out.write_all(&page)?;
        out.flush()?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    println!("wrote the manual pages into {}", dir.display());
    Ok(())
}
