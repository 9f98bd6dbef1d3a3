//! Russian and English labels: the users are in Kazakhstan and Russia. The language comes
//! from `?lang=`, then `Accept-Language`, then `status_page.language`.

use axum::http::HeaderMap;

use crate::model::{ErrorClass, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Ru,
    En,
}

impl Lang {
    pub fn parse(code: &str) -> Option<Lang> {
        match code.get(..2)?.to_ascii_lowercase().as_str() {
            "ru" | "kk" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The first language of `Accept-Language` that obmen speaks.
    pub fn pick(query: Option<&str>, headers: &HeaderMap, default: Lang) -> Lang {
        if let Some(l) = query.and_then(Lang::parse) {
            return l;
        }
        let accept = headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        accept
            .split(',')
            .filter_map(|part| Lang::parse(part.trim()))
            .next()
            .unwrap_or(default)
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }
}

/// A label in both languages.
pub struct T(pub &'static str, pub &'static str);

impl T {
    pub fn get(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.0,
            Lang::Ru => self.1,
        }
    }
}

pub const OVERVIEW: T = T("Overview", "Обзор");
pub const ERRORS: T = T("Errors", "Ошибки");
pub const EXCHANGES: T = T("Exchanges", "Обмены");
pub const LOGOUT: T = T("Log out", "Выйти");
pub const LOGIN: T = T("Log in", "Войти");
pub const TOKEN: T = T("Access token", "Токен доступа");
pub const FLOW: T = T("Flow", "Поток");
pub const STATE: T = T("State", "Состояние");
pub const LAST_24H: T = T("Last 24 h", "За 24 ч");
pub const LAST_7D: T = T("Last 7 days", "За 7 дней");
pub const LAST_SUCCESS: T = T("Last success", "Последний успех");
pub const LAST_ERROR: T = T("Last error", "Последняя ошибка");
pub const NEXT_RUN: T = T("Next run", "Следующий запуск");
pub const QUEUE: T = T("Waiting", "В очереди");
pub const OLDEST: T = T("oldest", "самый старый");
pub const PER_HOUR: T = T("Exchanges per hour, 24 h", "Обменов в час, 24 ч");
pub const HEALTHY: T = T("healthy", "в порядке");
pub const DEGRADED: T = T("degraded", "есть сбои");
pub const FAILING: T = T("failing", "не работает");
pub const NEVER: T = T("never", "никогда");
pub const STEP: T = T("Step", "Шаг");
pub const CLASS: T = T("Class", "Класс");
pub const MESSAGE: T = T("Message", "Сообщение");
pub const COUNT: T = T("Count", "Сколько");
pub const FIRST_SEEN: T = T("First seen", "Впервые");
pub const LAST_SEEN: T = T("Last seen", "Последний раз");
pub const SAMPLE: T = T("Example", "Пример");
pub const RETRY: T = T("Retry", "Повторить");
pub const RETRY_ALL: T = T("Retry all", "Повторить все");
pub const FORCE: T = T(
    "run again even though it succeeded",
    "запустить снова, хотя успешно",
);
pub const MORE_GROUPS: T = T(
    "older problems are not shown; pick a flow to narrow the list (/errors?flow=NAME).",
    "более старых проблем не показано; выберите поток, чтобы сузить список (/errors?flow=ИМЯ).",
);
pub const NO_ERRORS: T = T(
    "No failures. Nothing waits for a person.",
    "Сбоев нет. Ничего не ждёт человека.",
);
pub const STATUS: T = T("Status", "Статус");
pub const CREATED: T = T("Created", "Создан");
pub const ATTEMPTS: T = T("Attempts", "Попытки");
pub const SEARCH: T = T("external id or request id", "внешний id или request id");
pub const KEY: T = T("Idempotency key", "Ключ идемпотентности");
pub const SINCE: T = T("Since", "С");
pub const UNTIL: T = T("Until", "По");
pub const FILTER: T = T("Show", "Показать");
pub const ANY: T = T("any", "все");
pub const NEXT_PAGE: T = T("Older", "Раньше");
pub const NOTHING: T = T("Nothing found.", "Ничего не найдено.");
pub const TIMELINE: T = T("Timeline", "Хронология");
pub const STEPS: T = T("Steps", "Шаги");
pub const LINKS: T = T("ID map links", "Связи ID");
pub const DONE: T = T("done", "выполнен");
pub const NOT_DONE: T = T("not yet", "ещё нет");
pub const RECEIVED: T = T("received", "получено");
pub const ATTEMPT: T = T("attempt", "попытка");
pub const STATUS_CHANGE: T = T("status", "статус");
pub const MANUAL: T = T("manual action", "действие человека");
pub const DELIVERED: T = T("delivered", "доставлено");
pub const LINKED: T = T("linked", "связь");
pub const STEP_DONE: T = T("step done", "шаг выполнен");
pub const WOULD_SEND: T = T(
    "would send (not sent)",
    "было бы отправлено (не отправлено)",
);
pub const DURATION: T = T("duration", "длительность");
pub const DUPLICATE_OF: T = T("duplicate of", "дубликат");
pub const PUBLIC_NOTE: T = T(
    "Public summary: health and counts only.",
    "Публичная сводка: только состояние и счётчики.",
);
pub const BAD_TOKEN: T = T("The token is not valid.", "Токен не подходит.");

pub fn status(s: Status, lang: Lang) -> &'static str {
    let t = match s {
        Status::Received => T("received", "получен"),
        Status::Queued => T("queued", "в очереди"),
        Status::Running => T("running", "выполняется"),
        Status::Succeeded => T("succeeded", "успешно"),
        Status::Retrying => T("retrying", "повтор"),
        Status::Failed => T("failed", "ошибка"),
        Status::Rejected => T("rejected", "отклонён"),
        Status::Duplicate => T("duplicate", "дубликат"),
        Status::Skipped => T("skipped", "пропущен"),
        Status::DryRun => T("dry run", "пробный"),
    };
    t.get(lang)
}

pub fn class(c: ErrorClass, lang: Lang) -> &'static str {
    let t = match c {
        ErrorClass::Transient => T("transient", "временная"),
        ErrorClass::RateLimited => T("rate limited", "лимит запросов"),
        ErrorClass::Auth => T("auth", "доступ"),
        ErrorClass::Permanent => T("permanent", "постоянная"),
        ErrorClass::Config => T("config", "настройка"),
        ErrorClass::Input => T("input", "входные данные"),
    };
    t.get(lang)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_first_known() {
        let mut h = HeaderMap::new();
        h.insert(
            "accept-language",
            "de-DE,en-US;q=0.8,ru;q=0.5".parse().expect("hv"),
        );
        assert_eq!(Lang::pick(None, &h, Lang::Ru), Lang::En);
        assert_eq!(Lang::pick(Some("ru"), &h, Lang::En), Lang::Ru);
        assert_eq!(Lang::pick(None, &HeaderMap::new(), Lang::Ru), Lang::Ru);
    }
}
