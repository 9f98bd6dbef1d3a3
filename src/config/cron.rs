//! Cron expressions: the `cron` crate's 6/7-field syntax (seconds first), plus standard
//! 5-field cron, whose day-of-week numbers (0-7, 0 and 7 = Sunday) are converted to the
//! crate's (1-7, 1 = Sunday).

use std::str::FromStr;

use cron::Schedule;

pub fn parse(expr: &str) -> Result<Schedule, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let text = if fields.len() == 5 {
        format!(
            "0 {} {} {} {} {}",
            fields[0],
            fields[1],
            fields[2],
            fields[3],
            std_dow(fields[4])
        )
    } else {
        expr.to_owned()
    };
    Schedule::from_str(&text).map_err(|e| {
        let detail = e
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if detail.is_empty() {
            format!("`{expr}` is not a cron expression (5 fields, or 6-7 with seconds first)")
        } else {
            format!("`{expr}`: {detail}")
        }
    })
}

fn std_dow(field: &str) -> String {
    let num = |s: &str| match s.parse::<u8>() {
        Ok(7) => "1".to_owned(),
        Ok(n) if n <= 6 => (n + 1).to_string(),
        _ => s.to_owned(),
    };
    field
        .split(',')
        .map(|item| {
            let (range, step) = item
                .split_once('/')
                .map_or((item, None), |(r, s)| (r, Some(s)));
            let range = range
                .split_once('-')
                .map_or_else(|| num(range), |(a, b)| format!("{}-{}", num(a), num(b)));
            step.map_or(range.clone(), |s| format!("{range}/{s}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn five_field_weekdays_mean_monday_to_friday() {
        let s = parse("30 9 * * 1-5").expect("parses");
        let tz: chrono_tz::Tz = "Asia/Almaty".parse().expect("tz");
        let sunday = Utc
            .with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
            .single()
            .expect("date")
            .with_timezone(&tz);
        let next = s.after(&sunday).next().expect("next");
        assert_eq!(next.format("%a %H:%M").to_string(), "Mon 09:30");
        assert!(parse("0 61 * * * *").is_err());
        assert!(parse("* * * *").is_err());
    }
}
