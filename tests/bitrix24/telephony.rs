//! A PBX reports finished calls to obmen (a generic JSON webhook); obmen registers each in
//! Bitrix24 telephony, finishes it with the status mapped from the PBX disposition and
//! attaches the recording (`telephony.externalCall.register` → `finish` → `attachRecord`),
//! as an OAuth application: the only context these methods work in. The flow is
//! `examples/pbx-calls-to-bitrix24.toml` as shipped.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::fake::{CLIENT_ID, CLIENT_SECRET, Fake, REREGISTER_WINDOW, WEBHOOK_TOKEN};
use super::{App, id_of, oauth_system};

const HOOK_TOKEN: &str = "pbx-hook-token-0001";

const EXAMPLE: &str = "examples/pbx-calls-to-bitrix24.toml";

/// Replaces `from` in `text`, which must hold it: an example edited out of shape fails here.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the example has no `{from}`");
    text.replace(from, to)
}

/// `examples/pbx-calls-to-bitrix24.toml` as shipped, against the fake: secrets and the data
/// directory filled in, the portal's address, a faster limit and shorter retry waits; with
/// `webhook` the application is swapped for an inbound webhook; `b24_extra` is added to the
/// Bitrix24 system.
async fn start_example(fake: &Fake, webhook: bool, b24_extra: &str) -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(EXAMPLE).expect("example");
    let oauth = text
        .lines()
        .find(|l| l.starts_with("oauth = {"))
        .expect("the example's oauth line")
        .to_owned();
    let credentials = if webhook {
        format!("webhook_url = \"{}/rest/1/{WEBHOOK_TOKEN}/\"", fake.url)
    } else {
        format!(
            "oauth = {{ domain = \"{url}\", server = \"{url}\", client_id = \"{CLIENT_ID}\", client_secret = \"{CLIENT_SECRET}\", access_token = \"access-0001\", refresh_token = \"refresh-0001\" }}",
            url = fake.url
        )
    };
    let data = format!("\"{}\"", dir.path().join("data").display());
    let limit = format!("rate_limit = \"50/s\"\n{b24_extra}");
    let mut text = swap(&text, &oauth, &credentials);
    for (from, to) in [
        ("\"/var/lib/obmen\"", data.as_str()),
        ("secret:admin_token", super::ADMIN),
        ("secret:pbx_hook_token", HOOK_TOKEN),
        ("rate_limit = \"2/s\"", &limit),
        (
            "retry = { max_attempts = 10, initial = \"30s\", max = \"1h\" }",
            "retry = { max_attempts = 5, initial = \"100ms\", max = \"2s\" }",
        ),
    ] {
        text = swap(&text, from, to);
    }
    assert!(!text.contains("secret:"), "every secret is filled in");
    App::serve_in(dir, text).await
}

const REGISTER: &str = "telephony.externalcall.register";
const FINISH: &str = "telephony.externalcall.finish";
const ATTACH: &str = "telephony.externalcall.attachrecord";

fn pbx_call(
    uniqueid: &str,
    caller: &str,
    ext: &str,
    direction: &str,
    duration: u64,
    disposition: &str,
    recording: Option<&str>,
) -> Value {
    json!({"uniqueid": uniqueid, "caller": caller, "callee_ext": ext, "direction": direction,
        "started_at": "2026-11-27T10:00:00+05:00", "duration": duration,
        "disposition": disposition, "recording_url": recording})
}

impl App {
    async fn pbx(&self, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(self.url("/hooks/pbx-call"))
                .header("X-Obmen-Token", HOOK_TOKEN)
                .json(body),
        )
        .await
    }
}

fn seed_contact(fake: &Fake) {
    fake.with(|p| {
        p.contacts.insert(
            7,
            json!({"ID": "7", "NAME": "Aigul", "PHONE": [{"ID": "1", "VALUE": "+7 701 000-00-05", "VALUE_TYPE": "WORK"}]}),
        );
    });
}

/// A known number finds its contact, an unknown one gets a lead (and the next call from it
/// finds that lead); each call is registered with the PBX `uniqueid` as `EXTERNAL_CALL_ID`,
/// finished with the mapped status and duration (a CRM call activity), and its recording
/// attached; a call without a recording stops before `attachRecord`. The same webhook
/// delivered again is the same exchange: nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_calls_are_registered_finished_and_their_records_attached() {
    let fake = Fake::start().await;
    seed_contact(&fake);
    let app = start_example(&fake, false, "").await;

    let mut answered = pbx_call(
        "1767000000.101",
        "+77010000005",
        "101",
        "in",
        95,
        "ANSWERED",
        Some("https://pbx.example.kz/monitor/1767000000.101.mp3"),
    );
    answered["line"] = json!("3");
    let (code, first) = app.pbx(&answered).await;
    assert_eq!(code, 200, "{first}");
    let done = app.wait_for(id_of(&first), "succeeded").await;
    assert_eq!(done["external_id"], "1767000000.101", "{done:#}");
    let call_id = done["steps"][1]["output"]["CALL_ID"]
        .as_str()
        .expect("CALL_ID")
        .to_owned();
    assert!(call_id.starts_with("externalCall."), "{call_id}");
    assert_eq!(done["steps"][1]["output"]["CRM_ENTITY_TYPE"], "CONTACT");
    assert_eq!(done["steps"][1]["output"]["CRM_ENTITY_ID"], 7);
    assert_eq!(done["steps"][1]["output"]["CRM_CREATED_LEAD"], Value::Null);
    fake.with(|p| {
        let t = &p.telephony;
        assert_eq!(t.methods(), [REGISTER, FINISH, ATTACH]);
        let register = &t.accepted(REGISTER)[0];
        assert_eq!(register["EXTERNAL_CALL_ID"], "1767000000.101");
        assert_eq!(register["TYPE"], 2);
        assert_eq!(register["USER_PHONE_INNER"], "101");
        assert_eq!(register["PHONE_NUMBER"], "+77010000005");
        assert_eq!(register["CALL_START_DATE"], "2026-11-27T10:00:00+05:00");
        assert_eq!(register["CRM_CREATE"], 1);
        assert_eq!(register["LINE_NUMBER"], "3");
        let finish = &t.accepted(FINISH)[0];
        assert_eq!(finish["CALL_ID"], call_id.as_str());
        assert_eq!(finish["STATUS_CODE"], "200");
        assert_eq!(finish["DURATION"], 95);
        let call = t.call(&call_id).expect("registered");
        let row = call.finished.as_ref().expect("finished");
        assert_eq!(row["CALL_FAILED_CODE"], "200");
        assert_eq!(row["CALL_STATUS"], 1);
        assert_eq!(row["CALL_DURATION"], 95);
        assert_eq!(row["EXTERNAL_CALL_ID"], "1767000000.101");
        let activity = row["CRM_ACTIVITY_ID"].as_u64().expect("activity");
        assert_eq!(t.activities[&activity]["OWNER_TYPE"], "CONTACT");
        assert_eq!(t.activities[&activity]["OWNER_ID"], "7");
        let record = call.record.as_ref().expect("record attached");
        assert_eq!(
            record.url.as_deref(),
            Some("https://pbx.example.kz/monitor/1767000000.101.mp3")
        );
        assert_eq!(record.filename, "1767000000.101.mp3");
        assert!(t.leads.is_empty(), "no lead for a known number");
    });
    assert_eq!(done["steps"][3]["output"]["FILE_ID"], 9001, "{done:#}");

    // An unknown number: a lead is made (CRM_CREATE=1); the call activity is on it.
    let outgoing = pbx_call(
        "1767000100.102",
        "+7 (702) 555-12-34",
        "102",
        "out",
        40,
        "ANSWERED",
        Some("https://pbx.example.kz/monitor/1767000100.102.wav"),
    );
    let (_, second) = app.pbx(&outgoing).await;
    let done = app.wait_for(id_of(&second), "succeeded").await;
    let register = &done["steps"][1]["output"];
    assert_eq!(register["CRM_ENTITY_TYPE"], "LEAD", "{done:#}");
    let lead = register["CRM_CREATED_LEAD"].as_u64().expect("a lead");
    assert_eq!(
        register["CRM_CREATED_ENTITIES"],
        json!([{"ENTITY_TYPE": "LEAD", "ENTITY_ID": lead}])
    );
    fake.with(|p| {
        let t = &p.telephony;
        assert_eq!(t.accepted(REGISTER)[1]["TYPE"], 1, "outgoing");
        assert!(t.accepted(REGISTER)[1].get("LINE_NUMBER").is_none());
        assert_eq!(t.leads[&lead]["SOURCE_ID"], "CALL");
        assert_eq!(t.leads[&lead]["ASSIGNED_BY_ID"], "2");
    });

    // The same number is busy next time: the lead is found, not made again; no recording,
    // so `attachRecord` is passed by (`when`), and the call is finished as 486.
    let busy = pbx_call(
        "1767000200.103",
        "77025551234",
        "102",
        "out",
        0,
        "BUSY",
        None,
    );
    let (_, third) = app.pbx(&busy).await;
    let done = app.wait_for(id_of(&third), "succeeded").await;
    assert_eq!(done["steps"][3]["done"], true);
    assert_eq!(
        done["steps"][3]["output"],
        Value::Null,
        "no record attached"
    );
    assert_eq!(done["steps"][1]["output"]["CRM_ENTITY_TYPE"], "LEAD");
    assert_eq!(done["steps"][1]["output"]["CRM_ENTITY_ID"], lead);
    assert_eq!(done["steps"][1]["output"]["CRM_CREATED_LEAD"], Value::Null);
    assert_eq!(done["steps"][2]["output"]["CALL_FAILED_CODE"], "486");
    assert_eq!(done["steps"][2]["output"]["CALL_STATUS"], 0);
    fake.with(|p| assert_eq!(p.telephony.leads.len(), 1));

    // The first webhook delivered again: the same exchange, nothing sent.
    let (code, again) = app.pbx(&answered).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(id_of(&again), id_of(&first), "{again}");
    let detail = app.exchange(id_of(&first)).await;
    assert_eq!(detail["status"], "succeeded");
    fake.with(|p| {
        let methods = p.telephony.methods();
        assert_eq!(
            methods,
            [
                REGISTER, FINISH, ATTACH, REGISTER, FINISH, ATTACH, REGISTER, FINISH
            ]
        );
    });
    // The access token is hidden in the journal.
    assert!(!detail.to_string().contains("access-0001"), "{detail:#}");
}

/// `finish` refused by the request limit, then by a server error: each attempt resumes at
/// `finish` (the `register` step is checkpointed), so the call is registered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_finish_is_retried_without_registering_again() {
    let fake = Fake::start().await;
    seed_contact(&fake);
    fake.with(|p| {
        p.telephony.faults = vec![
            (
                FINISH.into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "QUERY_LIMIT_EXCEEDED",
            ),
            (
                FINISH.into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
            ),
        ];
    });
    let app = start_example(&fake, false, "").await;
    let body = pbx_call(
        "1767000300.104",
        "+77010000005",
        "101",
        "in",
        12,
        "ANSWERED",
        Some("https://pbx.example.kz/monitor/1767000300.104.mp3"),
    );
    let (_, answer) = app.pbx(&body).await;
    let done = app.wait_for(id_of(&answer), "succeeded").await;
    assert_eq!(done["attempts"], 3, "{done:#}");
    let classes: Vec<Value> = done["attempt_log"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["error"]["class"].clone())
        .collect();
    assert_eq!(
        classes,
        [json!("rate_limited"), json!("transient"), Value::Null],
        "{done:#}"
    );
    fake.with(|p| {
        let t = &p.telephony;
        assert_eq!(t.methods(), [REGISTER, FINISH, FINISH, FINISH, ATTACH]);
        let statuses: Vec<u16> = t.log.iter().map(|(_, _, s)| *s).collect();
        assert_eq!(statuses, [200, 503, 500, 200, 200]);
        assert_eq!(t.calls.len(), 1);
        assert!(t.calls[0].finished.is_some() && t.calls[0].record.is_some());
    });
}

/// Answers lost after the portal did the work (they come after obmen's timeout). A lost
/// `register` is sent again and Bitrix24's re-registration rule (same `EXTERNAL_CALL_ID`
/// within 30 minutes) answers the same CALL_ID: one call. A lost `finish` cannot be made
/// good: sent again, the portal no longer finds the finished call, and the exchange fails
/// (`permanent`) for a person to look at, the call being saved already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_of_register_and_finish() {
    let fake = Fake::start().await;
    seed_contact(&fake);
    fake.with(|p| p.telephony.lose_answers = vec![REGISTER.into()]);
    let app = start_example(&fake, false, "timeout = \"500ms\"").await;
    let body = pbx_call(
        "1767000600.107",
        "+77010000005",
        "101",
        "in",
        20,
        "ANSWERED",
        Some("https://pbx.example.kz/monitor/1767000600.107.mp3"),
    );
    let (_, answer) = app.pbx(&body).await;
    let done = app.wait_for(id_of(&answer), "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done:#}");
    assert_eq!(done["attempt_log"][0]["error"]["class"], "transient");
    fake.with(|p| {
        let t = &p.telephony;
        assert_eq!(t.methods(), [REGISTER, REGISTER, FINISH, ATTACH]);
        assert_eq!(t.calls.len(), 1, "registered once");
        assert_eq!(
            done["steps"][1]["output"]["CALL_ID"],
            t.calls[0].call_id.as_str()
        );
    });

    fake.with(|p| p.telephony.lose_answers = vec![FINISH.into()]);
    let body = pbx_call(
        "1767000700.108",
        "+77010000005",
        "101",
        "in",
        20,
        "ANSWERED",
        None,
    );
    let (_, answer) = app.pbx(&body).await;
    let failed = app.wait_for(id_of(&answer), "failed").await;
    assert_eq!(failed["attempts"], 2, "{failed:#}");
    assert_eq!(failed["last_error"]["class"], "permanent");
    assert_eq!(failed["last_error"]["step"], "finish");
    assert_eq!(
        failed["last_error"]["message"],
        "Bitrix24 answered 400 ERROR_CORE: Call is not found (call should be registered prior to finishing)"
    );
    fake.with(|p| {
        let t = &p.telephony;
        assert_eq!(t.calls.len(), 2);
        assert!(t.calls[1].finished.is_some(), "the first finish was done");
        assert_eq!(t.methods()[4..], [REGISTER, FINISH, FINISH]);
    });
}

/// A disposition the status map does not know: `rejected` before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_disposition_is_rejected_and_nothing_is_sent() {
    let fake = Fake::start().await;
    let app = start_example(&fake, false, "").await;
    let body = pbx_call(
        "1767000400.105",
        "+77010000005",
        "101",
        "in",
        0,
        "CONGESTION",
        None,
    );
    let (_, answer) = app.pbx(&body).await;
    let rejected = app.wait_for(id_of(&answer), "rejected").await;
    let message = rejected["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("disposition") && message.contains("CONGESTION"),
        "{rejected:#}"
    );
    assert_eq!(rejected["last_error"]["class"], "input");

    // A report without the employee's extension breaks the flow's schema: rejected too.
    let mut body = pbx_call(
        "1767000400.106",
        "+77010000005",
        "101",
        "in",
        0,
        "NO ANSWER",
        None,
    );
    body.as_object_mut().expect("object").remove("callee_ext");
    let (_, answer) = app.pbx(&body).await;
    let rejected = app.wait_for(id_of(&answer), "rejected").await;
    let message = rejected["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("schema:") && message.contains("callee_ext"),
        "{rejected:#}"
    );
    fake.with(|p| {
        assert!(p.telephony.log.is_empty());
        assert!(p.calls.is_empty(), "nothing reached the portal");
    });
}

/// With an inbound webhook instead of an application, `register` answers `403
/// WRONG_AUTH_TYPE`: a `config` error (the system must be changed to `oauth`), failed at
/// once, never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_webhook_is_refused_with_wrong_auth_type_and_not_retried() {
    let fake = Fake::start().await;
    let app = start_example(&fake, true, "").await;
    let body = pbx_call(
        "1767000500.106",
        "+77010000005",
        "101",
        "in",
        30,
        "ANSWERED",
        None,
    );
    let (_, answer) = app.pbx(&body).await;
    let failed = app.wait_for(id_of(&answer), "failed").await;
    assert_eq!(failed["attempts"], 1, "{failed:#}");
    assert_eq!(failed["last_error"]["class"], "config");
    assert_eq!(failed["last_error"]["step"], "register");
    assert_eq!(
        failed["last_error"]["message"],
        "Bitrix24 answered 403 WRONG_AUTH_TYPE: Current authorization type is denied for this method"
    );
    fake.with(|p| {
        let t = &p.telephony;
        assert_eq!(t.methods(), [REGISTER]);
        assert_eq!(t.log[0].2, 403);
        assert!(t.calls.is_empty());
    });
    let text = failed.to_string();
    assert!(!text.contains(WEBHOOK_TOKEN), "{text}");
}

/// One manual flow per method, the trigger body as the arguments.
const RAW: &str = r#"
[[flows]]
name = "register"
trigger = { manual = {} }
retry = { max_attempts = 1 }
steps = [ { name = "call", call = "b24.telephony.externalCall.register", args = '.trigger' } ]

[[flows]]
name = "finish"
trigger = { manual = {} }
retry = { max_attempts = 1 }
steps = [ { name = "call", call = "b24.telephony.externalCall.finish", args = '.trigger' } ]

[[flows]]
name = "attach"
trigger = { manual = {} }
retry = { max_attempts = 1 }
steps = [ { name = "call", call = "b24.telephony.externalcall.attachrecord", args = '.trigger' } ]
"#;

impl App {
    /// Runs a manual flow; `Ok(output)` or `Err((class, message))`.
    async fn tel(&self, flow: &str, args: Value) -> Result<Value, (String, String)> {
        let id = self.run(flow, &args).await;
        let done = self.settled(id).await;
        if done["status"] == "succeeded" {
            return Ok(done["steps"][0]["output"].clone());
        }
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Err((
            text(&done["last_error"]["class"]),
            text(&done["last_error"]["message"]),
        ))
    }
}

fn refused(description: &str) -> Result<Value, (String, String)> {
    Err((
        "permanent".into(),
        format!("Bitrix24 answered 400 ERROR_CORE: {description}"),
    ))
}

/// The documented checks and answers of the three methods, through the connector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_answers_register_finish_and_attach_record_as_documented() {
    let fake = Fake::start().await;
    seed_contact(&fake);
    let app = App::start(&[oauth_system(&fake), RAW.into()].concat()).await;
    let ok = json!({"USER_ID": 2, "PHONE_NUMBER": "+7 701 000-00-05", "TYPE": 2,
        "LINE_NUMBER": "3", "EXTERNAL_CALL_ID": "asterisk-1710140185.18441",
        "CALL_START_DATE": "2026-03-07T10:20:30+03:00"});
    let with = |changes: Value| {
        let mut args = ok.clone();
        for (k, v) in changes.as_object().into_iter().flatten() {
            if v.is_null() {
                args.as_object_mut().expect("object").remove(k);
            } else {
                args[k] = v.clone();
            }
        }
        args
    };

    let cases = [
        (
            json!({"USER_ID": null}),
            "USER_ID or USER_PHONE_INNER should be set",
        ),
        (
            json!({"USER_ID": null, "USER_PHONE_INNER": "103"}),
            "User is not found or is not active",
        ),
        (json!({"USER_ID": 99}), "User is not found or is not active"),
        (json!({"TYPE": 6}), "Unknown TYPE"),
        (json!({"TYPE": null}), "Unknown TYPE"),
        (
            json!({"CALL_START_DATE": "07.03.2026 10:20"}),
            "CALL_START_DATE should be in the ISO-8601 format",
        ),
        (
            json!({"PHONE_NUMBER": "call me"}),
            "Unsupported phone number format",
        ),
    ];
    for (changes, description) in cases {
        let got = app.tel("register", with(changes.clone())).await;
        assert_eq!(got, refused(description), "{changes}");
    }

    // Registered: the contact found by phone (formatting ignored).
    let first = app.tel("register", ok.clone()).await.expect("registered");
    assert_eq!(first["CRM_ENTITY_TYPE"], "CONTACT");
    assert_eq!(first["CRM_ENTITY_ID"], 7);
    assert_eq!(first["CRM_CREATED_ENTITIES"], json!([]));
    let call_id = first["CALL_ID"].as_str().expect("CALL_ID").to_owned();
    // Again within 30 minutes with the same PHONE_NUMBER, TYPE, user, LINE_NUMBER and
    // EXTERNAL_CALL_ID: the same CALL_ID, whatever the start time says.
    let again = app
        .tel(
            "register",
            with(json!({"CALL_START_DATE": "2026-03-07T10:25:00+03:00"})),
        )
        .await
        .expect("registered");
    assert_eq!(again["CALL_ID"], call_id.as_str());
    let other = app
        .tel("register", with(json!({"EXTERNAL_CALL_ID": "asterisk-2"})))
        .await
        .expect("registered");
    assert_ne!(other["CALL_ID"], call_id.as_str());
    // No lead without CRM_CREATE, even for an unknown number.
    let unknown = app
        .tel(
            "register",
            with(json!({"PHONE_NUMBER": "77779990000", "EXTERNAL_CALL_ID": "asterisk-3"})),
        )
        .await
        .expect("registered");
    assert_eq!(unknown["CRM_ENTITY_TYPE"], Value::Null);
    assert_eq!(unknown["CRM_CREATED_LEAD"], Value::Null);

    // A record needs a finished call.
    let early = app
        .tel(
            "attach",
            json!({"CALL_ID": call_id, "RECORD_URL": "https://pbx.example.kz/r.mp3"}),
        )
        .await;
    assert_eq!(
        early,
        Err((
            "permanent".into(),
            "Bitrix24 answered 400 (no code): Call is not found in the statistic table. It looks like it is not finished yet.".into()
        ))
    );

    // finish: CALL_ID must be a string and registered; STATUS_CODE defaults by DURATION.
    let got = app.tel("finish", json!({"CALL_ID": 5, "USER_ID": 2})).await;
    assert_eq!(
        got,
        Err((
            "permanent".into(),
            "Bitrix24 answered 400 INVALID_ARGUMENT: CALL_ID must be a string".into()
        ))
    );
    let got = app
        .tel(
            "finish",
            json!({"CALL_ID": "externalCall.nope.1", "USER_ID": 2}),
        )
        .await;
    assert_eq!(
        got,
        refused("Call is not found (call should be registered prior to finishing)")
    );
    let got = app.tel("finish", json!({"CALL_ID": call_id})).await;
    assert_eq!(got, refused("USER_ID or USER_PHONE_INNER should be set"));
    let row = app
        .tel(
            "finish",
            json!({"CALL_ID": call_id, "USER_ID": 2, "DURATION": 95}),
        )
        .await
        .expect("finished");
    assert_eq!(row["CALL_FAILED_CODE"], "200");
    assert_eq!(row["CALL_STATUS"], 1);
    assert_eq!(row["PORTAL_NUMBER"], "3");
    assert_eq!(row["INCOMING"], "2");
    assert_eq!(row["EXTERNAL_CALL_ID"], "asterisk-1710140185.18441");
    assert!(row["CRM_ACTIVITY_ID"].as_u64().is_some(), "{row}");
    let missed = app
        .tel(
            "finish",
            json!({"CALL_ID": other["CALL_ID"], "USER_PHONE_INNER": "102"}),
        )
        .await
        .expect("finished");
    assert_eq!(missed["CALL_FAILED_CODE"], "304");
    assert_eq!(missed["CALL_STATUS"], 0);
    // A second finish of the same call: the call is no longer among the active ones.
    let got = app
        .tel(
            "finish",
            json!({"CALL_ID": call_id, "USER_ID": 2, "DURATION": 95}),
        )
        .await;
    assert_eq!(
        got,
        refused("Call is not found (call should be registered prior to finishing)")
    );

    // attachRecord: the documented refusals, then each way of attaching.
    let attach = |more: Value| {
        let mut args = json!({"CALL_ID": call_id});
        for (k, v) in more.as_object().into_iter().flatten() {
            args[k] = v.clone();
        }
        args
    };
    for (more, description) in [
        (
            json!({}),
            "Required parameters are not set. Request should contain either URL or FILENAME parameter",
        ),
        (
            json!({"FILENAME": "call.ogg", "FILE_CONTENT": "AAEC"}),
            "Wrong file extension. Only wav and mp3 are allowed",
        ),
        (
            json!({"FILENAME": "call.mp3", "FILE_CONTENT": "not base64!"}),
            "File content is not properly encoded. Base64 encoding is expected.",
        ),
        (
            json!({"FILENAME": "call.mp3", "FILE_CONTENT": ""}),
            "File content is empty.",
        ),
    ] {
        let got = app.tel("attach", attach(more.clone())).await;
        assert_eq!(got, refused(description), "{more}");
    }
    let blocked = app
        .tel(
            "attach",
            attach(json!({"RECORD_URL": "http://192.168.1.10/monitor/a.mp3"})),
        )
        .await;
    assert_eq!(
        blocked,
        Err((
            "permanent".into(),
            "Bitrix24 answered 400 (no code): Record URL resolves to a non-public address and was blocked.".into()
        ))
    );
    // FILENAME alone: where to upload the content. The address carries the access token
    // (as the portal's does); the journal must not.
    let id = app
        .run("attach", &attach(json!({"FILENAME": "call-001.mp3"})))
        .await;
    let detail = app.wait_for(id, "succeeded").await;
    assert!(!detail.to_string().contains("access-0001"), "{detail:#}");
    let upload = detail["steps"][0]["output"].clone();
    assert_eq!(upload["fieldName"], "file");
    assert!(
        upload["uploadUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{}/rest/upload.json?", fake.url))),
        "{upload}"
    );
    // FILENAME + FILE_CONTENT: attached at once, the bytes decoded.
    let file = app
        .tel(
            "attach",
            attach(json!({"FILENAME": "call-001.mp3", "FILE_CONTENT": "SUQzAwAAAAA="})),
        )
        .await
        .expect("attached");
    let file_id = file["FILE_ID"].as_u64().expect("FILE_ID");
    fake.with(|p| {
        let record = p
            .telephony
            .call(&call_id)
            .and_then(|c| c.record.clone())
            .expect("record");
        assert_eq!(record.file_id, file_id);
        assert_eq!(record.filename, "call-001.mp3");
        assert_eq!(
            record.content.as_deref(),
            Some(&b"ID3\x03\x00\x00\x00\x00"[..])
        );
        assert_eq!(record.url, None);
    });

    // Past the 30-minute window the same arguments register a new call.
    fake.with(|p| p.telephony.skew = REREGISTER_WINDOW + Duration::from_secs(60));
    let later = app.tel("register", ok.clone()).await.expect("registered");
    assert_ne!(later["CALL_ID"], call_id.as_str());
    // Every call here was an application's.
    fake.with(|p| assert!(p.calls.iter().all(|(_, how)| how == "oauth")));
}
