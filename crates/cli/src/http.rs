//! The HTTP endpoints: Prometheus `/metrics`, `/healthz`, `/readyz` and the canary gate of
//! [`crate::api`] under `/api/v1`.
//!
//! - `/metrics`: every metric of the process in the Prometheus text format (OpenMetrics).
//! - `/healthz`: 200 while the process serves HTTP (liveness).
//! - `/readyz`: 200 when the engine consumes and its last flush reached ClickHouse; 503 with
//!   the reason otherwise (state being restored, ClickHouse failing, shutting down).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use modelwatch_engine::EngineMetrics;
use prometheus_client::registry::Registry;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Every registered metric.
    pub registry: Arc<Registry>,
    /// The engine's health flags.
    pub engine: Arc<EngineMetrics>,
    /// The canary routes, when ClickHouse is configured.
    pub canaries: Option<crate::api::Api>,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let api = state.canaries.clone();
    let base = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    match api {
        Some(api) => base.merge(
            Router::new()
                .route("/api/v1/canaries", get(crate::api::list))
                .route("/api/v1/canaries/{model}", get(crate::api::one))
                .route("/api/v1/flagger/confirm-promotion", post(crate::api::confirm_promotion))
                .route("/api/v1/flagger/rollback", post(crate::api::rollback))
                .route(
                    "/api/v1/silences",
                    post(crate::api::create_silence).get(crate::api::list_silences),
                )
                .route("/api/v1/silences/{id}", axum::routing::delete(crate::api::expire_silence))
                .with_state(api),
        ),
        None => base,
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if !s.engine.running.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: engine not consuming\n")
            .into_response();
    }
    if !s.engine.sink_ok.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: clickhouse writes failing\n")
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "http listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
