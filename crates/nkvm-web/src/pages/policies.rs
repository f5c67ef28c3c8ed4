//! The Policies page: every policy in force with its next runs and last run; file policies
//! are read-only (and say so), UI policies are created, edited and deleted here. The form is
//! validated exactly as the file is ([`nkvm_engine::policy_book`]), each problem shown next
//! to its field; a saved change is in force at the scheduler's next tick.

use crate::WebState;
use crate::auth::CurrentUser;
use crate::form::FormData;
use crate::layout::{self, Nav, error_box};
use crate::page_error::PageError;
use crate::pages::see_other;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use http::{HeaderMap, StatusCode};
use maud::{Markup, html};
use nkvm_engine::policy_book::FieldProblem;
use nkvm_engine::policy_set::view;
use nkvm_engine::session::BackupFilter;
use nkvm_policy::file::{PolicySpec, Selector};
use nkvm_policy::{Notify, NotifyOn, Policy, PolicySource, Retention};
use std::sync::Arc;

/// `/policies...` routes.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/policies", get(list).post(save))
        .route("/policies/new", get(new_form))
        .route("/policies/{name}/edit", get(edit_form))
        .route("/policies/{name}/delete", post(delete))
}

/// The outcome of a policy's newest run, from its slot record and the backups it made since.
fn last_run(state: &WebState, p: &Policy) -> Markup {
    let history = state.session.workspace().history();
    let Some(run) = history
        .policy_runs(Some(&p.name), 5)
        .ok()
        .and_then(|r| r.into_iter().find(|r| r.outcome != "missed"))
    else {
        return html! { span.muted { "not run yet" } };
    };
    let since = run.slot.clone().min(run.at.clone());
    let actor = p.actor();
    let rows = state
        .session
        .workspace()
        .backups(&BackupFilter {
            limit: Some(500),
            include_deleted: true,
            ..Default::default()
        })
        .unwrap_or_default();
    let mine: Vec<_> = rows
        .iter()
        .filter(|r| r.actor == actor && r.started_at >= since)
        .collect();
    let ok = mine
        .iter()
        .filter(|r| r.status == nkvm_domain::JobStatus::Succeeded)
        .count();
    let bad = mine.iter().filter(|r| r.status.is_final()).count() - ok;
    html! {
        (run.outcome) " " (layout::time(Some(&run.slot))) ": "
        @if bad > 0 { span.no { (bad) " failed" } ", " }
        span.ok { (ok) " succeeded" }
        @if mine.len() > ok + bad { ", " (mine.len() - ok - bad) " running" }
    }
}

fn describe(p: &Policy) -> String {
    let mut parts = vec![format!("namespaces {}", p.namespaces.join(", "))];
    if !p.match_labels.is_empty() {
        let labels: Vec<String> = p
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.push(format!("labels {}", labels.join(",")));
    }
    parts.push(format!("store {}", p.store));
    if let Some(r) = p.retention {
        let counts = [
            ("last", r.keep_last),
            ("daily", r.daily),
            ("weekly", r.weekly),
            ("monthly", r.monthly),
            ("yearly", r.yearly),
        ];
        let kept: Vec<String> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        parts.push(format!("keep {}", kept.join(", ")));
    } else {
        parts.push("keeps every backup".into());
    }
    if let Some(n) = &p.notify {
        let on = match n.on {
            NotifyOn::Failure => "on failure",
            NotifyOn::Always => "always",
        };
        parts.push(format!("webhook {on}"));
    }
    parts.join("; ")
}

async fn list(State(state): State<Arc<WebState>>, user: CurrentUser) -> Response {
    let book = state.policy_book();
    let policies = book.policies();
    let now = Utc::now();
    let body = html! {
        p.muted {
            "Policies of the policy file"
            @if let Some(f) = book.file() { " (" span.mono { (f.display()) } ")" }
            " are read-only here: change the file (a ConfigMap) to change them. Policies made here live in the history database; the scheduler applies changes at its next tick."
        }
        p { a.button #new-policy href="/policies/new" { "New policy" } }
        table #policies {
            thead { tr { th { "Policy" } th { "Source" } th { "Cluster" } th { "Schedule" } th { "What" } th { "Next runs (UTC)" } th { "Last run" } th { "" } } }
            tbody {
                @for p in &policies {
                    @let v = view(p, now, 3);
                    tr.policy-row id=(format!("policy-{}", p.name)) data-policy=(p.name) data-source=(if p.source == PolicySource::File { "file" } else { "ui" }) {
                        td { (p.name) }
                        td { @if p.source == PolicySource::File { span.badge title="Defined in the policy file; read-only in the UI" { "file (read-only)" } } @else { span.badge.running { "UI" } } }
                        td { (p.cluster.as_deref().unwrap_or("default")) }
                        td.mono { (v.schedule) " " span.muted { (v.timezone) } }
                        td.small { (describe(p)) }
                        td.small { (v.next_runs.iter().map(|t| layout::time(Some(t))).collect::<Vec<_>>().join(", ")) }
                        td.small { (last_run(&state, p)) }
                        td.row-actions {
                            @if p.source == PolicySource::Ui {
                                a.button.edit-policy href=(format!("/policies/{}/edit", p.name)) { "Edit" }
                                form.inline method="post" action=(format!("/policies/{}/delete", p.name)) {
                                    input type="hidden" name="csrf" value=(user.csrf);
                                    button.danger.delete-policy type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
                @if policies.is_empty() { tr { td colspan="8" .muted { "No policies yet." } } }
            }
        }
    };
    layout::page("Policies", &user, Nav::Policies, body).into_response()
}

/// The form's values, as text.
#[derive(Debug, Default)]
struct Fields {
    editing: bool,
    name: String,
    schedule: String,
    timezone: String,
    namespaces: String,
    selector: String,
    store: String,
    cluster: String,
    retention: [String; 5],
    webhook: String,
    notify_on: String,
    deadline: String,
}

const RETENTION_FIELDS: [(&str, &str); 5] = [
    ("keepLast", "Keep last"),
    ("daily", "Daily"),
    ("weekly", "Weekly"),
    ("monthly", "Monthly"),
    ("yearly", "Yearly"),
];

impl Fields {
    fn of(spec: &PolicySpec) -> Fields {
        let r = spec.retention;
        let n = |f: fn(&Retention) -> u32| r.map(|r| f(&r).to_string()).unwrap_or_default();
        Fields {
            editing: true,
            name: spec.name.clone(),
            schedule: spec.schedule.clone(),
            timezone: spec.timezone.clone().unwrap_or_default(),
            namespaces: spec.namespaces.join(", "),
            selector: spec
                .selector
                .as_ref()
                .map(|s| {
                    s.match_labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            store: spec.store.clone().unwrap_or_default(),
            cluster: spec.cluster.clone().unwrap_or_default(),
            retention: [
                n(|r| r.keep_last),
                n(|r| r.daily),
                n(|r| r.weekly),
                n(|r| r.monthly),
                n(|r| r.yearly),
            ],
            webhook: spec
                .notify
                .as_ref()
                .map(|n| n.webhook.clone())
                .unwrap_or_default(),
            notify_on: match spec.notify.as_ref().map(|n| n.on) {
                Some(NotifyOn::Always) => "always".into(),
                _ => "failure".into(),
            },
            deadline: spec
                .starting_deadline_seconds
                .map(|d| d.to_string())
                .unwrap_or_default(),
        }
    }

    fn from_form(form: &FormData) -> Fields {
        let t = |k: &str| form.text(k).unwrap_or_default();
        Fields {
            editing: form.checked("editing"),
            name: t("name"),
            schedule: t("schedule"),
            timezone: t("timezone"),
            namespaces: t("namespaces"),
            selector: t("selector"),
            store: t("store"),
            cluster: t("cluster"),
            retention: RETENTION_FIELDS.map(|(k, _)| t(k)),
            webhook: t("webhook"),
            notify_on: t("notify_on"),
            deadline: t("startingDeadlineSeconds"),
        }
    }

    /// The retention counts typed; problems for those that are not numbers.
    fn counts(&self, problems: &mut Vec<FieldProblem>) -> Option<Retention> {
        let mut counts = [0u32; 5];
        for (i, (key, label)) in RETENTION_FIELDS.iter().enumerate() {
            let v = &self.retention[i];
            match v.parse() {
                _ if v.is_empty() => {}
                Ok(n) => counts[i] = n,
                Err(_) => problems.push((
                    format!("retention.{key}"),
                    format!("{label}: {v:?} is not a whole number"),
                )),
            }
        }
        let [keep_last, daily, weekly, monthly, yearly] = counts;
        let any = self.retention.iter().any(|r| !r.is_empty());
        any.then_some(Retention {
            keep_last,
            daily,
            weekly,
            monthly,
            yearly,
        })
    }

    /// The `key=value` pairs typed; problems for those without `=`.
    fn selector(&self, problems: &mut Vec<FieldProblem>) -> Option<Selector> {
        let mut labels = std::collections::BTreeMap::new();
        for pair in self
            .selector
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some((k, v)) => {
                    labels.insert(k.trim().to_string(), v.trim().to_string());
                }
                None => problems.push((
                    "selector.matchLabels".into(),
                    format!("{pair:?} is not key=value"),
                )),
            }
        }
        (!labels.is_empty()).then_some(Selector {
            match_labels: labels,
        })
    }

    /// The starting deadline typed; a problem when it is not a number.
    fn deadline(&self, problems: &mut Vec<FieldProblem>) -> Option<u64> {
        let d = self.deadline.as_str();
        match d.parse() {
            _ if d.is_empty() => None,
            Ok(n) => Some(n),
            Err(_) => {
                problems.push((
                    "startingDeadlineSeconds".into(),
                    format!("{d:?} is not a whole number of seconds"),
                ));
                None
            }
        }
    }

    /// The spec these fields describe, or the fields that are not numbers or pairs.
    fn spec(&self) -> Result<PolicySpec, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let retention = self.counts(&mut problems);
        let selector = self.selector(&mut problems);
        let starting_deadline_seconds = self.deadline(&mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        Ok(PolicySpec {
            name: self.name.clone(),
            schedule: self.schedule.clone(),
            timezone: some(&self.timezone),
            namespaces: self
                .namespaces
                .split([',', ' '])
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            selector,
            store: some(&self.store),
            retention,
            notify: some(&self.webhook).map(|webhook| Notify {
                webhook,
                on: if self.notify_on == "always" {
                    NotifyOn::Always
                } else {
                    NotifyOn::Failure
                },
            }),
            starting_deadline_seconds,
            cluster: some(&self.cluster),
        })
    }
}

/// The store and cluster drop-downs.
fn placement_fields(state: &WebState, f: &Fields, problems: &[FieldProblem]) -> Markup {
    let book = state.policy_book();
    let stores = state.session.workspace().stores().names();
    let contexts = book.remote_contexts();
    html! {
        label for="store" { "Store" }
        div {
            select #store name="store" {
                @for s in &stores { option value=(s) selected[*s == f.store || (f.store.is_empty() && s == "local")] { (s) } }
            }
            (field_errors(problems, &["store"]))
        }
        label for="cluster" { "Cluster" }
        div {
            select #cluster name="cluster" {
                option value="" selected[f.cluster.is_empty()] { "the cluster nkvm serve was started against" }
                @for c in &contexts { option value=(c.name) selected[c.name == f.cluster] { (c.name) " — " (c.server) } }
                @if !f.cluster.is_empty() && !contexts.iter().any(|c| c.name == f.cluster) {
                    option value=(f.cluster) selected { (f.cluster) " (not found)" }
                }
            }
            p.hint { "contexts of the kubeconfigs mounted below " span.mono { (book.remote_dir().display()) } "; a kubeconfig pasted in the browser cannot back a policy" }
            (field_errors(problems, &["cluster"]))
        }
    }
}

/// The five retention counts.
fn retention_field(f: &Fields, problems: &[FieldProblem]) -> Markup {
    html! {
        label { "Retention" }
        div.retention {
            @for (i, (key, label)) in RETENTION_FIELDS.iter().enumerate() {
                label for=(key) { (label) }
                input id=(key) type="number" min="0" name=(key) value=(f.retention[i]);
            }
            p.hint { "empty: keep every backup; the newest backup is always kept" }
            (field_errors(problems, &["retention", "retention.keepLast", "retention.daily", "retention.weekly", "retention.monthly", "retention.yearly"]))
        }
    }
}

/// The problems of field `key` (those of `schedule/timezone` show at both).
fn field_errors(problems: &[FieldProblem], keys: &[&str]) -> Markup {
    let id = keys[0].replace(['.', '/'], "-");
    html! {
        @for (f, msg) in problems.iter().filter(|(f, _)| keys.contains(&f.as_str())) {
            p.field-error id=(format!("error-{id}")) data-field=(f) role="alert" { (msg) }
        }
    }
}

fn text_field(
    id: &str,
    label: &str,
    value: &str,
    hint: &str,
    problems: &[FieldProblem],
    keys: &[&str],
) -> Markup {
    html! {
        label for=(id) { (label) }
        div {
            input id=(id) type="text" name=(id) value=(value) aria-invalid=[problems.iter().any(|(f, _)| keys.contains(&f.as_str())).then_some("true")];
            @if !hint.is_empty() { p.hint { (hint) } }
            (field_errors(problems, keys))
        }
    }
}

fn form_page(
    state: &WebState,
    user: &CurrentUser,
    f: &Fields,
    problems: &[FieldProblem],
) -> Markup {
    html! {
        @if problems.iter().any(|(f, _)| f == "form") {
            @for (_, m) in problems.iter().filter(|(f, _)| f == "form") { (error_box("policy-error", m)) }
        }
        @if !problems.is_empty() {
            p.error #policy-problems role="alert" {
                (if problems.len() == 1 { "1 problem".to_string() } else { format!("{} problems", problems.len()) })
                ": see the fields below. Nothing was saved."
            }
        }
        form #policy-form .grid-form method="post" action="/policies" {
            input type="hidden" name="csrf" value=(user.csrf);
            @if f.editing {
                input type="hidden" name="editing" value="1";
                input type="hidden" name="name" value=(f.name);
                label { "Name" } div { span.mono #policy-name { (f.name) } (field_errors(problems, &["name"])) }
            } @else {
                (text_field("name", "Name", &f.name, "lower-case letters, digits and '-'", problems, &["name"]))
            }
            (text_field("schedule", "Schedule", &f.schedule, "cron, 5 fields: minute hour day-of-month month day-of-week, e.g. 0 2 * * *", problems, &["schedule/timezone"]))
            (text_field("timezone", "Time zone", &f.timezone, "IANA name, e.g. Europe/Berlin (default UTC)", problems, &["schedule/timezone"]))
            (text_field("namespaces", "Namespaces", &f.namespaces, "comma-separated, within nkvm's allowlist", problems, &["namespaces"]))
            (text_field("selector", "Claim labels", &f.selector, "optional: key=value,key2=value2 on the claims' labels", problems, &["selector.matchLabels"]))
            (placement_fields(state, f, problems))
            (retention_field(f, problems))
            (text_field("webhook", "Webhook", &f.webhook, "optional http:// or https:// URL receiving a JSON POST per claim result", problems, &["notify.webhook"]))
            label for="notify_on" { "Notify" }
            select #notify_on name="notify_on" {
                option value="failure" selected[f.notify_on != "always"] { "on failure" }
                option value="always" selected[f.notify_on == "always"] { "on every result" }
            }
            (text_field("startingDeadlineSeconds", "Starting deadline (s)", &f.deadline, "how late a missed run may still start (default 3600)", problems, &["startingDeadlineSeconds"]))
            button #save-policy type="submit" { "Save policy" }
        }
    }
}

async fn new_form(State(state): State<Arc<WebState>>, user: CurrentUser) -> Response {
    let f = Fields {
        notify_on: "failure".into(),
        ..Default::default()
    };
    layout::page(
        "New policy",
        &user,
        Nav::Policies,
        form_page(&state, &user, &f, &[]),
    )
    .into_response()
}

async fn edit_form(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let policy = state
        .policy_book()
        .policies()
        .into_iter()
        .find(|p| p.name == name && p.source == PolicySource::Ui)
        .ok_or_else(|| {
            PageError::new(
                &user,
                "Edit policy",
                nkvm_domain::FailureKind::NotFound,
                format!("There is no UI policy {name:?} (file policies are changed in the file)."),
            )
            .with_back("back-to-policies", "/policies", "Back to Policies")
        })?;
    let f = Fields::of(&policy.spec);
    Ok(layout::page(
        "Edit policy",
        &user,
        Nav::Policies,
        form_page(&state, &user, &f, &[]),
    )
    .into_response())
}

async fn save(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    form: FormData,
) -> Response {
    let f = Fields::from_form(&form);
    let saved = f
        .spec()
        .and_then(|spec| state.policy_book().save_ui(spec, &user.actor()));
    match saved {
        Ok(()) => see_other(&headers, &format!("/policies#policy-{}", f.name)),
        Err(problems) => {
            let title = if f.editing {
                "Edit policy"
            } else {
                "New policy"
            };
            let page = layout::page(
                title,
                &user,
                Nav::Policies,
                form_page(&state, &user, &f, &problems),
            );
            (StatusCode::BAD_REQUEST, page).into_response()
        }
    }
}

async fn delete(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(name): Path<String>,
    _form: FormData,
) -> Result<Response, PageError> {
    state
        .policy_book()
        .delete_ui(&name, &user.actor())
        .map_err(|e| {
            PageError::invalid(&user, "Delete policy", e).with_back(
                "back-to-policies",
                "/policies",
                "Back to Policies",
            )
        })?;
    Ok(see_other(&headers, "/policies"))
}
