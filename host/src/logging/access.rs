//! The gateway's access records, written straight into the log's buffer in the line
//! format of the rest of the log (`tracing-subscriber`'s), without its per-event
//! machinery: about 11,600 instructions a request went to formatting one line.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use panal_gateway::access::{Access, AccessLog};

/// Writes each access record into the buffer of access lines.
pub struct AccessLines;

impl AccessLog for AccessLines {
    fn record(&self, a: &Access<'_>) {
        let mut buffered = super::BUFFERED.lock();
        let _ = writeln!(
            buffered,
            "{}  INFO {}: answered id={} method={} path={} component={} route={} status={} micros={}",
            Timestamp(SystemTime::now()),
            panal_gateway::access::TARGET,
            a.id,
            a.method,
            a.path,
            a.component,
            a.route,
            a.status,
            a.micros
        );
        super::written(&mut buffered);
    }
}

/// A UTC time as RFC 3339 with microseconds, as the rest of the log prints it.
struct Timestamp(SystemTime);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let days = i64::try_from(secs / 86_400).unwrap_or(0);
        let (year, month, day) = panal_nats::service::civil_from_days(days);
        let of_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60,
            since.subsec_micros()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, micros: u32) -> String {
        let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into());
        Timestamp(t).to_string()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_micros() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(1_796_083_379, 443_933), "2026-12-01T00:02:59.443933Z");
        // A leap day's last second, and the day after.
        assert_eq!(at(951_868_799, 1), "2000-02-29T23:59:59.000001Z");
        assert_eq!(at(951_868_800, 0), "2000-03-01T00:00:00.000000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }
}
