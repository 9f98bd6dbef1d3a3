//! Small value syntaxes of the config: durations ("30s", "2h", "30d"), rates ("10/s"),
//! and secret references ("secret:NAME").

use std::collections::BTreeMap;
use std::time::Duration;

use crate::mask::{MIN_SECRET_LEN, Secret};

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like \"30s\", \"5m\", \"2h\", \"30d\""))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}`: the unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

/// "N/s", "N/m" or "N/h": requests per period.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("`{text}` is not a rate like \"10/s\", \"100/m\"");
    let (n, per) = text.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match per.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("`{text}`: the rate must be at least 1"));
    }
    Ok((n, per))
}

pub const SECRET_PREFIX: &str = "secret:";

/// The environment variable a `secret:NAME` reference reads: `OBMEN_SECRET_NAME`.
pub fn secret_env_var(name: &str) -> String {
    format!(
        "OBMEN_SECRET_{}",
        name.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// Where `secret:NAME` references resolve: the encrypted store first, then the
/// environment (`OBMEN_SECRET_NAME`).
#[derive(Clone, Debug, Default)]
pub struct SecretSource {
    stored: BTreeMap<String, Secret>,
}

impl SecretSource {
    pub fn env_only() -> SecretSource {
        SecretSource::default()
    }

    pub fn with_stored(stored: BTreeMap<String, Secret>) -> SecretSource {
        SecretSource { stored }
    }

    /// Resolves a value that may be a secret reference. A literal is accepted too (and
    /// masked like any secret), but references keep the value out of the file.
    pub fn resolve(&self, value: &str) -> Result<Secret, String> {
        let secret = match value.strip_prefix(SECRET_PREFIX) {
            Some(name) => match self.stored.get(name) {
                Some(found) => found.clone(),
                None => {
                    let var = secret_env_var(name);
                    let found = std::env::var(&var).map_err(|_| {
                        format!("secret `{name}` is not set (not in the secret store, nor the environment variable {var})")
                    })?;
                    Secret::new(found)
                }
            },
            None => Secret::new(value),
        };
        if secret.expose().len() < MIN_SECRET_LEN {
            return Err(format!(
                "a secret must be at least {MIN_SECRET_LEN} characters long"
            ));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_rate("10/s"), Ok((10, Duration::from_secs(1))));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("ten").is_err());
    }

    #[test]
    fn secret_env_names() {
        assert_eq!(secret_env_var("admin-token"), "OBMEN_SECRET_ADMIN_TOKEN");
    }
}
