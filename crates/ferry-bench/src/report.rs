//! The Markdown report: the machine, then one table of comparisons and one of memory.

use std::fmt::Write;

use crate::Opts;

/// Median of a list (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Which way a ratio should go.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// ferry / baseline must be at least this.
    AtLeast(f64),
    /// ferry / baseline must be at most this.
    AtMost(f64),
    /// Reported, no target.
    None,
}

struct Row {
    section: String,
    what: String,
    ferry: String,
    baseline: String,
    ratio: String,
    target: String,
    met: String,
}

struct MemRow {
    run: String,
    client: String,
    server: String,
    met: String,
}

/// The report being built.
pub struct Report {
    machine: String,
    rows: Vec<Row>,
    mem: Vec<MemRow>,
    notes: Vec<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn fmt_num(v: f64, unit: &str) -> String {
    if v.is_nan() {
        return "-".to_owned();
    }
    if v >= 100.0 {
        format!("{v:.0} {unit}")
    } else if v >= 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.2} {unit}")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Report {
    /// Starts a report, recording the machine and the options.
    pub fn new(o: &Opts) -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let mem_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let profile = if cfg!(debug_assertions) {
            "debug build (figures meaningless)"
        } else {
            "release build"
        };
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_else(|_| "unset".into());
        let machine = format!(
            "machine: {nproc} CPUs, {model}, {} GiB RAM, kernel {kernel}, {rustc}, {profile}\n\
             run: {} MiB bulk source, {} repetitions (medians), {} connections per setup \
             repetition, scale {:?}, quick={}, harness GLIBC_TUNABLES {tunables}",
            mem_kib / (1024 * 1024),
            o.size_mib,
            o.reps,
            o.conns,
            o.scale,
            o.quick,
        );
        Self {
            machine,
            rows: Vec::new(),
            mem: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The machine line(s).
    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// Adds a comparison. `ferry` and `base` are per-repetition values; the ratio is taken
    /// per repetition, then the median of the ratios is shown.
    #[allow(clippy::too_many_arguments)]
    pub fn compare(
        &mut self,
        section: &str,
        what: &str,
        ferry: &[f64],
        base_name: &str,
        base: &[f64],
        unit: &str,
        goal: Goal,
    ) {
        let ratios: Vec<f64> = ferry.iter().zip(base).map(|(f, b)| f / b).collect();
        let r = median(&ratios);
        let (target, met) = match goal {
            Goal::AtLeast(t) => (format!("≥ {t}×"), if r >= t { "yes" } else { "**no**" }),
            Goal::AtMost(t) => (format!("≤ {t}×"), if r <= t { "yes" } else { "**no**" }),
            Goal::None => ("-".to_owned(), "-"),
        };
        eprintln!(
            "  {section} {what}: ferry {:?} vs {base_name} {:?} {unit} → ratio {r:.3}",
            ferry, base
        );
        self.rows.push(Row {
            section: section.to_owned(),
            what: what.to_owned(),
            ferry: fmt_num(median(ferry), unit),
            baseline: format!("{base_name}: {}", fmt_num(median(base), unit)),
            ratio: format!("{r:.2}"),
            target,
            met: met.to_owned(),
        });
    }

    /// Adds a figure with an absolute target (`limit`, `at_most` or at least).
    pub fn absolute(
        &mut self,
        section: &str,
        what: &str,
        value: String,
        target: String,
        ok: Option<bool>,
    ) {
        eprintln!("  {section} {what}: {value}");
        self.rows.push(Row {
            section: section.to_owned(),
            what: what.to_owned(),
            ferry: value,
            baseline: "-".to_owned(),
            ratio: "-".to_owned(),
            target,
            met: match ok {
                Some(true) => "yes".to_owned(),
                Some(false) => "**no**".to_owned(),
                None => "-".to_owned(),
            },
        });
    }

    /// Adds a peak-memory row (KiB; `None` where not measured).
    pub fn memory(&mut self, run: &str, client: Option<u64>, server: Option<u64>) {
        let limit = 64 * 1024;
        let ok = client.into_iter().chain(server).all(|k| k <= limit);
        eprintln!("  memory {run}: client {client:?} KiB, server {server:?} KiB");
        self.mem.push(MemRow {
            run: run.to_owned(),
            client: client.map_or("-".into(), mib),
            server: server.map_or("-".into(), mib),
            met: if ok { "yes".into() } else { "**no**".into() },
        });
    }

    /// A note printed under the tables (skipped baselines, negotiated parameters).
    pub fn note(&mut self, n: String) {
        eprintln!("  note: {n}");
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    /// The whole report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "```text\n{}\n```\n", self.machine);
        let _ = writeln!(
            s,
            "| section | measurement | ferry | baseline | ferry / baseline | target | met |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.section, r.what, r.ferry, r.baseline, r.ratio, r.target, r.met
            );
        }
        if !self.mem.is_empty() {
            let _ = writeln!(
                s,
                "\n| run (peak RSS, VmHWM) | client | server | ≤ 64 MiB |\n|---|---|---|---|"
            );
            for m in &self.mem {
                let _ = writeln!(s, "| {} | {} | {} | {} |", m.run, m.client, m.server, m.met);
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s);
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}
