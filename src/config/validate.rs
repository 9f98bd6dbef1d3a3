//! One pass over the parsed file that builds the running model and records every problem:
//! bad values, jq that does not compile, cron that does not parse, unknown systems, ops
//! and entities, unresolvable secrets.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::connectors::{self, BuildCtx, Connector};
use crate::engine::flow::{Flow, Lookup, Missing, Mode, NOTICES, Schema, Step, StepKind, Trigger};
use crate::engine::jq::Jq;
use crate::engine::retry::RetryPolicy;
use crate::mask::{MaskPath, Masker, Secret};

use super::Problem;
use super::file::{ConfigFile, FlowFile, SchemaFile, StepFile};
use super::spans::{PathSeg, key};
use super::values::{SecretSource, parse_duration};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Viewer,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub token: Secret,
}

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body: usize,
    pub workers: usize,
    pub shutdown_grace: Duration,
    pub cache_bytes: usize,
    pub master_key: PathBuf,
}

/// The checked config: what `serve` runs.
pub struct Loaded {
    pub server: ServerSettings,
    pub tokens: Vec<Token>,
    pub cli_token: Option<Secret>,
    pub connectors: BTreeMap<String, Arc<dyn Connector>>,
    pub flows: Vec<Arc<Flow>>,
    pub masker: Masker,
    /// `status_page.public`: the summary needs no token.
    pub public_summary: bool,
    pub ui_lang: crate::ui::i18n::Lang,
}

pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(30 * 86_400);

struct Ctx<'a> {
    problems: &'a mut Vec<Problem>,
    secrets: Vec<Secret>,
    base: &'a Path,
    source: &'a SecretSource,
    /// `to_1c` steps: where, and the sale flow they name (checked once all flows exist).
    to_onec: Vec<(Vec<PathSeg>, String)>,
}

impl Ctx<'_> {
    fn problem(&mut self, path: Vec<PathSeg>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn secret(&mut self, path: Vec<PathSeg>, value: &str) -> Option<Secret> {
        match self.source.resolve(value) {
            Ok(s) => {
                self.secrets.push(s.clone());
                Some(s)
            }
            Err(e) => {
                self.problem(path, e);
                None
            }
        }
    }

    fn jq(&mut self, path: Vec<PathSeg>, code: &str) -> Option<Jq> {
        Jq::compile(code)
            .map_err(|e| self.problem(path, format!("jq: {e}")))
            .ok()
    }

    fn duration(&mut self, path: Vec<PathSeg>, text: Option<&str>, default: Duration) -> Duration {
        match text.map(parse_duration) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.problem(path, e);
                default
            }
            None => default,
        }
    }
}

fn p(parts: &[PathSeg]) -> Vec<PathSeg> {
    parts.to_vec()
}

pub fn build(
    file: ConfigFile,
    base: &Path,
    source: &SecretSource,
    problems: &mut Vec<Problem>,
) -> Loaded {
    let mut ctx = Ctx {
        problems,
        secrets: Vec::new(),
        base,
        source,
        to_onec: Vec::new(),
    };
    let server = server(&file, &mut ctx);
    let tokens = tokens(&file, &mut ctx);
    let cli_token = file
        .server
        .cli_token
        .as_deref()
        .and_then(|t| ctx.secret(p(&[key("server"), key("cli_token")]), t));
    let mut connectors = BTreeMap::new();
    for (name, system) in file.systems {
        let mut bctx = BuildCtx {
            problems: ctx.problems,
            secrets: &mut ctx.secrets,
            source: ctx.source,
        };
        if let Some(c) = connectors::build(&name, &system.kind, system.rest, &mut bctx) {
            connectors.insert(name, c);
        }
    }
    let mut names = HashSet::new();
    let mut flows = Vec::new();
    for (i, flow) in file.flows.into_iter().enumerate() {
        let at = vec![key("flows"), PathSeg::Index(i)];
        if !names.insert(flow.name.clone()) {
            ctx.problem(
                with(&at, "name"),
                format!("a flow named `{}` already exists", flow.name),
            );
        }
        let alert = flow.on_failure.as_ref().and_then(|o| {
            alert_flow(
                &flow.name,
                o,
                &[at.clone(), vec![key("on_failure")]].concat(),
                &connectors,
                &mut ctx,
            )
        });
        if let Some(mut f) = build_flow(flow, &at, &connectors, &mut ctx, server.max_body) {
            if let Some((a, notices)) = alert {
                f.on_failure = Some(a.name.clone());
                f.notices = notices;
                flows.push(Arc::new(a));
            }
            flows.push(Arc::new(f));
        }
    }
    check_to_onec(&flows, &mut ctx);
    let headers: Vec<String> = connectors
        .values()
        .flat_map(|c| c.sensitive_headers())
        .collect();
    let masker = Masker::new(&ctx.secrets, &headers);
    Loaded {
        public_summary: file.status_page.public.unwrap_or(false),
        ui_lang: ui_lang(file.status_page.language.as_deref(), ctx.problems),
        server,
        tokens,
        cli_token,
        connectors,
        flows,
        masker,
    }
}

/// A `to_1c` step must name a flow whose trigger is a CommerceML `sale` exchange.
fn check_to_onec(flows: &[Arc<Flow>], ctx: &mut Ctx<'_>) {
    use crate::connectors::onec::commerceml::session::ExchangeType;
    for (at, name) in std::mem::take(&mut ctx.to_onec) {
        let ok = flows.iter().any(|f| {
            f.name == name
                && matches!(&f.trigger, Trigger::CommerceMl(c) if c.exchange == ExchangeType::Sale)
        });
        if !ok {
            ctx.problem(
                at,
                format!("no flow `{name}` with trigger commerceml type = \"sale\""),
            );
        }
    }
}

fn ui_lang(code: Option<&str>, problems: &mut Vec<Problem>) -> crate::ui::i18n::Lang {
    let Some(code) = code else {
        return crate::ui::i18n::Lang::Ru;
    };
    crate::ui::i18n::Lang::parse(code).unwrap_or_else(|| {
        problems.push(Problem::new(
            vec![key("status_page"), key("language")],
            format!("`{code}`: the language is ru or en"),
        ));
        crate::ui::i18n::Lang::Ru
    })
}

fn with(base: &[PathSeg], k: &str) -> Vec<PathSeg> {
    let mut v = base.to_vec();
    v.push(key(k));
    v
}

fn server(file: &ConfigFile, ctx: &mut Ctx<'_>) -> ServerSettings {
    let s = &file.server;
    let listen_text = s.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen = listen_text.parse().unwrap_or_else(|_| {
        ctx.problem(
            p(&[key("server"), key("listen")]),
            format!("`{listen_text}` is not an address like 127.0.0.1:8080"),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let data_dir = ctx.base.join(s.data_dir.as_deref().unwrap_or("data"));
    let grace = ctx.duration(
        p(&[key("server"), key("shutdown_grace")]),
        s.shutdown_grace.as_deref(),
        Duration::from_secs(10),
    );
    ServerSettings {
        listen,
        data_dir,
        max_body: s.max_body.unwrap_or(DEFAULT_MAX_BODY),
        workers: s.workers.unwrap_or(32).max(1),
        shutdown_grace: grace,
        master_key: master_key_path(s.master_key_file.as_deref(), ctx.base),
        cache_bytes: s
            .cache_mb
            .map_or(crate::store::DEFAULT_CACHE_BYTES, |mb| mb.max(1) << 20),
    }
}

/// `server.master_key_file`, else `OBMEN_MASTER_KEY_FILE`, else `master.key` beside the config.
pub fn master_key_path(configured: Option<&str>, base: &Path) -> PathBuf {
    match (configured, std::env::var_os("OBMEN_MASTER_KEY_FILE")) {
        (Some(p), _) => base.join(p),
        (None, Some(env)) => PathBuf::from(env),
        (None, None) => base.join("master.key"),
    }
}

fn tokens(file: &ConfigFile, ctx: &mut Ctx<'_>) -> Vec<Token> {
    let mut out = Vec::new();
    for (i, t) in file.auth.tokens.iter().enumerate() {
        let at = vec![key("auth"), key("tokens"), PathSeg::Index(i)];
        let role = match t.role.as_str() {
            "admin" => Role::Admin,
            "viewer" => Role::Viewer,
            other => {
                ctx.problem(
                    with(&at, "role"),
                    format!("`{other}`: the role is admin or viewer"),
                );
                continue;
            }
        };
        if let Some(token) = ctx.secret(with(&at, "token"), &t.token) {
            out.push(Token {
                name: t.name.clone(),
                role,
                token,
            });
        }
    }
    out
}

fn build_flow(
    f: FlowFile,
    at: &[PathSeg],
    systems: &BTreeMap<String, Arc<dyn Connector>>,
    ctx: &mut Ctx<'_>,
    server_max_body: usize,
) -> Option<Flow> {
    if f.name.is_empty()
        || !f
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        ctx.problem(
            with(at, "name"),
            "a flow name uses only letters, digits, - and _",
        );
    }
    let mode = match f.mode.as_deref().unwrap_or("live") {
        "live" => Mode::Live,
        "shadow" => Mode::Shadow,
        other => {
            ctx.problem(
                with(at, "mode"),
                format!("`{other}`: the mode is live or shadow"),
            );
            Mode::Live
        }
    };
    let trigger = trigger(&f, at, systems, ctx);
    // A webhook source knows its own event ids; a flow's own expressions win.
    let defaults = match &trigger {
        Some(Trigger::Webhook { system }) => systems
            .get(system)
            .map(|c| c.inbound_defaults())
            .unwrap_or_default(),
        // The item's Ид; the key adds the file's role and the version (or content hash),
        // so a re-uploaded unchanged item is a duplicate and a changed one is new work.
        Some(Trigger::CommerceMl(_)) => connectors::InboundDefaults {
            external_id: Some(".id"),
            key: Some(".exchange_key"),
        },
        _ => Default::default(),
    };
    let external_id = ctx.jq(
        with(at, "external_id"),
        f.external_id
            .as_deref()
            .or(defaults.external_id)
            .unwrap_or(".id"),
    );
    let key_jq = f
        .key
        .as_deref()
        .or(defaults.key)
        .and_then(|k| ctx.jq(with(at, "key"), k));
    let dedup_window = ctx.duration(
        with(at, "dedup_window"),
        f.dedup_window.as_deref(),
        DEFAULT_DEDUP_WINDOW,
    );
    let schema = f
        .schema
        .as_ref()
        .and_then(|s| schema(s, with(at, "schema"), ctx));
    let retry = retry(&f, at, ctx);
    let status_maps = serde_json::to_value(&f.status_maps).unwrap_or(Value::Null);
    let mask = mask_paths(&f.mask, at, ctx);
    let mut seen_as = HashSet::new();
    let mut steps = Vec::new();
    for (i, s) in f.steps.iter().enumerate() {
        let sat = [with(at, "steps"), vec![PathSeg::Index(i)]].concat();
        if let Some(name) = &s.as_
            && (matches!(name.as_str(), "trigger" | "exchange") || !seen_as.insert(name.clone()))
        {
            ctx.problem(
                with(&sat, "as"),
                format!("`{name}` is already taken in this flow"),
            );
        }
        steps.extend(step(s, i, &sat, systems, &f.status_maps, ctx));
    }
    if steps.len() != f.steps.len() {
        return None;
    }
    Some(Flow {
        name: f.name,
        mode,
        trigger: trigger?,
        external_id: external_id?,
        key: key_jq,
        dedup_window,
        schema,
        retry,
        max_body: f.max_body.unwrap_or(server_max_body),
        status_maps,
        mask,
        steps,
        on_failure: None,
        notices: Vec::new(),
    })
}

/// A flow's failure notices travel as exchanges of their own flow: journaled, retried and
/// visible like any other delivery. Its one step calls the notify system's operation.
fn alert_flow(
    flow: &str,
    o: &super::file::OnFailureFile,
    at: &[PathSeg],
    systems: &BTreeMap<String, Arc<dyn Connector>>,
    ctx: &mut Ctx<'_>,
) -> Option<(Flow, Vec<String>)> {
    let notices = match &o.notices {
        None => NOTICES.iter().map(|n| (*n).to_owned()).collect(),
        Some(list) => {
            for (j, n) in list.iter().enumerate() {
                if !NOTICES.contains(&n.as_str()) {
                    ctx.problem(
                        [with(at, "notices"), vec![PathSeg::Index(j)]].concat(),
                        format!("unknown notice `{n}`; known: {}", NOTICES.join(", ")),
                    );
                }
            }
            list.clone()
        }
    };
    let op = o.op.clone().unwrap_or_else(|| "notify".to_owned());
    let target = format!("{}.{op}", o.notify);
    let (system, op) = self::target(
        &target,
        &with(at, "notify"),
        systems,
        ctx,
        |c, op| c.has_op(op),
        "operation",
    )?;
    let args = match &o.args {
        Some(a) => ctx.jq(with(at, "args"), a)?,
        None => ctx.jq(with(at, "args"), ".trigger")?,
    };
    Some((
        Flow {
            name: crate::engine::flow::alert_flow_name(flow),
            mode: Mode::Live,
            trigger: Trigger::Manual,
            external_id: ctx.jq(at.to_vec(), ".id")?,
            key: None,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            schema: None,
            retry: RetryPolicy::DEFAULT,
            max_body: DEFAULT_MAX_BODY,
            status_maps: Value::Object(serde_json::Map::new()),
            mask: Vec::new(),
            steps: vec![Step {
                name: "notify".into(),
                kind: StepKind::Call {
                    system,
                    op,
                    args: Some(args),
                },
                when: None,
                output_as: None,
                schema: None,
            }],
            on_failure: None,
            notices: Vec::new(),
        },
        notices,
    ))
}

/// `mask = [".client.phone", ".items[].iin", ...]`: each a path into the trigger payload.
fn mask_paths(paths: &[String], at: &[PathSeg], ctx: &mut Ctx<'_>) -> Vec<MaskPath> {
    let mut out = Vec::new();
    for (j, src) in paths.iter().enumerate() {
        match MaskPath::parse(src) {
            Ok(path) => out.push(path),
            Err(e) => ctx.problem([with(at, "mask"), vec![PathSeg::Index(j)]].concat(), e),
        }
    }
    out
}

fn trigger(
    f: &FlowFile,
    at: &[PathSeg],
    systems: &BTreeMap<String, Arc<dyn Connector>>,
    ctx: &mut Ctx<'_>,
) -> Option<Trigger> {
    let t = &f.trigger;
    let tat = with(at, "trigger");
    let set = [
        t.webhook.is_some(),
        t.manual.is_some(),
        t.schedule.is_some(),
        t.commerceml.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        ctx.problem(
            tat,
            "set exactly one of webhook, manual, schedule, commerceml",
        );
        return None;
    }
    if let Some(c) = &t.commerceml {
        return commerceml(c, &with(&tat, "commerceml"), ctx);
    }
    if let Some(w) = &t.webhook {
        if !systems.contains_key(&w.system) {
            ctx.problem(
                [tat, vec![key("webhook"), key("system")]].concat(),
                format!("no system named `{}`", w.system),
            );
            return None;
        }
        return Some(Trigger::Webhook {
            system: w.system.clone(),
        });
    }
    if let Some(s) = &t.schedule {
        let sat = with(&tat, "schedule");
        let schedule = super::cron::parse(&s.cron)
            .map_err(|e| ctx.problem(with(&sat, "cron"), e))
            .ok();
        let tz_name = s.tz.as_deref().unwrap_or("UTC");
        let tz = tz_name.parse::<chrono_tz::Tz>().map_err(|_| {
            ctx.problem(
                with(&sat, "tz"),
                format!("`{tz_name}` is not a time zone like Asia/Almaty"),
            )
        });
        return Some(Trigger::Schedule {
            cron: s.cron.clone(),
            schedule: Box::new(schedule?),
            tz: tz.ok()?,
        });
    }
    Some(Trigger::Manual)
}

fn commerceml(
    c: &super::file::CommerceMlFile,
    at: &[PathSeg],
    ctx: &mut Ctx<'_>,
) -> Option<Trigger> {
    use crate::connectors::onec::commerceml::session::{
        DEFAULT_FILE_LIMIT, DEFAULT_UPLOAD_LIMIT, ExchangeType,
    };
    let exchange = ExchangeType::parse(&c.type_);
    if exchange.is_none() {
        ctx.problem(
            with(at, "type"),
            format!("`{}`: the type is catalog or sale", c.type_),
        );
    }
    if c.user.is_empty() || c.user.contains(':') {
        ctx.problem(with(at, "user"), "a user name, without `:`");
    }
    let file_limit = c.file_limit.unwrap_or(DEFAULT_FILE_LIMIT);
    if !(1024..=1 << 30).contains(&file_limit) {
        ctx.problem(with(at, "file_limit"), "between 1024 bytes and 1 GiB");
    }
    let upload_limit = c.upload_limit.unwrap_or(DEFAULT_UPLOAD_LIMIT);
    if upload_limit < file_limit {
        ctx.problem(with(at, "upload_limit"), "at least file_limit");
    }
    let password = ctx.secret(with(at, "password"), &c.password);
    Some(Trigger::CommerceMl(crate::engine::flow::CommerceMl {
        user: c.user.clone(),
        password: password?,
        exchange: exchange?,
        file_limit,
        upload_limit,
        import_batch: c.import_batch.unwrap_or(1000).max(1),
        zip: c.zip.unwrap_or(false),
    }))
}

fn schema(s: &SchemaFile, at: Vec<PathSeg>, ctx: &mut Ctx<'_>) -> Option<Schema> {
    let value: Value = match s {
        SchemaFile::Inline(table) => serde_json::to_value(table).ok()?,
        SchemaFile::Path(rel) => {
            let path = ctx.base.join(rel);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| {
                    ctx.problem(at.clone(), format!("cannot read {}: {e}", path.display()))
                })
                .ok()?;
            serde_json::from_str(&text)
                .map_err(|e| {
                    ctx.problem(at.clone(), format!("{} is not JSON: {e}", path.display()))
                })
                .ok()?
        }
    };
    match jsonschema::validator_for(&value) {
        Ok(v) => Some(Schema(v)),
        Err(e) => {
            ctx.problem(
                at,
                format!(
                    "not a valid JSON Schema at {}: {e}",
                    e.instance_path().as_str()
                ),
            );
            None
        }
    }
}

fn retry(f: &FlowFile, at: &[PathSeg], ctx: &mut Ctx<'_>) -> RetryPolicy {
    let d = RetryPolicy::DEFAULT;
    let Some(r) = &f.retry else { return d };
    let rat = with(at, "retry");
    let policy = RetryPolicy {
        max_attempts: r.max_attempts.unwrap_or(d.max_attempts),
        initial: ctx.duration(with(&rat, "initial"), r.initial.as_deref(), d.initial),
        max: ctx.duration(with(&rat, "max"), r.max.as_deref(), d.max),
    };
    if policy.max_attempts == 0 {
        ctx.problem(with(&rat, "max_attempts"), "must be at least 1");
    }
    if policy.initial > policy.max {
        ctx.problem(with(&rat, "initial"), "is longer than max");
    }
    policy
}

fn step(
    s: &StepFile,
    i: usize,
    at: &[PathSeg],
    systems: &BTreeMap<String, Arc<dyn Connector>>,
    maps: &BTreeMap<String, BTreeMap<String, String>>,
    ctx: &mut Ctx<'_>,
) -> Option<Step> {
    let kinds = [
        ("filter", &s.filter),
        ("map", &s.map),
        ("call", &s.call),
        ("find", &s.find),
        ("upsert", &s.upsert),
        ("to_1c", &s.to_1c),
    ];
    let set: Vec<_> = kinds.iter().filter(|(_, v)| v.is_some()).collect();
    let [(label, Some(value))] = set.as_slice() else {
        ctx.problem(
            at.to_vec(),
            "a step sets exactly one of filter, map, call, find, upsert, to_1c",
        );
        return None;
    };
    let vat = with(at, label);
    if s.missing.is_some() && *label != "find" {
        ctx.problem(with(at, "missing"), "only a find step has `missing`");
    }
    check_status_maps(value, &vat, maps, ctx);
    if let Some(args) = &s.args {
        check_status_maps(args, &with(at, "args"), maps, ctx);
    }
    let when = match &s.when {
        Some(w) => {
            check_status_maps(w, &with(at, "when"), maps, ctx);
            Some(ctx.jq(with(at, "when"), w)?)
        }
        None => None,
    };
    let kind = match *label {
        "filter" => StepKind::Filter(ctx.jq(vat, value)?),
        "map" => StepKind::Map(ctx.jq(vat, value)?),
        "to_1c" => {
            ctx.to_onec.push((vat, value.clone()));
            let Some(args) = &s.args else {
                ctx.problem(with(at, "args"), "a to_1c step needs args: the order");
                return None;
            };
            StepKind::ToOnec {
                flow: value.clone(),
                args: ctx.jq(with(at, "args"), args)?,
            }
        }
        "call" => {
            let (system, op) =
                target(value, &vat, systems, ctx, |c, op| c.has_op(op), "operation")?;
            let args = match &s.args {
                Some(a) => Some(ctx.jq(with(at, "args"), a)?),
                None => None,
            };
            StepKind::Call { system, op, args }
        }
        "find" => {
            let (system, entity) =
                target(value, &vat, systems, ctx, |c, e| c.has_entity(e), "entity")?;
            let missing = match s.missing.as_deref() {
                None => Missing::Continue,
                Some(m) => {
                    let Some(parsed) = Missing::parse(m) else {
                        ctx.problem(
                            with(at, "missing"),
                            format!("`{m}`: one of {}", Missing::NAMES.join(", ")),
                        );
                        return None;
                    };
                    parsed
                }
            };
            if s.link.is_none() && s.match_.is_empty() {
                ctx.problem(
                    at.to_vec(),
                    "a find needs `link` (an ID-map key), `match` (fields of args to search by), or both",
                );
                return None;
            }
            if !s.match_.is_empty() && s.args.is_none() {
                ctx.problem(
                    with(at, "args"),
                    "a find with `match` needs args: the record whose fields are searched for",
                );
                return None;
            }
            StepKind::Find {
                lookup: lookup(s, at, system, entity, ctx)?,
                args: match &s.args {
                    Some(a) => Some(ctx.jq(with(at, "args"), a)?),
                    None => None,
                },
                missing,
            }
        }
        _ => {
            let (system, entity) =
                target(value, &vat, systems, ctx, |c, e| c.has_entity(e), "entity")?;
            let Some(args) = &s.args else {
                ctx.problem(
                    with(at, "args"),
                    "an upsert needs args: the record to write",
                );
                return None;
            };
            StepKind::Upsert {
                lookup: lookup(s, at, system, entity, ctx)?,
                args: ctx.jq(with(at, "args"), args)?,
            }
        }
    };
    let schema = s
        .schema
        .as_ref()
        .and_then(|sc| schema(sc, with(at, "schema"), ctx));
    let name = s
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", i + 1, kind.label()));
    Some(Step {
        name,
        kind,
        when,
        output_as: s.as_.clone(),
        schema,
    })
}

/// A find's or an upsert's `match`, `link` and `id` (default `.id`).
fn lookup(
    s: &StepFile,
    at: &[PathSeg],
    system: String,
    entity: String,
    ctx: &mut Ctx<'_>,
) -> Option<Lookup> {
    Some(Lookup {
        system,
        entity,
        match_fields: s.match_.clone(),
        link: match &s.link {
            Some(l) => Some(ctx.jq(with(at, "link"), l)?),
            None => None,
        },
        id: ctx.jq(with(at, "id"), s.id.as_deref().unwrap_or(".id"))?,
    })
}

/// Splits `system.op` and checks that the system has it.
fn target(
    value: &str,
    at: &[PathSeg],
    systems: &BTreeMap<String, Arc<dyn Connector>>,
    ctx: &mut Ctx<'_>,
    has: impl Fn(&dyn Connector, &str) -> bool,
    what: &str,
) -> Option<(String, String)> {
    let Some((system, name)) = value.split_once('.') else {
        ctx.problem(at.to_vec(), format!("`{value}`: write it as system.{what}"));
        return None;
    };
    let Some(connector) = systems.get(system) else {
        ctx.problem(at.to_vec(), format!("no system named `{system}`"));
        return None;
    };
    if !has(connector.as_ref(), name) {
        ctx.problem(
            at.to_vec(),
            format!(
                "system `{system}` ({}) has no {what} `{name}`",
                connector.kind()
            ),
        );
        return None;
    }
    Some((system.to_owned(), name.to_owned()))
}

/// A `status("name")` that names no map of the flow is a config error, not a runtime one.
fn check_status_maps(
    code: &str,
    at: &[PathSeg],
    maps: &BTreeMap<String, BTreeMap<String, String>>,
    ctx: &mut Ctx<'_>,
) {
    let mut rest = code;
    while let Some(i) = rest.find("status(\"") {
        rest = &rest[i + 8..];
        let Some(end) = rest.find('"') else { break };
        let name = &rest[..end];
        if !maps.contains_key(name) {
            ctx.problem(
                at.to_vec(),
                format!("status map `{name}` is not defined in this flow's status_maps"),
            );
        }
    }
}
