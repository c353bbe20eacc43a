//! `ferry-bench`: ferry side by side with bare rustls, OpenSSL, scp, rsync, ssh and curl, in
//! one run.
//!
//! Every comparison is measured pair by pair in the same run, with the same environment
//! (`GLIBC_TUNABLES` included), over loopback only. Each bulk transfer is checked: ferry
//! checks BLAKE3 end to end itself, the bare baseline hashes what it received and the
//! external tools' output is hashed after the timed part. A run that moved the wrong bytes is
//! an error, not a figure. See docs/BENCHMARKS.md.
#![forbid(unsafe_code)]

mod delta;
mod ext;
mod files;
mod http_front;
mod mesh_delta;
mod procs;
mod report;
mod sections;
mod worker;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

/// Side-by-side benchmarks of ferry (see docs/BENCHMARKS.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "ferry-bench")]
pub struct Opts {
    /// Tiny sizes and counts: checks that everything runs (seconds), measures nothing useful.
    #[arg(long)]
    pub quick: bool,
    /// Size of the bulk source, MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Repetitions of every measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Folder prepared by bench/setup.sh: enables the OpenSSL, scp and curl baselines.
    #[arg(long)]
    pub external: Option<PathBuf>,
    /// Idle-connection counts for the scale test (comma-separated; empty skips it).
    #[arg(long, default_value = "1000,10000")]
    pub scale: String,
    /// Connections per repetition in the connection-setup test.
    #[arg(long, default_value_t = 600)]
    pub conns: usize,
    /// Which GLIBC_TUNABLES settings to run the bulk section under: `both` (unset, then the
    /// rep_movsb threshold that avoids the 4 KiB-aliasing trap), `unset`, `set`, or `inherit`.
    #[arg(long, default_value = "both")]
    pub tunables: String,
    /// Sections to run (comma-separated: bulk, setup, login, scale, files, command, delta, http).
    #[arg(
        long,
        default_value = "bulk,setup,login,scale,files,command,delta,http"
    )]
    pub only: String,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Folder for disk-bound runs (default: the system temporary folder).
    #[arg(long)]
    pub disk_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.get(1).map(String::as_str) == Some("__worker") {
        worker::run(&args[2..])
    } else {
        run(Opts::parse())
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(mut o: Opts) -> Result<()> {
    if o.quick {
        o.size_mib = o.size_mib.min(8);
        o.conns = o.conns.min(24);
        if o.scale == "1000,10000" {
            o.scale = "40".to_owned();
        }
        if o.tunables == "both" {
            o.tunables = "inherit".to_owned();
        }
    }
    let mut rep = report::Report::new(&o);
    eprintln!("{}", rep.machine());
    let sections: Vec<&str> = o.only.split(',').map(str::trim).collect();
    let exe = std::env::current_exe()?;
    if sections.contains(&"bulk") {
        for env in sections::envs(&o.tunables) {
            sections::bulk(&o, &exe, &env, &mut rep)?;
        }
    }
    let env = procs::Env {
        tunables: std::env::var("GLIBC_TUNABLES").ok(),
    };
    if sections.contains(&"setup") {
        sections::setup(&o, &exe, &env, &mut rep)?;
    }
    if sections.contains(&"login") {
        sections::login(&o, &exe, &env, &mut rep)?;
    }
    if sections.contains(&"scale") {
        sections::scale(&o, &exe, &env, &mut rep)?;
    }
    if sections.contains(&"files") {
        files::files(&o, &exe, &env, &mut rep)?;
    }
    if sections.contains(&"command") {
        files::command(&o, &exe, &env, &mut rep)?;
    }
    if sections.contains(&"delta") {
        delta::delta(&o, &exe, &env, &mut rep)?;
    }
    if sections.contains(&"http") {
        http_front::http(&o, &exe, &env, &mut rep)?;
    }
    let md = rep.markdown();
    println!("{md}");
    if let Some(path) = &o.markdown {
        std::fs::write(path, &md)?;
    }
    Ok(())
}
