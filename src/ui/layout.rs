//! The page frame and small shared pieces: times, ages, status badges.

use maud::{DOCTYPE, Markup, html};

use crate::model::{Millis, Status, now_ms};

use super::i18n::{self, Lang};
use super::session::PageUser;

pub const CSS_PATH: &str = concat!("/static/obmen.css?v=", env!("CARGO_PKG_VERSION"));

pub fn page(user: &PageUser, title: &str, body: &Markup) -> Markup {
    let lang = user.lang;
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · obmen" }
                link rel="stylesheet" href=(CSS_PATH);
            }
            body {
                header.top {
                    a.brand href="/" { "obmen" }
                    @if user.caller.is_some() {
                        nav {
                            a href="/" { (i18n::OVERVIEW.get(lang)) }
                            a href="/errors" { (i18n::ERRORS.get(lang)) }
                            a href="/exchanges" { (i18n::EXCHANGES.get(lang)) }
                        }
                    }
                    div.lang {
                        a href="?lang=ru" { "RU" } " · " a href="?lang=en" { "EN" }
                    }
                    @if let (Some(_), Some(csrf)) = (&user.session, &user.csrf) {
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { (i18n::LOGOUT.get(lang)) }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS UTC`, or "never".
pub fn time(ms: Option<Millis>, lang: Lang) -> String {
    match ms {
        Some(ms) => {
            let t: String = crate::http::views::time(ms)
                .replace('T', " ")
                .chars()
                .take(19)
                .collect();
            format!("{t} UTC")
        }
        None => i18n::NEVER.get(lang).to_owned(),
    }
}

/// A short age like `3 min` / `2 h` / `5 d`.
pub fn age(since: Millis) -> String {
    let secs = now_ms().saturating_sub(since) / 1000;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

pub fn badge(status: Status, lang: Lang) -> Markup {
    html! { span class=(format!("badge s-{}", status.as_str())) { (i18n::status(status, lang)) } }
}

/// Counts by status as small badges, skipping zeros.
pub fn counts(counts: &[u64; 10], lang: Lang) -> Markup {
    html! {
        @for (status, n) in Status::ALL.iter().zip(counts) {
            @if *n > 0 {
                span class=(format!("count s-{}", status.as_str())) title=(i18n::status(*status, lang)) {
                    (i18n::status(*status, lang)) " " b { (n) }
                }
            }
        }
    }
}

/// An inline SVG sparkline of hourly totals; no chart library, no script.
pub fn sparkline(values: &[u64], label: &str) -> Markup {
    let (w, h) = (120.0_f64, 24.0_f64);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        w
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 1.0 - (*v as f64 / max) * (h - 2.0)
            )
        })
        .collect();
    html! {
        svg.spark width="120" height="24" viewBox="0 0 120 24" role="img" aria-label=(label) {
            title { (label) }
            polyline fill="none" stroke="currentColor" stroke-width="1.5" points=(points.join(" ")) {}
        }
    }
}
