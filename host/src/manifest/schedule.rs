//! Validation of a component's `schedule` (the timer trigger): each entry's period
//! (`every`, 1 s to 24 h) and path.

use toml::Spanned;

use super::raw::RawSchedule;
use super::validate::Checker;
use super::Schedule;

/// A component's `schedule`: periods from 1 s to a day, absolute paths.
pub(super) fn entries(c: &mut Checker, name: &str, raw: &[Spanned<RawSchedule>]) -> Vec<Schedule> {
    let mut out = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        let field = |f: &str| format!("components.{name}.schedule[{i}].{f}");
        let e = entry.get_ref();
        let every = match parse_period(&e.every) {
            Ok(d) => Some(d),
            Err(why) => {
                c.problem(Some(entry.span()), field("every"), why);
                None
            }
        };
        let path_ok = e.path.starts_with('/')
            && e.path.len() <= 1024
            && e.path.bytes().all(|b| b.is_ascii_graphic());
        if !path_ok {
            c.problem(
                Some(entry.span()),
                field("path"),
                format!(
                    "`{}` is not an absolute path like \"/internal/tick\"",
                    e.path
                ),
            );
        }
        if let (Some(every), true) = (every, path_ok) {
            out.push(Schedule {
                every,
                path: e.path.clone(),
            });
        }
    }
    out
}

/// `"500ms"`, `"30s"`, `"5min"`, `"1h"`: from 1 s to 24 h.
fn parse_period(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("`{text}` is not a period like \"30s\", \"5min\" or \"1h\" (1s to 24h)");
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = t.split_at(digits);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "min" | "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(bad()),
    };
    if !(1000..=86_400_000).contains(&ms) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_millis(ms))
}
