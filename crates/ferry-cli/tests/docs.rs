//! `ferry completions` and `ferry man`: generated from the same clap definitions as `--help`,
//! so every command `--help` lists must appear in every completion script and have a page.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::Env;

/// The commands `ferry --help` lists (without `help`).
fn commands(env: &Env) -> Vec<String> {
    let help = env.run(&["--help"]).ok().text();
    let section = help
        .split("\nCommands:\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let names: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    names
}

#[test]
fn completions_cover_every_command() {
    let env = Env::new();
    let commands = commands(&env);
    for (shell, flag) in [
        ("bash", "--no-resume"),
        ("zsh", "--no-resume"),
        ("fish", "-l no-resume"),
    ] {
        let out = env.run(&["completions", shell]).ok();
        let script = out.text();
        // Where each script lists the commands offered after `ferry `.
        let top: Vec<String> = match shell {
            "bash" => script
                .lines()
                .find(|l| l.trim_start().starts_with("opts=\"") && l.contains(" -h -V "))
                .unwrap()
                .trim()
                .trim_start_matches("opts=\"")
                .trim_end_matches('"')
                .split(' ')
                .map(str::to_owned)
                .collect(),
            "zsh" => {
                let body = script.split("_ferry_commands() {").nth(1).unwrap();
                let body = body.split("\n}").next().unwrap();
                body.lines()
                    .filter_map(|l| l.strip_prefix('\'')?.split(':').next())
                    .map(str::to_owned)
                    .collect()
            }
            _ => script
                .lines()
                .filter_map(|l| l.split("__fish_ferry_needs_command\" -f -a \"").nth(1))
                .filter_map(|l| l.split('"').next())
                .map(str::to_owned)
                .collect(),
        };
        for c in &commands {
            assert!(top.contains(c), "{shell}: {c} is not offered: {top:?}");
        }
        // Flags of a subcommand are completed too.
        assert!(script.contains(flag), "{shell}: no {flag:?}");
    }
    let out = env.run(&["completions", "nosh"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn man_pages_for_every_command() {
    let env = Env::new();
    let dir = env.join("man");
    env.run(&["man", dir.to_str().unwrap()]).ok();
    let main = fs::read_to_string(dir.join("ferry.1")).unwrap();
    assert!(
        main.starts_with(".ie") || main.contains(".TH ferry 1"),
        "{main}"
    );
    for c in commands(&env) {
        let page = fs::read_to_string(dir.join(format!("ferry-{c}.1")))
            .unwrap_or_else(|e| panic!("ferry-{c}.1: {e}"));
        assert!(page.contains(&format!(".TH ferry-{c} 1")), "ferry-{c}.1");
        assert!(
            main.contains(&format!("ferry\\-{c}(1)")),
            "ferry.1 does not list {c}"
        );
    }
    // The page of put describes its arguments and flags (roff escapes '-' as '\-').
    let put = fs::read_to_string(dir.join("ferry-put.1")).unwrap();
    for flag in ["\\-\\-no\\-resume", "\\-\\-cred", "SOURCE", "FILE"] {
        assert!(put.contains(flag), "ferry-put.1 lacks {flag}");
    }
    assert!(dir.join("ferry-client-issue.1").is_file());
    // Without DIR, the main page on standard output.
    let out = env.run(&["man"]).ok();
    assert_eq!(out.text(), main);
}
