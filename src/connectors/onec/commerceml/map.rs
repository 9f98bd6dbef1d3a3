//! One CommerceML item as the trigger payload of its exchange. The element is converted
//! whole (nothing dropped): known CommerceML names become English keys (table [`NAMES`]),
//! unknown ones keep their own name; list containers (`Группы`, `Цены`, `Товары` …) are
//! always arrays; an element with attributes or children is an object (its own text under
//! `text`); a repeated child becomes an array; empty text is `null`. Values stay strings,
//! exactly as written (decimals are not rounded through floats).
//!
//! On top of that every payload has: `kind`, `id`, `version`, `deleted`, `schema_version`,
//! `file`, `only_changes`, `catalog_id`, `content_hash`, `exchange_key`; offers also
//! `stock` (per warehouse, from either stock form) and each price its `price_type` name.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::xml::{Header, Kind, Node};

/// CommerceML element (and attribute) names and their JSON keys. Documented in
/// docs/connectors/1c.md; a name not listed keeps its own spelling.
pub const NAMES: &[(&str, &str)] = &[
    ("Ид", "id"),
    ("НомерВерсии", "version"),
    ("ПометкаУдаления", "deletion_mark"),
    ("Статус", "status"),
    ("Наименование", "name"),
    ("ПолноеНаименование", "full_name"),
    ("ОфициальноеНаименование", "official_name"),
    ("НаименованиеПолное", "full_name"),
    ("НаименованиеКраткое", "short_name"),
    ("МеждународноеСокращение", "international"),
    ("Артикул", "article"),
    ("Штрихкод", "barcode"),
    ("Код", "code"),
    ("БазоваяЕдиница", "unit"),
    ("Единица", "unit"),
    ("Группы", "groups"),
    ("Описание", "description"),
    ("Картинка", "images"),
    ("Страна", "country"),
    ("Вес", "weight"),
    ("Изготовитель", "manufacturer"),
    ("ЗначенияСвойств", "properties"),
    ("ЗначенияСвойства", "property"),
    ("Значение", "value"),
    ("ХарактеристикиТовара", "characteristics"),
    ("ХарактеристикаТовара", "characteristic"),
    ("ЗначенияРеквизитов", "requisites"),
    ("ЗначениеРеквизита", "requisite"),
    ("СтавкиНалогов", "tax_rates"),
    ("СтавкаНалога", "tax_rate"),
    ("Ставка", "rate"),
    ("Цены", "prices"),
    ("Цена", "price"),
    ("Представление", "presentation"),
    ("ИдТипаЦены", "price_type_id"),
    ("ЦенаЗаЕдиницу", "unit_price"),
    ("Валюта", "currency"),
    ("Коэффициент", "ratio"),
    ("Количество", "quantity"),
    ("Остатки", "rests"),
    ("Остаток", "rest"),
    ("Склад", "warehouse"),
    ("Склады", "warehouses"),
    ("ИдСклада", "warehouse_id"),
    ("КоличествоНаСкладе", "quantity"),
    ("Номер", "number"),
    ("Дата", "date"),
    ("Время", "time"),
    ("Номер1С", "number_1c"),
    ("Дата1С", "date_1c"),
    ("ХозОперация", "operation"),
    ("Роль", "role"),
    ("Курс", "exchange_rate"),
    ("Сумма", "sum"),
    ("Контрагенты", "counterparties"),
    ("Контрагент", "counterparty"),
    ("Комментарий", "comment"),
    ("Товары", "lines"),
    ("Товар", "line"),
    ("ИдКаталога", "catalog_id"),
    ("ИдКлассификатора", "classifier_id"),
    ("Налоги", "taxes"),
    ("Налог", "tax"),
    ("УчтеноВСумме", "included"),
    ("Скидки", "discounts"),
    ("Скидка", "discount"),
    ("Фамилия", "last_name"),
    ("Имя", "first_name"),
    ("Отчество", "middle_name"),
    ("ИНН", "inn"),
    ("КПП", "kpp"),
    ("АдресРегистрации", "registration_address"),
    ("ЮридическийАдрес", "legal_address"),
    ("Адрес", "address"),
    ("АдресноеПоле", "address_field"),
    ("Тип", "type"),
    ("Контакты", "contacts"),
    ("Контакт", "contact"),
    ("Представители", "representatives"),
    ("Представитель", "representative"),
    ("Отношение", "relation"),
    ("РасчетныеСчета", "bank_accounts"),
    ("РасчетныйСчет", "bank_account"),
];

/// Containers whose children are always a list, whatever their count.
const LISTS: &[&str] = &[
    "Группы",
    "ЗначенияСвойств",
    "ХарактеристикиТовара",
    "ЗначенияРеквизитов",
    "СтавкиНалогов",
    "Цены",
    "Остатки",
    "Контрагенты",
    "Товары",
    "Налоги",
    "Скидки",
    "Склады",
    "Контакты",
    "Представители",
    "РасчетныеСчета",
];

pub fn json_name(name: &str) -> &str {
    NAMES
        .iter()
        .find(|(ru, _)| *ru == name)
        .map_or(name, |(_, en)| en)
}

/// An element as JSON by the rules in this module's header.
pub fn element(node: &Node) -> Value {
    if LISTS.contains(&node.name.as_str()) {
        return Value::Array(node.children.iter().map(element).collect());
    }
    if node.children.is_empty() && node.attrs.is_empty() {
        return text(&node.text);
    }
    let mut out = Map::new();
    for (k, v) in &node.attrs {
        out.insert(json_name(k).to_owned(), text(v));
    }
    if !node.text.is_empty() {
        out.insert("text".into(), Value::String(node.text.clone()));
    }
    // Counted once per node: asking each child "am I repeated?" was quadratic.
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for child in &node.children {
        *seen.entry(child.name.as_str()).or_default() += 1;
    }
    for child in &node.children {
        let key = json_name(&child.name).to_owned();
        let value = element(child);
        // A repeated child is a list; Картинка is one even when it appears once.
        let repeated = seen.get(child.name.as_str()).is_some_and(|n| *n > 1);
        if child.name == "Картинка" || repeated {
            match out.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(list) => list.push(value),
                other => *other = value,
            }
        } else {
            out.insert(key, value);
        }
    }
    Value::Object(out)
}

fn text(t: &str) -> Value {
    let t = t.trim();
    if t.is_empty() {
        Value::Null
    } else {
        Value::String(t.to_owned())
    }
}

/// The file an item came from, as the payload names it.
pub struct Source<'a> {
    pub file: &'a str,
    pub header: &'a Header,
}

/// The trigger payload of one item.
/// The fields every item's trigger payload carries (and a product's that `mode=deactivate`
/// found absent from a full catalog), on top of the item's own.
pub struct Envelope<'a> {
    pub kind: &'a str,
    pub id: Option<&'a str>,
    pub version: Option<&'a str>,
    pub deleted: bool,
    pub schema_version: Option<&'a str>,
    pub file: Option<&'a str>,
    pub only_changes: Option<bool>,
    pub catalog_id: Option<&'a str>,
    pub content_hash: Option<&'a str>,
    pub exchange_key: String,
}

/// The envelope's fields, in this order.
pub fn envelope(e: &Envelope<'_>) -> Map<String, Value> {
    let fields = json!({
        "kind": e.kind,
        "id": e.id,
        "version": e.version,
        "deleted": e.deleted,
        "schema_version": e.schema_version,
        "file": e.file,
        "only_changes": e.only_changes,
        "catalog_id": e.catalog_id,
        "content_hash": e.content_hash,
        "exchange_key": e.exchange_key,
    });
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub fn payload(kind: Kind, node: &Node, src: &Source<'_>) -> Value {
    let body = element(node);
    let content_hash = hash(&body);
    let mut out = match body {
        Value::Object(map) => map,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    };
    let id = node.text_of("Ид").map(str::to_owned);
    let version = node.text_of("НомерВерсии").map(str::to_owned);
    let version_part = version
        .clone()
        .unwrap_or_else(|| format!("h{content_hash}"));
    let h = src.header;
    out.extend(envelope(&Envelope {
        kind: kind.label(),
        id: id.as_deref(),
        version: version.as_deref(),
        deleted: deleted(kind, node),
        schema_version: h.schema_version.as_deref(),
        file: Some(src.file),
        only_changes: h.only_changes,
        catalog_id: h.catalog_id.as_deref(),
        content_hash: Some(&content_hash),
        exchange_key: format!(
            "{}:{}:{version_part}",
            part(src.file, kind),
            id.as_deref().unwrap_or("")
        ),
    }));
    if kind == Kind::Offer {
        out.insert("stock".into(), Value::Array(stock(node)));
        name_price_types(&mut out, h);
        if h.package_id.is_some() {
            out.insert("package_id".into(), json!(h.package_id));
        }
    }
    if kind == Kind::Order
        && !out.contains_key("number_1c")
        && let Some(n) = requisite(node, "Номер по 1С")
    {
        out.insert("number_1c".into(), Value::String(n.to_owned()));
    }
    Value::Object(out)
}

/// `ПометкаУдаления` = true (element, or requisite in 2.x orders), or `Статус` = Удален
/// (attribute in the 2.09 schema, element in real 2.05 files).
pub fn deleted(kind: Kind, node: &Node) -> bool {
    let yes = |v: Option<&str>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let removed = |v: Option<&str>| v.is_some_and(|v| v.trim() == "Удален");
    yes(node.text_of("ПометкаУдаления"))
        || removed(node.attr("Статус"))
        || removed(node.text_of("Статус"))
        || (kind == Kind::Order && yes(requisite(node, "ПометкаУдаления")))
}

fn requisite<'a>(node: &'a Node, name: &str) -> Option<&'a str> {
    node.child("ЗначенияРеквизитов")?
        .children
        .iter()
        .find(|r| r.text_of("Наименование") == Some(name))
        .and_then(|r| r.text_of("Значение"))
}

/// Stock per warehouse: `<Склад ИдСклада=".." КоличествоНаСкладе=".."/>` (2.07) or
/// `Остатки/Остаток/Склад(Ид, Количество)` (3.1).
fn stock(node: &Node) -> Vec<Value> {
    let mut out: Vec<Value> = node
        .children_named("Склад")
        .filter_map(|s| {
            let id = s.attr("ИдСклада")?;
            Some(json!({"warehouse_id": id, "quantity": s.attr("КоличествоНаСкладе")}))
        })
        .collect();
    if let Some(rests) = node.child("Остатки") {
        for rest in rests.children_named("Остаток") {
            if let Some(w) = rest.child("Склад") {
                out.push(
                    json!({"warehouse_id": w.text_of("Ид"), "quantity": w.text_of("Количество")}),
                );
            }
        }
    }
    out
}

fn name_price_types(out: &mut Map<String, Value>, h: &Header) {
    let Some(Value::Array(prices)) = out.get_mut("prices") else {
        return;
    };
    for price in prices.iter_mut().filter_map(Value::as_object_mut) {
        let id = price.get("price_type_id").and_then(Value::as_str);
        if let Some((_, name, _)) = h
            .price_types
            .iter()
            .find(|(pid, _, _)| Some(pid.as_str()) == id)
        {
            price.insert("price_type".into(), Value::String(name.clone()));
        }
    }
}

/// The file's role from its name (`offers0_1.xml` -> `offers`), so that the same offer in
/// offers.xml, prices.xml and rests.xml makes three different keys.
pub fn part(file: &str, kind: Kind) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let letters: String = base
        .chars()
        .take_while(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect();
    if letters.is_empty() {
        kind.label().to_owned()
    } else {
        letters
    }
}

fn hash(v: &Value) -> String {
    let digest = Sha256::digest(v.to_string().as_bytes());
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str, text: &str) -> Node {
        Node {
            name: name.into(),
            text: text.into(),
            ..Node::default()
        }
    }

    fn node(name: &str, children: Vec<Node>) -> Node {
        Node {
            name: name.into(),
            children,
            ..Node::default()
        }
    }

    #[test]
    fn an_offer_keeps_every_field_and_gets_its_keys() {
        let offer = node(
            "Предложение",
            vec![
                leaf("Ид", "p#c"),
                leaf("Наименование", "Стол"),
                node(
                    "Цены",
                    vec![node(
                        "Цена",
                        vec![leaf("ИдТипаЦены", "t1"), leaf("ЦенаЗаЕдиницу", "2042.66")],
                    )],
                ),
                node(
                    "Остатки",
                    vec![node(
                        "Остаток",
                        vec![node(
                            "Склад",
                            vec![leaf("Ид", "w1"), leaf("Количество", "3")],
                        )],
                    )],
                ),
                leaf("Непонятное", "x"),
            ],
        );
        let header = Header {
            schema_version: Some("3.1".into()),
            price_types: vec![("t1".into(), "Розничная".into(), None)],
            ..Header::default()
        };
        let p = payload(
            Kind::Offer,
            &offer,
            &Source {
                file: "prices0_1.xml",
                header: &header,
            },
        );
        assert_eq!(p["id"], "p#c");
        assert_eq!(p["prices"][0]["unit_price"], "2042.66");
        assert_eq!(p["prices"][0]["price_type"], "Розничная");
        assert_eq!(p["stock"], json!([{"warehouse_id": "w1", "quantity": "3"}]));
        assert_eq!(p["Непонятное"], "x");
        assert_eq!(p["deleted"], false);
        let key = p["exchange_key"].as_str().expect("key");
        assert!(key.starts_with("prices:p#c:h"), "{key}");
    }

    #[test]
    fn deletion_is_read_from_every_place_it_is_written() {
        let mark = node(
            "Товар",
            vec![leaf("Ид", "a"), leaf("ПометкаУдаления", "true")],
        );
        assert!(deleted(Kind::Product, &mark));
        let mut status = node("Товар", vec![leaf("Ид", "a")]);
        status.attrs.push(("Статус".into(), "Удален".into()));
        assert!(deleted(Kind::Product, &status));
        let order = node(
            "Документ",
            vec![node(
                "ЗначенияРеквизитов",
                vec![node(
                    "ЗначениеРеквизита",
                    vec![
                        leaf("Наименование", "ПометкаУдаления"),
                        leaf("Значение", "true"),
                    ],
                )],
            )],
        );
        assert!(deleted(Kind::Order, &order));
        assert!(!deleted(
            Kind::Product,
            &node("Товар", vec![leaf("ПометкаУдаления", "false")])
        ));
    }
}
