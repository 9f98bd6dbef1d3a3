//! The `mode=query` answer: orders for 1C as a CommerceML 2.09 document in windows-1251.
//!
//! An order is the same JSON shape the parser makes of a 1C `Документ` (docs/connectors/1c.md):
//! `id`, `number`, `date`, `time`, `currency`, `exchange_rate`, `sum`, `comment`,
//! `counterparties[]`, `lines[]`, `requisites[]`, `status`. Elements follow the order of the
//! 2.09 schema, and the root carries its namespace so that the document validates against
//! commerceml-2.09.xsd (1C-Bitrix omits the namespace; 1C reads both).

use serde_json::Value;

/// Why an order cannot be written; checked when the order enters the outbox, so that a
/// bad order fails its own exchange rather than the whole export.
pub fn check_order(order: &Value) -> Result<(), String> {
    let obj = order
        .as_object()
        .ok_or("the order must be an object (see docs/connectors/1c.md)")?;
    forbidden_chars(order, &mut String::new())?;
    for field in ["id", "date", "currency", "sum"] {
        if scalar(obj.get(field)).is_none() {
            return Err(format!("the order has no `{field}`"));
        }
    }
    let date = scalar(obj.get("date")).unwrap_or_default();
    if !is_date(&date) {
        return Err(format!("`date` must be YYYY-MM-DD, not `{date}`"));
    }
    if let Some(time) = scalar(obj.get("time"))
        && !is_time(&time)
    {
        return Err(format!("`time` must be HH:MM:SS, not `{time}`"));
    }
    let parties = list(order, "counterparties");
    if parties.is_empty() {
        return Err("the order needs at least one entry in `counterparties`".into());
    }
    for (i, p) in parties.iter().enumerate() {
        if scalar(p.get("name")).is_none() && scalar(p.get("full_name")).is_none() {
            return Err(format!("counterparties[{i}] has no `name`"));
        }
    }
    for (i, l) in list(order, "lines").iter().enumerate() {
        if scalar(l.get("name")).is_none() {
            return Err(format!("lines[{i}] has no `name`"));
        }
    }
    Ok(())
}

/// XML 1.0 cannot carry most control characters, even escaped: refused here, so only this
/// order's exchange fails and `mode=query` stays readable for the others.
fn forbidden_chars(v: &Value, at: &mut String) -> Result<(), String> {
    let bad = |t: &str| t.chars().find(|c| !xml_char(*c));
    match v {
        Value::String(t) => match bad(t) {
            Some(c) => Err(format!(
                "`{}` holds the character U+{:04X}, which XML cannot carry",
                if at.is_empty() { "order" } else { at.as_str() },
                u32::from(c)
            )),
            None => Ok(()),
        },
        Value::Array(list) => {
            for (i, item) in list.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                forbidden_chars(item, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, item) in map {
                if let Some(c) = bad(k) {
                    return Err(format!(
                        "a key in `{at}` holds the character U+{:04X}, which XML cannot carry",
                        u32::from(c)
                    ));
                }
                let len = at.len();
                if !at.is_empty() {
                    at.push('.');
                }
                at.push_str(k);
                forbidden_chars(item, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether XML 1.0 allows the character (its `Char` production).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The whole answer, windows-1251 encoded. `formed_at` is `YYYY-MM-DDTHH:MM:SS`.
pub fn query_document(orders: &[Value], formed_at: &str) -> Vec<u8> {
    let mut x = Xml::default();
    x.raw("<?xml version=\"1.0\" encoding=\"windows-1251\"?>\n");
    x.raw(&format!(
        "<КоммерческаяИнформация xmlns=\"urn:1C.ru:commerceml_2\" ВерсияСхемы=\"2.09\" ДатаФормирования=\"{}\">\n",
        escape(formed_at)
    ));
    for order in orders {
        document(&mut x, order);
    }
    x.raw("</КоммерческаяИнформация>\n");
    // Characters windows-1251 lacks become numeric references, which XML reads back.
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(&x.out);
    bytes.into_owned()
}

fn document(x: &mut Xml, o: &Value) {
    x.open("Документ");
    let id = scalar(o.get("id")).unwrap_or_default();
    x.leaf("Ид", &id);
    x.leaf("Номер", &scalar(o.get("number")).unwrap_or(id));
    x.opt("Дата", o.get("date"));
    x.leaf(
        "ХозОперация",
        &scalar(o.get("operation")).unwrap_or_else(|| "Заказ товара".into()),
    );
    x.leaf(
        "Роль",
        &scalar(o.get("role")).unwrap_or_else(|| "Продавец".into()),
    );
    x.opt("Валюта", o.get("currency"));
    x.leaf(
        "Курс",
        &scalar(o.get("exchange_rate")).unwrap_or_else(|| "1".into()),
    );
    x.opt("Сумма", o.get("sum"));
    x.open("Контрагенты");
    for p in list(o, "counterparties") {
        counterparty(x, p);
    }
    x.close("Контрагенты");
    x.opt("Время", o.get("time"));
    x.opt("Комментарий", o.get("comment"));
    let lines = list(o, "lines");
    if !lines.is_empty() {
        x.open("Товары");
        for l in lines {
            line(x, l);
        }
        x.close("Товары");
    }
    let mut reqs = requisites(o);
    if let Some(status) = scalar(o.get("status")) {
        reqs.push(("Статус заказа".into(), status));
    }
    if o.get("deleted").and_then(Value::as_bool) == Some(true) {
        reqs.push(("ПометкаУдаления".into(), "true".into()));
    }
    write_requisites(x, &reqs);
    x.close("Документ");
}

fn counterparty(x: &mut Xml, p: &Value) {
    x.open("Контрагент");
    x.opt("Ид", p.get("id"));
    let name = scalar(p.get("name")).or_else(|| scalar(p.get("full_name")));
    x.leaf("Наименование", name.as_deref().unwrap_or_default());
    if let Some(official) = scalar(p.get("official_name")) {
        // A company (РеквизитыЮрЛица).
        x.leaf("ОфициальноеНаименование", &official);
        address(x, "ЮридическийАдрес", p.get("legal_address"));
        x.opt("ИНН", p.get("inn"));
        x.opt("КПП", p.get("kpp"));
    } else {
        // A person (РеквизитыФизЛица).
        let full = scalar(p.get("full_name")).or(name).unwrap_or_default();
        x.leaf("ПолноеНаименование", &full);
        x.opt("Фамилия", p.get("last_name"));
        x.opt("Имя", p.get("first_name"));
        x.opt("Отчество", p.get("middle_name"));
        x.opt("ИНН", p.get("inn"));
        address(x, "АдресРегистрации", p.get("registration_address"));
    }
    x.opt("Комментарий", p.get("comment"));
    address(x, "Адрес", p.get("address"));
    let contacts = list(p, "contacts");
    if !contacts.is_empty() {
        x.open("Контакты");
        for c in contacts {
            x.open("Контакт");
            x.opt("Тип", c.get("type"));
            x.opt("Значение", c.get("value"));
            x.close("Контакт");
        }
        x.close("Контакты");
    }
    x.leaf(
        "Роль",
        &scalar(p.get("role")).unwrap_or_else(|| "Покупатель".into()),
    );
    x.close("Контрагент");
}

/// An address as text, or as `{presentation}` the way the parser maps one.
fn address(x: &mut Xml, tag: &str, v: Option<&Value>) {
    let text = match v {
        Some(Value::Object(m)) => scalar(m.get("presentation")),
        other => scalar(other),
    };
    if let Some(text) = text {
        x.open(tag);
        x.leaf("Представление", &text);
        x.close(tag);
    }
}

fn line(x: &mut Xml, l: &Value) {
    x.open("Товар");
    x.opt("Ид", l.get("id"));
    x.opt("Артикул", l.get("article"));
    x.opt("Наименование", l.get("name"));
    let (unit, code) = match l.get("unit") {
        Some(Value::Object(u)) => (scalar(u.get("text")), scalar(u.get("code"))),
        other => (scalar(other), scalar(l.get("unit_code"))),
    };
    let code = code.unwrap_or_else(|| "796".into());
    x.raw(&format!(
        "<БазоваяЕдиница Код=\"{}\">{}</БазоваяЕдиница>",
        escape(&code),
        escape(&unit.unwrap_or_else(|| "шт".into()))
    ));
    write_requisites(x, &requisites(l));
    x.opt("ИдКаталога", l.get("catalog_id"));
    x.opt("ЦенаЗаЕдиницу", l.get("unit_price").or(l.get("price")));
    x.opt("Количество", l.get("quantity"));
    x.opt("Сумма", l.get("sum"));
    x.close("Товар");
}

fn requisites(v: &Value) -> Vec<(String, String)> {
    list(v, "requisites")
        .iter()
        .filter_map(|r| Some((scalar(r.get("name"))?, scalar(r.get("value"))?)))
        .collect()
}

fn write_requisites(x: &mut Xml, reqs: &[(String, String)]) {
    if reqs.is_empty() {
        return;
    }
    x.open("ЗначенияРеквизитов");
    for (name, value) in reqs {
        x.open("ЗначениеРеквизита");
        x.leaf("Наименование", name);
        x.leaf("Значение", value);
        x.close("ЗначениеРеквизита");
    }
    x.close("ЗначенияРеквизитов");
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A string or a number as text; empty strings and everything else are absent.
fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8
        && b.iter().enumerate().all(|(i, c)| match i {
            2 | 5 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

pub fn escape(s: &str) -> String {
    // XML 1.0 forbids most control characters even escaped; one pasted into a deal comment
    // would make the whole `mode=query` document unreadable for 1C and hold every order.
    let allowed = xml_char;
    if s.chars().all(allowed) {
        return quick_xml::escape::escape(s).into_owned();
    }
    let clean: String = s.chars().filter(|c| allowed(*c)).collect();
    quick_xml::escape::escape(clean.as_str()).into_owned()
}

#[derive(Default)]
struct Xml {
    out: String,
}

impl Xml {
    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn open(&mut self, tag: &str) {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
    }

    fn close(&mut self, tag: &str) {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push_str(">\n");
    }

    fn leaf(&mut self, tag: &str, text: &str) {
        self.open(tag);
        self.out.push_str(&escape(text));
        self.close(tag);
    }

    fn opt(&mut self, tag: &str, v: Option<&Value>) {
        if let Some(text) = scalar(v) {
            self.leaf(tag, &text);
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_order_with_a_character_xml_cannot_carry_is_refused() {
        let mut o = json!({"id": "1", "date": "2026-01-15", "currency": "KZT", "sum": "1",
            "comment": "call\u{0b}me", "counterparties": [{"name": "Иван"}],
            "lines": [{"name": "Чайник"}]});
        let e = check_order(&o).expect_err("refused");
        assert!(e.contains("`comment`") && e.contains("U+000B"), "{e}");
        o["comment"] = json!("ok\tand\nnew line");
        o["lines"][0]["name"] = json!("a\u{0}b");
        let e = check_order(&o).expect_err("refused");
        assert!(e.contains("`lines[0].name`") && e.contains("U+0000"), "{e}");
        o["lines"][0]["name"] = json!("Чайник \u{1F375}");
        assert_eq!(check_order(&o), Ok(()));
    }

    /// The writer's last defence: an order that got past check_order still yields a
    /// document an XML parser reads.
    #[test]
    fn a_query_document_never_carries_forbidden_characters() {
        let o = json!({"id": "1", "date": "2026-01-15", "currency": "KZT", "sum": "1",
            "comment": "a\u{0b}b\u{1f}c\u{FFFE}", "counterparties": [{"name": "И\u{7}ван"}],
            "lines": [{"name": "Чайник"}]});
        let doc = query_document(&[o], "2026-01-15T10:00:00");
        assert!(
            !doc.iter()
                .any(|b| *b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
        );
        let text = encoding_rs::WINDOWS_1251.decode(&doc).0;
        assert!(text.contains("<Комментарий>abc</Комментарий>"), "{text}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("q.xml");
        std::fs::write(&file, &doc).expect("write");
        // xmllint is how CI checks documents 1C reads (.ci/run installs libxml2-utils).
        if let Ok(out) = std::process::Command::new("xmllint")
            .arg("--noout")
            .arg(&file)
            .output()
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn xml_forbidden_characters_are_dropped_not_sent() {
        assert_eq!(escape("a\u{0b}b\u{0}c & d"), "abc &amp; d");
        assert_eq!(escape("line\nnext\ttab"), "line\nnext\ttab");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn orders_are_checked_before_they_are_queued() {
        assert!(check_order(&json!("x")).is_err());
        let mut o = json!({"id": "1", "date": "2026-01-15", "currency": "KZT", "sum": 10,
            "counterparties": [{"name": "Иван"}], "lines": [{"name": "Чайник"}]});
        assert_eq!(check_order(&o), Ok(()));
        o["date"] = json!("15.01.2026");
        assert!(check_order(&o).is_err_and(|e| e.contains("YYYY-MM-DD")));
    }

    #[test]
    fn the_document_is_windows_1251_with_the_orders() {
        let o = json!({"id": "B24-7", "date": "2026-01-15", "currency": "KZT", "sum": "1500.50",
            "counterparties": [{"id": "c1", "name": "Иван «Ёж» & Co"}], "lines": [{"name": "Чайник", "quantity": 2}]});
        let bytes = query_document(&[o], "2026-01-15T10:00:00");
        let (text, _, bad) = encoding_rs::WINDOWS_1251.decode(&bytes);
        assert!(!bad);
        assert!(text.contains("<Ид>B24-7</Ид>"));
        assert!(text.contains("Иван «Ёж» &amp; Co"));
        assert!(text.contains("<Роль>Покупатель</Роль>"));
    }
}
