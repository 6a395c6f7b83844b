//! What a bench run found: load rows, ratios (with the issue's targets), other
//! measurements, the exact commands; printed as a table and written into BENCHMARKS.md
//! between its generated-section markers, so the prose around them survives a rerun.

use std::fmt::Write as _;
use std::path::Path;

use crate::load::Sample;

/// One system under one load.
pub struct Row {
    pub scenario: String,
    pub system: String,
    pub conns: usize,
    pub sample: Sample,
}

/// `numerator / denominator` of one scenario, with a floor it should reach (if any).
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub target: Option<Target>,
}

impl Ratio {
    /// `ratio NAME = V  (target …: met|MISSED by X%)`.
    fn line(&self) -> String {
        let verdict = self
            .target
            .map(|t| format!("  ({})", t.verdict(self.value)));
        format!(
            "ratio {} = {:.2}{}",
            self.name,
            self.value,
            verdict.unwrap_or_default()
        )
    }
}

/// A target from the issue: at least (`ratio ≥ x`) or at most (`value ≤ x`).
#[derive(Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn verdict(self, value: f64) -> String {
        match self {
            Self::AtLeast(x) if value >= x => format!("target ≥ {x}: met"),
            Self::AtLeast(x) => {
                format!("target ≥ {x}: MISSED by {:.1}%", (1.0 - value / x) * 100.0)
            }
            Self::AtMost(x) if value <= x => format!("target ≤ {x}: met"),
            Self::AtMost(x) => format!("target ≤ {x}: MISSED by {:.1}%", (value / x - 1.0) * 100.0),
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    /// Measurements that are not load rows: `(what, value text)`.
    pub other: Vec<(String, String)>,
    pub commands: Vec<String>,
}

impl Report {
    pub fn row(&mut self, scenario: &str, system: &str, conns: usize, sample: Sample) {
        println!(
            "  {scenario:<10} {system:<22} c={conns:<3} {:>9.0} req/s  p50 {:>8.0} µs  p99 {:>8.0} µs  errors {}",
            sample.rps, sample.p50_us, sample.p99_us, sample.errors
        );
        self.rows.push(Row {
            scenario: scenario.into(),
            system: system.into(),
            conns,
            sample,
        });
    }

    pub fn rps(&self, scenario: &str, system: &str, conns: usize) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.system == system && r.conns == conns)
            .map(|r| r.sample.rps)
    }

    /// `ratio NAME = V`, printed at once and kept.
    pub fn ratio(&mut self, name: String, value: f64, target: Option<Target>) {
        let ratio = Ratio {
            name,
            value,
            target,
        };
        println!("{}", ratio.line());
        self.ratios.push(ratio);
    }

    /// rps of `a` over rps of `b` in `scenario` at every concurrency both ran.
    pub fn rps_ratios(&mut self, scenario: &str, a: &str, b: &str, target: Option<Target>) {
        self.cross_ratios((scenario, a), (scenario, b), target);
    }

    /// rps of system `a.1` in scenario `a.0` over that of `b.1` in `b.0`, at every
    /// concurrency both ran; named after the numerator's scenario.
    pub fn cross_ratios(&mut self, a: (&str, &str), b: (&str, &str), target: Option<Target>) {
        let conns: Vec<usize> = self
            .rows
            .iter()
            .filter(|r| r.scenario == a.0 && r.system == a.1)
            .map(|r| r.conns)
            .collect();
        for c in conns {
            if let (Some(x), Some(y)) = (self.rps(a.0, a.1, c), self.rps(b.0, b.1, c)) {
                let name = format!("{} c={c} {}/{}", a.0, a.1, b.1);
                self.ratio(name, x / y, target);
            }
        }
    }

    pub fn other(&mut self, what: &str, value: String) {
        println!("  {what}: {value}");
        self.other.push((what.into(), value));
    }

    pub fn print_table(&self) {
        println!();
        println!(
            "{:<10} {:<22} {:>4} {:>10} {:>10} {:>10} {:>7}",
            "scenario", "system", "c", "req/s", "p50 µs", "p99 µs", "errors"
        );
        for r in &self.rows {
            let s = r.sample;
            println!(
                "{:<10} {:<22} {:>4} {:>10.0} {:>10.0} {:>10.0} {:>7}",
                r.scenario, r.system, r.conns, s.rps, s.p50_us, s.p99_us, s.errors
            );
        }
        println!();
        for r in &self.ratios {
            let verdict = r.target.map(|t| format!("  ({})", t.verdict(r.value)));
            println!(
                "ratio {} = {:.2}{}",
                r.name,
                r.value,
                verdict.unwrap_or_default()
            );
        }
        for (what, value) in &self.other {
            println!("{what}: {value}");
        }
    }

    /// The generated section of BENCHMARKS.md.
    pub fn markdown(&self, machine: &str, settings: &str, chart: &str) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "_Generated by `just bench`; rerun it to refresh._\n");
        let _ = writeln!(md, "**Machine:** {machine}\n\n**Settings:** {settings}\n");
        let _ = writeln!(md, "![rps and p99 per scenario and concurrency]({chart})\n");
        let _ = writeln!(
            md,
            "### Ratios\n\n| ratio | value | target |\n|---|---:|---|"
        );
        for r in &self.ratios {
            let verdict = r.target.map_or_else(String::new, |t| t.verdict(r.value));
            let _ = writeln!(md, "| {} | {:.2} | {verdict} |", r.name, r.value);
        }
        let _ = writeln!(md, "\n### Load runs\n");
        let _ = writeln!(
            md,
            "| scenario | system | connections | req/s | p50 µs | p99 µs | errors |\n|---|---|---:|---:|---:|---:|---:|"
        );
        for r in &self.rows {
            let s = r.sample;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} |",
                r.scenario, r.system, r.conns, s.rps, s.p50_us, s.p99_us, s.errors
            );
        }
        let _ = writeln!(
            md,
            "\n### Other measurements\n\n| what | value |\n|---|---|"
        );
        for (what, value) in &self.other {
            let _ = writeln!(md, "| {what} | {value} |");
        }
        let _ = writeln!(md, "\n### Exact commands\n\n```text");
        for c in &self.commands {
            let _ = writeln!(md, "{c}");
        }
        let _ = writeln!(md, "```");
        md
    }
}

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

/// Put `generated` between the markers of `path` (creating the file, or the markers at
/// its end, when missing).
pub fn splice(path: &Path, generated: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let (head, tail) = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => (&old[..b], &old[e + END.len()..]),
        _ => (old.as_str(), "\n"),
    };
    let text = format!(
        "{}{BEGIN}\n{generated}{END}{}",
        head.trim_end_matches('\n').to_string() + "\n\n",
        tail
    );
    std::fs::write(path, text)
}
