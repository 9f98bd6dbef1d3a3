//! The config file as written: plain strings for durations, jq and secret references, so
//! that every bad value is found by `validate.rs` in one pass rather than the first by serde.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::spans::{PathSeg, from_ignored};

#[derive(Debug, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub systems: BTreeMap<String, SystemFile>,
    #[serde(default)]
    pub flows: Vec<FlowFile>,
    #[serde(default)]
    pub status_page: StatusPageFile,
}

#[derive(Debug, Default, Deserialize)]
pub struct StatusPageFile {
    /// Serve a payload-free summary (flow health and counts) without a token.
    pub public: Option<bool>,
    /// The page's language when the browser asks for none obmen speaks: "ru" (default) or "en".
    pub language: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ServerFile {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    /// Request body limit in bytes (default 1 MiB); flows may set their own.
    pub max_body: Option<usize>,
    /// Exchanges run at once, all flows together (default 32).
    pub workers: Option<usize>,
    /// How long running attempts may finish after SIGTERM (default "10s").
    pub shutdown_grace: Option<String>,
    /// The master key file (default: master.key beside this config, or
    /// OBMEN_MASTER_KEY_FILE).
    pub master_key_file: Option<String>,
    /// Page cache of the data file in MiB (default 256).
    pub cache_mb: Option<usize>,
    /// The admin token the CLI (`obmen exchanges …`) sends, a secret reference.
    pub cli_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AuthFile {
    #[serde(default)]
    pub tokens: Vec<TokenFile>,
}

#[derive(Debug, Deserialize)]
pub struct TokenFile {
    pub name: String,
    pub role: String,
    pub token: String,
}

/// A system: `kind` picks the connector, which reads the rest of the table itself.
#[derive(Debug, Deserialize)]
pub struct SystemFile {
    pub kind: String,
    #[serde(flatten)]
    pub rest: toml::Table,
}

#[derive(Debug, Deserialize)]
pub struct FlowFile {
    pub name: String,
    pub mode: Option<String>,
    pub trigger: TriggerFile,
    pub external_id: Option<String>,
    pub key: Option<String>,
    pub dedup_window: Option<String>,
    pub schema: Option<SchemaFile>,
    pub retry: Option<RetryFile>,
    pub max_body: Option<usize>,
    #[serde(default)]
    pub mask: Vec<String>,
    #[serde(default)]
    pub status_maps: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub steps: Vec<StepFile>,
    pub on_failure: Option<OnFailureFile>,
}

/// Who hears about a failed exchange: an operation of a system (a webhook receiver, a chat),
/// called with an alert document (or what `args` makes of it).
#[derive(Debug, Deserialize)]
pub struct OnFailureFile {
    pub notify: String,
    /// The operation of that system to call (default `notify`).
    pub op: Option<String>,
    /// jq from the alert document to the operation's arguments (default: the document).
    pub args: Option<String>,
    /// Which notices to send (default all): `exchange.failed`, `errors.started`,
    /// `errors.stopped`. A write-back onto the failed record wants only the first.
    pub notices: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TriggerFile {
    pub webhook: Option<WebhookFile>,
    pub manual: Option<toml::Table>,
    pub schedule: Option<ScheduleFile>,
    pub commerceml: Option<CommerceMlFile>,
}

/// 1C calls `/1c/exchange/{flow}` with HTTP Basic `user`/`password` at `mode=checkauth`.
#[derive(Debug, Deserialize)]
pub struct CommerceMlFile {
    pub user: String,
    /// A secret reference: masked everywhere.
    pub password: String,
    /// `catalog` (import.xml, offers.xml …) or `sale` (orders both ways).
    #[serde(rename = "type")]
    pub type_: String,
    /// Largest body of one `mode=file` request told to 1C (default 8 MiB).
    pub file_limit: Option<u64>,
    /// Bytes a 1C session may hold uploaded at once, all files together (default 1 GiB).
    pub upload_limit: Option<u64>,
    /// Items one `mode=import` request accepts before answering `progress` (default 1000).
    pub import_batch: Option<usize>,
    /// Ask 1C for one zip archive instead of the XML files (default false).
    pub zip: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct WebhookFile {
    pub system: String,
}

#[derive(Debug, Deserialize)]
pub struct ScheduleFile {
    pub cron: String,
    pub tz: Option<String>,
}

/// A JSON Schema: a path to a `.json` file (relative to the config) or an inline table.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SchemaFile {
    Path(String),
    Inline(toml::Table),
}

#[derive(Debug, Deserialize)]
pub struct RetryFile {
    pub max_attempts: Option<u32>,
    pub initial: Option<String>,
    pub max: Option<String>,
}

/// One step; exactly one of `filter`, `map`, `call`, `find`, `upsert`, `to_1c` names its kind.
#[derive(Debug, Default, Deserialize)]
pub struct StepFile {
    pub name: Option<String>,
    pub filter: Option<String>,
    pub map: Option<String>,
    pub call: Option<String>,
    /// `system.entity` to look a record up in (ID map by `link`, else search by `match`).
    pub find: Option<String>,
    pub upsert: Option<String>,
    /// The name of a `commerceml` sale flow: the order (`args`) waits in its outbox for 1C.
    pub to_1c: Option<String>,
    /// jq: the step runs only when this is true (else its output is `null`).
    pub when: Option<String>,
    pub args: Option<String>,
    #[serde(rename = "as")]
    pub as_: Option<String>,
    #[serde(rename = "match", default)]
    pub match_: Vec<String>,
    /// jq for the ID-map key of an upsert (default: the exchange's external_id) or a find.
    pub link: Option<String>,
    /// What a find that finds nothing does: `continue` (default), `skip`, `retry`, `reject`.
    pub missing: Option<String>,
    /// jq for the target id in a create/find response (default `.id`).
    pub id: Option<String>,
    pub schema: Option<SchemaFile>,
}

pub type Parsed = (ConfigFile, Vec<Vec<PathSeg>>);

/// Parses the file, collecting the path of every unknown key instead of stopping at one.
pub fn parse(src: &str) -> Result<Parsed, toml::de::Error> {
    let de = toml::de::Deserializer::parse(src)?;
    let mut unknown = Vec::new();
    let cfg = serde_ignored::deserialize(de, |path| {
        let mut segs = Vec::new();
        from_ignored(&path, &mut segs);
        unknown.push(segs);
    })?;
    Ok((cfg, unknown))
}

/// Deserializes a sub-table (a connector's part of a system) the same way.
pub fn parse_table<T: serde::de::DeserializeOwned>(
    table: toml::Table,
    base: &[PathSeg],
) -> Result<(T, Vec<Vec<PathSeg>>), String> {
    let mut unknown = Vec::new();
    let value = toml::Value::Table(table);
    let parsed = serde_ignored::deserialize(value, |path| {
        let mut segs = base.to_vec();
        from_ignored(&path, &mut segs);
        unknown.push(segs);
    })
    .map_err(|e| e.to_string())?;
    Ok((parsed, unknown))
}
