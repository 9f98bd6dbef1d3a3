//! Resource names (`Catalog_Контрагенты`, `AccumulationRegister_ТоварыНаСкладах`, …) and
//! the operations each kind of resource has. Checked at config load: a flow cannot name
//! an operation 1C does not offer for that kind of object.

use super::query::is_name;

/// The kinds of 1C objects the standard interface publishes, by name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Catalogs, charts, exchange plans, business processes, tasks: objects with `Ref_Key`.
    Object,
    /// Documents: objects that can also be posted.
    Document,
    DocumentJournal,
    Constant,
    InformationRegister,
    AccumulationRegister,
    AccountingRegister,
    CalculationRegister,
}

const PREFIXES: &[(&str, Kind)] = &[
    ("Catalog_", Kind::Object),
    ("Document_", Kind::Document),
    ("DocumentJournal_", Kind::DocumentJournal),
    ("Constant_", Kind::Constant),
    ("ExchangePlan_", Kind::Object),
    ("ChartOfAccounts_", Kind::Object),
    ("ChartOfCalculationTypes_", Kind::Object),
    ("ChartOfCharacteristicTypes_", Kind::Object),
    ("InformationRegister_", Kind::InformationRegister),
    ("AccumulationRegister_", Kind::AccumulationRegister),
    ("CalculationRegister_", Kind::CalculationRegister),
    ("AccountingRegister_", Kind::AccountingRegister),
    ("BusinessProcess_", Kind::Object),
    ("Task_", Kind::Object),
];

/// The kind of a resource name, if it has a known prefix and a valid 1C name after it.
/// Tabular parts (`Document_Заказ_Товары`) and `_RecordType` names share their owner's
/// prefix; 1C itself refuses what they do not support (code 13).
pub fn kind(resource: &str) -> Option<Kind> {
    PREFIXES.iter().find_map(|(prefix, kind)| {
        resource
            .strip_prefix(prefix)
            .filter(|rest| is_name(rest))
            .map(|_| *kind)
    })
}

const READ: &[&str] = &["list", "count"];
const CRUD: &[&str] = &["list", "count", "get", "create", "update", "delete"];

/// The operations a kind of resource offers.
pub fn actions(kind: Kind) -> Vec<&'static str> {
    let extra: &[&str] = match kind {
        Kind::Object => CRUD,
        Kind::Document => &[
            "list", "count", "get", "create", "update", "delete", "post", "unpost",
        ],
        Kind::DocumentJournal => READ,
        Kind::Constant => &["list", "get", "update"],
        Kind::InformationRegister => &[
            "list",
            "count",
            "get",
            "create",
            "update",
            "delete",
            "slice_last",
            "slice_first",
        ],
        Kind::AccumulationRegister | Kind::AccountingRegister => &[
            "list",
            "count",
            "get",
            "balance",
            "turnovers",
            "balance_and_turnovers",
        ],
        Kind::CalculationRegister => &["list", "count", "get"],
    };
    extra.to_vec()
}

/// `<Resource>.<action>` split and checked.
pub fn parse_op(op: &str) -> Option<(&str, Kind, &str)> {
    let (resource, action) = op.rsplit_once('.')?;
    let kind = kind(resource)?;
    actions(kind)
        .contains(&action)
        .then_some((resource, kind, action))
}

/// Objects with a `Ref_Key` and a `DataVersion`: what an upsert can find, create and update.
pub fn is_upsertable(resource: &str) -> bool {
    matches!(kind(resource), Some(Kind::Object | Kind::Document))
}

/// The name of a register's virtual table function.
pub fn function(action: &str) -> Option<&'static str> {
    Some(match action {
        "slice_last" => "SliceLast",
        "slice_first" => "SliceFirst",
        "balance" => "Balance",
        "turnovers" => "Turnovers",
        "balance_and_turnovers" => "BalanceAndTurnovers",
        _ => return None,
    })
}
