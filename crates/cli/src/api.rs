//! The canary gate over HTTP: the latest verdicts, read from ClickHouse so that any instance
//! answers for any model, for rollout controllers and people.
//!
//! - `GET /api/v1/canaries`: every canary pair's latest cumulative verdict, as a JSON array.
//! - `GET /api/v1/canaries/{model}`: the latest cumulative verdict of the model's most recent
//!   pair (404 when it has none). Usable as an Argo Rollouts `web` metric: `jsonPath:
//!   "{$.decision}"`, success `result == "promote"`, failure `result == "rollback"`.
//! - `POST /api/v1/flagger/confirm-promotion` and `POST /api/v1/flagger/rollback`: Flagger
//!   webhooks, judged by Flagger on the status code. The model is `metadata.model` of Flagger's
//!   payload, else its `name`. Confirm-promotion answers 200 only when the decision is
//!   `promote`; rollback answers 200 only when it is `rollback` (Flagger then rolls back). Any
//!   other decision, or no verdict, is 412 with the verdict in the body.
//!
//! - `POST /api/v1/silences`: creates (or, with an existing `id`, edits) a silence of the alert
//!   notifications, stored in the `silences` table, so every instance honours it (each reloads
//!   the table every 30 s). Body: `matchers` (as in `[[alerts.silences]]`), `ends_at` (RFC
//!   3339) or `duration` (`"2h"`), optional `starts_at`, `created_by`, `comment`, `id`.
//! - `GET /api/v1/silences`: the active and pending silences; `DELETE /api/v1/silences/{id}`
//!   expires one now.
//!
//! With `[http] auth_token` set, every route here needs `Authorization: Bearer <token>`; the
//! Flagger hooks may pass it as `metadata.token` instead, since Flagger webhooks cannot set
//! headers. Without a token the routes are open (bind `[http] listen` accordingly).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use modelwatch_clickhouse::rows::CanaryVerdictRow;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::history::History;

/// What the `/api/v1` routes read and write.
#[derive(Debug, Clone)]
pub struct Api {
    /// Where the verdicts and silences are (ClickHouse, or memory without it).
    pub history: History,
    /// The bearer token, when one is required.
    pub auth_token: Option<String>,
}

/// The metric name of a verdict's decision row in `canary_verdicts`.
pub const OVERALL: &str = "overall";

/// The latest verdict of every pair, one JSON object each (the `overall` row with the metric
/// rows of the same verdict under `metrics`), newest pair first within a model.
pub fn verdicts_json(rows: Vec<CanaryVerdictRow>) -> Vec<Value> {
    let mut pairs: BTreeMap<(String, String, String), Vec<CanaryVerdictRow>> = BTreeMap::new();
    for r in rows {
        let key = (r.model.clone(), r.baseline_version.clone(), r.canary_version.clone());
        pairs.entry(key).or_default().push(r);
    }
    let mut out: Vec<(String, i64, Value)> = pairs
        .into_values()
        .filter_map(|rows| {
            let overall = rows.iter().find(|r| r.metric == OVERALL)?;
            let evidence: Value = serde_json::from_str(&overall.evidence).unwrap_or(Value::Null);
            let metrics: Vec<Value> = rows
                .iter()
                .filter(|r| r.metric != OVERALL)
                .map(|r| {
                    json!({
                        "metric": r.metric,
                        "classification": r.classification,
                        "statistic": r.statistic,
                        "p_value": r.p_value,
                        "effect": r.effect,
                        "n_baseline": r.n_baseline,
                        "n_canary": r.n_canary,
                        "threshold": r.threshold,
                        "evidence": serde_json::from_str::<Value>(&r.evidence)
                            .unwrap_or(Value::Null),
                    })
                })
                .collect();
            let v = json!({
                "model": overall.model,
                "baseline": overall.baseline_version,
                "canary": overall.canary_version,
                "decision": overall.decision,
                "score": overall.score,
                "start_ms": evidence.get("start_ms"),
                "end_ms": overall.window_end_ms,
                "reason": evidence.get("reason"),
                "samples_needed": evidence.get("samples_needed"),
                "n_baseline": overall.n_baseline,
                "n_canary": overall.n_canary,
                "judged_at_ms": overall.written_at_ms,
                "metrics": metrics,
            });
            Some((overall.model.clone(), overall.window_end_ms, v))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    out.into_iter().map(|(_, _, v)| v).collect()
}

/// Whether `presented` equals the token, in time independent of where they differ.
fn token_matches(presented: &str, token: &str) -> bool {
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// `None` when allowed, else the refusal.
fn refuse(api: &Api, headers: &HeaderMap, alt: Option<&str>) -> Option<Response> {
    let token = api.auth_token.as_deref()?;
    let ok = bearer(headers).or(alt).is_some_and(|p| token_matches(p, token));
    (!ok).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "a valid bearer token is required"})),
        )
            .into_response()
    })
}

fn unavailable(e: &modelwatch_clickhouse::Error) -> Response {
    tracing::warn!(error = %e, "reading canary verdicts failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": format!("reading canary verdicts from ClickHouse failed: {e}")})),
    )
        .into_response()
}

/// The latest verdict of `model`'s most recent pair.
async fn latest_of(api: &Api, model: &str) -> Result<Option<Value>, Response> {
    let rows =
        api.history.latest_canary_verdicts(Some(model)).await.map_err(|e| unavailable(&e))?;
    Ok(verdicts_json(rows).into_iter().next())
}

/// `GET /api/v1/canaries`.
pub async fn list(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&api, &headers, None) {
        return r;
    }
    match api.history.latest_canary_verdicts(None).await {
        Ok(rows) => Json(Value::Array(verdicts_json(rows))).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// `GET /api/v1/canaries/{model}`.
pub async fn one(
    State(api): State<Api>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&api, &headers, None) {
        return r;
    }
    match latest_of(&api, &model).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no canary verdict for model {model:?} yet")})),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// Flagger's webhook payload (the fields used).
#[derive(Debug, Deserialize)]
pub struct FlaggerHook {
    /// The Canary's name.
    #[serde(default)]
    pub name: String,
    /// The Canary's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The webhook's `metadata`: `model` (else the name is the model) and `token`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Answers a Flagger hook: 200 when the model's decision is `wanted`, else 412.
async fn flagger(api: Api, headers: HeaderMap, body: &[u8], wanted: &str) -> Response {
    let hook: FlaggerHook = match serde_json::from_slice(body) {
        Ok(h) => h,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("not a Flagger webhook payload: {e}")})),
            )
                .into_response();
        }
    };
    if let Some(r) = refuse(&api, &headers, hook.metadata.get("token").map(String::as_str)) {
        return r;
    }
    let model = hook.metadata.get("model").cloned().unwrap_or_else(|| hook.name.clone());
    let verdict = match latest_of(&api, &model).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let decision = verdict.as_ref().and_then(|v| v["decision"].as_str()).unwrap_or("none");
    let status = if decision == wanted { StatusCode::OK } else { StatusCode::PRECONDITION_FAILED };
    tracing::info!(
        model,
        canary = hook.name,
        namespace = hook.namespace,
        decision,
        wanted,
        status = status.as_u16(),
        "flagger webhook"
    );
    (status, Json(json!({"model": model, "decision": decision, "verdict": verdict})))
        .into_response()
}

/// `POST /api/v1/flagger/confirm-promotion`: 200 only when the decision is `promote`.
pub async fn confirm_promotion(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    flagger(api, headers, &body, "promote").await
}

/// `POST /api/v1/flagger/rollback`: 200 only when the decision is `rollback`.
pub async fn rollback(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    flagger(api, headers, &body, "rollback").await
}

/// `POST /api/v1/silences` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// An existing silence's id to edit it; none: a new silence.
    #[serde(default)]
    pub id: Option<String>,
    /// Label matchers, all of which must hold.
    pub matchers: Vec<modelwatch_alert::Matcher>,
    /// Start, RFC 3339; none: now.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// End, RFC 3339 (or give `duration`).
    #[serde(default)]
    pub ends_at: Option<String>,
    /// Length from the start, e.g. `"2h"` (or give `ends_at`).
    #[serde(default)]
    pub duration: Option<String>,
    /// Who sets it.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

fn rfc3339_ms(key: &str, s: &str) -> Result<i64, String> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| format!("`{key}`: {s:?} is not an RFC 3339 time"))
}

fn silence_json(s: &modelwatch_alert::Silence, now_ms: i64) -> Value {
    let time = |ms: i64| {
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
        )
        .to_string()
    };
    let row = s.to_row(0);
    json!({
        "id": s.id(),
        "matchers": serde_json::from_str::<Value>(&row.matchers).unwrap_or(Value::Null),
        "starts_at": time(s.starts_at_ms()),
        "ends_at": time(s.ends_at_ms()),
        "created_by": row.created_by,
        "comment": row.comment,
        "status": if s.is_active(now_ms) { "active" } else if now_ms < s.starts_at_ms() { "pending" } else { "expired" },
    })
}

/// A new silence id: the creation time and a hash of the silence, in hex.
fn silence_id(now_ms: i64, body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    now_ms.hash(&mut h);
    format!("{now_ms:x}-{:016x}", h.finish())
}

/// `POST /api/v1/silences`.
pub async fn create_silence(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = refuse(&api, &headers, None) {
        return r;
    }
    let new: NewSilence = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return bad_request(format!("not a silence: {e}")),
    };
    let now = modelwatch_clickhouse::now_ms() as i64;
    let starts = match new.starts_at.as_deref().map(|s| rfc3339_ms("starts_at", s)).transpose() {
        Ok(s) => s.unwrap_or(now),
        Err(e) => return bad_request(e),
    };
    let ends = match (new.ends_at.as_deref(), new.duration.as_deref()) {
        (Some(e), None) => match rfc3339_ms("ends_at", e) {
            Ok(e) => e,
            Err(e) => return bad_request(e),
        },
        (None, Some(d)) => match humantime::parse_duration(d) {
            Ok(d) => starts.saturating_add(d.as_millis() as i64),
            Err(e) => return bad_request(format!("`duration`: {e}")),
        },
        _ => return bad_request("give exactly one of `ends_at` and `duration`".to_owned()),
    };
    if ends <= now {
        return bad_request("the silence would already be over".to_owned());
    }
    let id = new.id.clone().unwrap_or_else(|| silence_id(now, &body));
    let silence = match modelwatch_alert::Silence::new(
        id,
        new.matchers,
        starts,
        ends,
        new.created_by.unwrap_or_else(|| "api".to_owned()),
        new.comment,
    ) {
        Ok(s) => s,
        Err(e) => return bad_request(e.to_string()),
    };
    if let Err(e) = api.history.write_silences(&[silence.to_row(now as u64)]).await {
        tracing::warn!(error = %e, "writing a silence failed");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": format!("writing the silence to ClickHouse failed: {e}")})),
        )
            .into_response();
    }
    tracing::info!(id = silence.id(), "silence set through the API");
    (StatusCode::CREATED, Json(silence_json(&silence, now))).into_response()
}

/// The silences that are active now or start later.
async fn current_silences(api: &Api, now: i64) -> Result<Vec<modelwatch_alert::Silence>, Response> {
    let rows = api.history.silences().await.map_err(|e| {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": format!("reading silences: {e}")})))
            .into_response()
    })?;
    Ok(rows
        .iter()
        .filter(|r| r.ends_at_ms > now)
        .filter_map(|r| modelwatch_alert::Silence::from_row(r).ok())
        .collect())
}

/// `GET /api/v1/silences`.
pub async fn list_silences(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&api, &headers, None) {
        return r;
    }
    let now = modelwatch_clickhouse::now_ms() as i64;
    match current_silences(&api, now).await {
        Ok(s) => {
            Json(Value::Array(s.iter().map(|s| silence_json(s, now)).collect())).into_response()
        }
        Err(r) => r,
    }
}

/// `DELETE /api/v1/silences/{id}`: ends the silence now.
pub async fn expire_silence(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&api, &headers, None) {
        return r;
    }
    let now = modelwatch_clickhouse::now_ms() as i64;
    let current = match current_silences(&api, now).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(s) = current.into_iter().find(|s| s.id() == id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no current silence {id:?}")})),
        )
            .into_response();
    };
    // Ends now (a pending one is moved to have started just before).
    let mut row = s.to_row(now as u64);
    row.starts_at_ms = row.starts_at_ms.min(now - 1);
    row.ends_at_ms = now;
    if let Err(e) = api.history.write_silences(&[row]).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": format!("writing the silence to ClickHouse failed: {e}")})),
        )
            .into_response();
    }
    tracing::info!(id, "silence expired through the API");
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn row(
        model: &str,
        canary: &str,
        end: i64,
        metric: &str,
        decision: &str,
    ) -> CanaryVerdictRow {
        CanaryVerdictRow {
            model: model.into(),
            baseline_version: "v1".into(),
            canary_version: canary.into(),
            scope: "cumulative".into(),
            window_end_ms: end,
            metric: metric.into(),
            classification: "pass".into(),
            statistic: Some(1.5),
            p_value: Some(0.2),
            effect: None,
            n_baseline: 900,
            n_canary: 100,
            threshold: None,
            score: Some(100.0),
            decision: decision.into(),
            evidence: if metric == OVERALL {
                r#"{"reason":"healthy","samples_needed":null,"start_ms":0}"#.into()
            } else {
                "{}".into()
            },
            written_at_ms: 7,
        }
    }

    #[test]
    fn verdicts_group_per_pair_newest_pair_first() {
        let rows = vec![
            row("a", "v2", 1000, "latency", "continue"),
            row("a", "v2", 1000, OVERALL, "continue"),
            row("a", "v3", 5000, "latency", "promote"),
            row("a", "v3", 5000, OVERALL, "promote"),
            row("b", "v2", 3000, "latency", "rollback"),
            row("b", "v2", 3000, OVERALL, "rollback"),
            // A pair without its overall row is incomplete and skipped.
            row("c", "v2", 3000, "latency", "rollback"),
        ];
        let v = verdicts_json(rows);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0]["canary"], "v3");
        assert_eq!(v[0]["decision"], "promote");
        assert_eq!(v[0]["reason"], "healthy");
        assert_eq!(v[0]["metrics"].as_array().unwrap().len(), 1);
        assert_eq!(v[0]["metrics"][0]["metric"], "latency");
        assert_eq!(v[1]["canary"], "v2");
        assert_eq!(v[2]["model"], "b");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("secret-token-123", "secret-token-123"));
        assert!(!token_matches("secret-token-12", "secret-token-123"));
        assert!(!token_matches("secret-token-124", "secret-token-123"));
        assert!(!token_matches("", "secret-token-123"));
    }
}
