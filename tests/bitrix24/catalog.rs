//! The fake portal's goods: the CRM catalog (`crm.product.list|get|add|update`, string values,
//! `NAME` required to add, filters and selects limited to `crm.product.fields`), the trade
//! catalog's stock side of the same goods (`catalog.product.update`: camelCase `fields`,
//! `{"result": {"element": …}}`, numeric error codes — `100` without `id`/`fields`, `0` for a
//! product that does not exist, as on its b24restdocs page) and a deal's product rows
//! (`crm.deal.productrows.get`). Part of fake.rs (`#[path]`-included from there).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Portal, Refusal, list, not_found, number};

/// `crm.product` fields (crm.product.fields); a filter, select or field naming another is
/// refused (`PROPERTY_<n>` are the catalog's properties).
pub(super) const PRODUCT_FIELDS: &[&str] = &[
    "ID",
    "CATALOG_ID",
    "PRICE",
    "CURRENCY_ID",
    "NAME",
    "CODE",
    "DESCRIPTION",
    "DESCRIPTION_TYPE",
    "ACTIVE",
    "SECTION_ID",
    "SORT",
    "VAT_ID",
    "VAT_INCLUDED",
    "MEASURE",
    "XML_ID",
    "DATE_CREATE",
    "TIMESTAMP_X",
    "MODIFIED_BY",
    "CREATED_BY",
];

/// `catalog.product.update` fields the tests may send (catalog_product, camelCase).
const CATALOG_FIELDS: &[&str] = &[
    "name",
    "active",
    "code",
    "xmlId",
    "quantity",
    "quantityReserved",
    "quantityTrace",
    "canBuyZero",
    "purchasingPrice",
    "purchasingCurrency",
    "vatId",
    "vatIncluded",
    "measure",
    "weight",
];

impl Portal {
    /// Adds a product as if made in the portal by hand; returns its id.
    pub fn seed_product(&mut self, fields: &Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let mut record = json!({"ID": id.to_string(), "CATALOG_ID": "25", "ACTIVE": "Y",
            "CURRENCY_ID": "RUB", "PRICE": null, "XML_ID": null, "DESCRIPTION": null});
        merge_text(&mut record, Some(fields));
        self.products.insert(id, record);
        id
    }

    /// The products whose `XML_ID` is `xml_id`.
    pub fn by_xml_id(&self, xml_id: &str) -> Vec<&Value> {
        self.products
            .values()
            .filter(|p| p["XML_ID"] == xml_id)
            .collect()
    }
}

/// The whole answer body of a goods method; `None` for every other method.
pub(super) fn call(p: &mut Portal, method: &str, args: &Value) -> Option<Result<Value, Refusal>> {
    let ok = |v: Value| Ok(super::envelope_body(&v));
    let id = number(&args["id"]);
    Some(match method {
        "crm.product.list" => product_list(p, method, args),
        "crm.product.get" => match id.and_then(|id| p.products.get(&id)) {
            Some(product) => ok(product.clone()),
            None => Err(not_found()),
        },
        "crm.product.add" => product_add(p, args),
        "crm.product.update" => product_update(p, args),
        "catalog.product.update" => catalog_update(p, args),
        "crm.deal.productrows.get" => match id {
            None => Err((
                StatusCode::BAD_REQUEST,
                "",
                "The parameter id is invalid or not defined.".into(),
            )),
            Some(id) if !p.deals.contains_key(&id) => Err(not_found()),
            Some(id) => ok(Value::Array(
                p.product_rows.get(&id).cloned().unwrap_or_default(),
            )),
        },
        _ => return None,
    })
}

fn product_list(p: &mut Portal, method: &str, args: &Value) -> Result<Value, Refusal> {
    p.list_args.push((method.to_owned(), args.clone()));
    check_names(
        args["filter"]
            .as_object()
            .into_iter()
            .flat_map(|f| f.keys()),
        "filter",
    )?;
    check_names(
        args["select"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|s| *s != "*"),
        "select",
    )?;
    list(p.products.values().cloned().collect(), args, false)
}

fn product_add(p: &mut Portal, args: &Value) -> Result<Value, Refusal> {
    let Some(fields) = args.get("fields").filter(|f| f.is_object()) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "",
            "Fields are not specified.".into(),
        ));
    };
    check_names(
        fields.as_object().into_iter().flat_map(|f| f.keys()),
        "field",
    )?;
    if fields["NAME"].as_str().is_none_or(|n| n.trim().is_empty()) {
        return Err((
            StatusCode::BAD_REQUEST,
            "",
            "The field NAME is required.".into(),
        ));
    }
    Ok(super::envelope_body(&json!(p.seed_product(fields))))
}

fn product_update(p: &mut Portal, args: &Value) -> Result<Value, Refusal> {
    let id = number(&args["id"]).ok_or_else(super::invalid_id)?;
    let fields = args.get("fields").cloned().unwrap_or(json!({}));
    check_names(
        fields.as_object().into_iter().flat_map(|f| f.keys()),
        "field",
    )?;
    let product = p.products.get_mut(&id).ok_or_else(not_found)?;
    merge_text(product, Some(&fields));
    Ok(super::envelope_body(&json!(true)))
}

/// The stock side of the same goods: `quantity` is kept in `Portal::quantity`; the answer is
/// the product as the trade catalog shows it (camelCase).
fn catalog_update(p: &mut Portal, args: &Value) -> Result<Value, Refusal> {
    let code = |c: &'static str, d: &str| Err((StatusCode::BAD_REQUEST, c, d.to_owned()));
    let Some(id) = number(&args["id"]) else {
        return code("100", "Parameter id is missing");
    };
    let fields = match args.get("fields") {
        Some(Value::Object(f)) if !f.is_empty() => f.clone(),
        _ => return code("100", "Parameter fields is missing or empty"),
    };
    if let Some(k) = fields
        .keys()
        .find(|k| !CATALOG_FIELDS.contains(&k.as_str()))
    {
        return code("0", &format!("Unknown field: {k}"));
    }
    let Some(product) = p.products.get(&id).cloned() else {
        return code("0", "Product with the specified ID does not exist");
    };
    if let Some(q) = fields.get("quantity") {
        let q = match q {
            Value::String(s) => s.trim().parse::<f64>().ok(),
            other => other.as_f64(),
        };
        let Some(q) = q else {
            return code("0", "quantity is not a number");
        };
        p.quantity.insert(id, json!(q));
    }
    Ok(super::envelope_body(
        &json!({"element": {"id": id, "iblockId": 25, "name": product["NAME"],
            "xmlId": product["XML_ID"], "active": product["ACTIVE"],
            "quantity": p.quantity.get(&id).cloned().unwrap_or(Value::Null)}}),
    ))
}

/// Refuses a `crm.product` filter key (after its prefix), select entry or field that
/// `crm.product.fields` does not list (`PROPERTY_<n>` are the catalog's properties).
fn check_names<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
    what: &str,
) -> Result<(), Refusal> {
    for name in names {
        let name = name.as_ref();
        let field = ["!=", ">=", "<=", ">", "<", "=", "!"]
            .iter()
            .find_map(|op| name.strip_prefix(op))
            .unwrap_or(name);
        if !PRODUCT_FIELDS.contains(&field) && !field.starts_with("PROPERTY_") {
            return Err((
                StatusCode::BAD_REQUEST,
                "",
                format!("Unknown {what}: {field}"),
            ));
        }
    }
    Ok(())
}

/// Field values as the classic CRM keeps them: strings (numbers written as text).
fn merge_text(record: &mut Value, fields: Option<&Value>) {
    if let (Value::Object(r), Some(Value::Object(f))) = (record, fields) {
        for (k, v) in f {
            let v = match v {
                Value::Number(n) => Value::String(n.to_string()),
                other => other.clone(),
            };
            r.insert(k.clone(), v);
        }
    }
}
