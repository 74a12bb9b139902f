//! Owns the syntax checks of the strings the CRD schema can only approximate with a pattern:
//! durations, cron schedules, replication policies and resource quantities.
//! Must not do I/O or evaluate a schedule (when it fires is the snapshot scheduler's business).
//! Invariant: a value accepted here is accepted by the node's own parser (humantime durations,
//! `--replication-policy`) and by the CRD patterns in `crd`; the tests pin both directions.
//! See `crd::validate` for the caller.

/// Checks a duration as the node's `humantime` parser reads it, limited to what the CRD pattern
/// allows: `0`, or one or more `<digits><unit>` with unit ns, us, ms, s, m, h or d (`1h30m`).
pub fn check_duration(value: &str) -> Result<(), String> {
    if value == "0" {
        return Ok(());
    }
    let mut rest = value;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "{value:?} is not a duration; write e.g. 30s, 15m, 24h or 1h30m"
            ));
        }
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        if !matches!(&rest[..unit], "ns" | "us" | "ms" | "s" | "m" | "h" | "d") {
            return Err(format!(
                "{value:?} is not a duration: the unit must be ns, us, ms, s, m, h or d"
            ));
        }
        rest = &rest[unit..];
    }
    Ok(())
}

/// True when a duration that passed [`check_duration`] is zero (every digit is 0).
pub fn duration_is_zero(value: &str) -> bool {
    !value.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// Checks a `--replication-policy` value: empty, all, last, new, `by_start_sequence=N` (N ≥ 1)
/// or `by_start_time=YYYY-MM-DD HH:MM:SS`.
pub fn check_policy(value: &str) -> Result<(), String> {
    let ok = if matches!(value, "" | "all" | "last" | "new") {
        true
    } else if let Some(n) = value.strip_prefix("by_start_sequence=") {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.bytes().any(|b| b != b'0')
    } else if let Some(t) = value.strip_prefix("by_start_time=") {
        t.len() == 19
            && t.bytes().enumerate().all(|(i, c)| match i {
                4 | 7 => c == b'-',
                10 => c == b' ',
                13 | 16 => c == b':',
                _ => c.is_ascii_digit(),
            })
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "replication.policy {value:?}: use all, last, new, by_start_sequence=N or \
             by_start_time=YYYY-MM-DD HH:MM:SS"
        ))
    }
}

const MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field of a cron line: its name, value range and the names it accepts (first = `min`).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    // 7 is Sunday too, as in Vixie cron.
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAYS,
    },
];

/// Checks a standard 5-field cron line (minute hour day-of-month month day-of-week, with `*`,
/// lists, ranges, steps and JAN…DEC / SUN…SAT names) or one of the `@hourly`-style macros.
pub fn check_cron(value: &str) -> Result<(), String> {
    let value = value.trim();
    if value.starts_with('@') {
        return if MACROS.contains(&value) {
            Ok(())
        } else {
            Err(format!(
                "snapshots.schedule {value:?}: the macros are {}",
                MACROS.join(", ")
            ))
        };
    }
    let parts: Vec<&str> = value.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        return Err(format!(
            "snapshots.schedule {value:?}: a cron schedule has 5 fields (minute hour \
             day-of-month month day-of-week), got {}",
            parts.len()
        ));
    }
    for (part, field) in parts.iter().zip(FIELDS.iter()) {
        for item in part.split(',') {
            check_cron_item(item, field).map_err(|e| {
                format!(
                    "snapshots.schedule {value:?}: {} field {part:?}: {e}",
                    field.name
                )
            })?;
        }
    }
    Ok(())
}

fn check_cron_item(item: &str, field: &Field) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    if let Some(step) = step {
        let n: u32 = step
            .parse()
            .map_err(|_| format!("step {step:?} is not a number"))?;
        if n == 0 || n > field.max {
            return Err(format!("step {n} is out of range 1-{}", field.max));
        }
    }
    if range == "*" {
        return Ok(());
    }
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (cron_value(a, field)?, Some(cron_value(b, field)?)),
        None => (cron_value(range, field)?, None),
    };
    if let Some(hi) = hi
        && hi < lo
    {
        return Err(format!("range {range:?} runs backwards"));
    }
    Ok(())
}

fn cron_value(s: &str, field: &Field) -> Result<u32, String> {
    if let Some(i) = field.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(field.min + i as u32);
    }
    let n: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if n < field.min || n > field.max {
        return Err(format!("{n} is out of range {}-{}", field.min, field.max));
    }
    Ok(n)
}

/// The value of a Kubernetes resource quantity (`10Gi` = 10·2³⁰), for comparing sizes; `None`
/// when it is not one.
pub fn quantity_value(value: &str) -> Option<f64> {
    let v = value.strip_prefix('+').unwrap_or(value);
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, suffix) = v.split_at(end);
    let n: f64 = number.parse().ok()?;
    let k: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exp => 10f64.powi(exp.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    Some(n * k)
}

/// A Kubernetes resource quantity (`10Gi`, `500M`, `1.5Ti`, `1e9`) greater than zero, as the
/// CRD's CEL rule (`isQuantity` and `quantity(...).isGreaterThan(quantity('0'))`) accepts it.
pub fn is_positive_quantity(value: &str) -> bool {
    let v = value.strip_prefix('+').unwrap_or(value);
    let digits_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, suffix) = v.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && number.bytes().any(|b| (b'1'..=b'9').contains(&b));
    let suffix_ok = match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T"
        | "P" | "E" => true,
        exp => exp
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())),
    };
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_those_humantime_reads() {
        for ok in [
            "0", "30s", "15m", "24h", "1h30m", "500ms", "7d", "0s", "10us", "3ns",
        ] {
            assert!(check_duration(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1.5h", "soon", "15", "h", "15 m", "-1s", "1y", "1H"] {
            assert!(check_duration(bad).is_err(), "{bad}");
        }
        assert!(duration_is_zero("0s") && duration_is_zero("0") && duration_is_zero("0m00s"));
        assert!(!duration_is_zero("10s") && !duration_is_zero("1ms"));
    }

    #[test]
    fn policies_are_those_the_node_accepts() {
        for ok in [
            "",
            "all",
            "last",
            "new",
            "by_start_sequence=42",
            "by_start_time=2024-01-31 12:00:00",
        ] {
            assert!(check_policy(ok).is_ok(), "{ok}");
        }
        for bad in [
            "first",
            "by_start_sequence=0",
            "by_start_sequence=",
            "by_start_sequence=x",
            "by_start_time=2024-01-31",
            "by_start_time=2024-01-31T12:00:00",
        ] {
            assert!(check_policy(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_lines_are_checked_field_by_field() {
        for ok in [
            "0 3 * * *",
            "*/15 * * * *",
            "0 0-23/2 1,15 JAN-jun mon-fri",
            "5 4 * * 7",
            "@daily",
            "@hourly",
            "  0 3 * * *  ",
        ] {
            assert!(check_cron(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "not a cron",
            "0 3 * *",
            "0 3 * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a b c d e",
            "@every 1h",
            "@reboot",
        ] {
            assert!(check_cron(bad).is_err(), "{bad}");
        }
        let e = check_cron("0 25 * * *").unwrap_err();
        assert!(e.contains("hour") && e.contains("25"), "{e}");
    }

    #[test]
    fn quantities_compare_by_value() {
        assert_eq!(quantity_value("10Gi"), quantity_value("10240Mi"));
        assert!(quantity_value("20Gi") > quantity_value("10Gi"));
        assert!(quantity_value("1G") < quantity_value("1Gi"));
        assert_eq!(quantity_value("1e3"), Some(1000.0));
        assert_eq!(quantity_value("lots"), None);
    }

    #[test]
    fn positive_quantities_are_told_from_the_rest() {
        for ok in ["10Gi", "1", "1.5Ti", "500M", "+2Gi", "1e9", "0.5Gi", "100k"] {
            assert!(is_positive_quantity(ok), "{ok}");
        }
        for bad in [
            "0", "0Gi", "lots", "", "Gi", "10GB", "-1Gi", "1..5Gi", "1e", ".",
        ] {
            assert!(!is_positive_quantity(bad), "{bad}");
        }
    }
}
