//! [`Routes`]: the one router of an HTTP program: the inputs it mounts,
//! `GET /health` and `GET /metrics`.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

type Health = Arc<dyn Fn() -> Response + Send + Sync>;
type Export = Arc<dyn Fn() + Send + Sync>;

/// The router of an HTTP program: the inputs mounted (each an axum
/// [`Router`] of its own routes, merged), `GET /health` and `GET /metrics`
/// (Prometheus text from [`prometheus`](super::prometheus), as
/// `text/plain; version=0.0.4`). Serve it with [`serve`](super::serve),
/// which leaves `GET /health` open when a token is required.
///
/// `GET /health` answers `200 ok` unless [`Routes::health`] says otherwise;
/// [`Routes::export`] runs before every `/metrics` render, to set counters
/// and gauges from statistics kept elsewhere.
///
/// ```
/// use axum::routing::post;
/// use s3_event_inputs::http::Routes;
///
/// let input = axum::Router::new().route("/", post(|| async { "taken\n" }));
/// let app: axum::Router = Routes::new()
///     .input(input)
///     .export(|| metrics::gauge!("my_queue_depth").set(0.0))
///     .into_router();
/// ```
#[derive(Clone)]
pub struct Routes {
    inputs: Router,
    health: Health,
    exports: Vec<Export>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("exports", &self.exports.len())
            .finish_non_exhaustive()
    }
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

impl Routes {
    /// No input yet; `/health` answers `200 ok`.
    pub fn new() -> Self {
        Routes {
            inputs: Router::new(),
            health: Arc::new(|| "ok\n".into_response()),
            exports: Vec::new(),
        }
    }

    /// Mounts an input: its routes are merged in. They must not be
    /// `/health` or `/metrics` (axum panics on a route given twice).
    pub fn input(mut self, routes: Router) -> Self {
        self.inputs = self.inputs.merge(routes);
        self
    }

    /// What `GET /health` answers, computed per request.
    pub fn health(mut self, health: impl Fn() -> Response + Send + Sync + 'static) -> Self {
        self.health = Arc::new(health);
        self
    }

    /// Runs `export` before every `GET /metrics` render (in the order
    /// added).
    pub fn export(mut self, export: impl Fn() + Send + Sync + 'static) -> Self {
        self.exports.push(Arc::new(export));
        self
    }

    /// The router: the inputs, `GET /health` and `GET /metrics`. Installs
    /// the Prometheus recorder if it is not yet.
    pub fn into_router(self) -> Router {
        let Routes {
            inputs,
            health,
            exports,
        } = self;
        let handle = super::prometheus();
        let metrics = move || {
            for export in &exports {
                export();
            }
            handle.run_upkeep();
            let content_type = HeaderValue::from_static("text/plain; version=0.0.4");
            ([(header::CONTENT_TYPE, content_type)], handle.render()).into_response()
        };
        inputs
            .route("/health", get(move || std::future::ready(health())))
            .route("/metrics", get(move || std::future::ready(metrics())))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use tower::ServiceExt as _;

    use super::*;

    async fn call(app: &Router, method: &str, path: &str) -> (StatusCode, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn serves_the_inputs_health_and_metrics() {
        let plain = Routes::new()
            .input(Router::new().route("/", post(|| async { "taken\n" })))
            .into_router();
        assert_eq!(call(&plain, "POST", "/").await.2, "taken\n");
        assert_eq!(
            call(&plain, "GET", "/health").await,
            (
                StatusCode::OK,
                "text/plain; charset=utf-8".into(),
                "ok\n".into()
            )
        );
        let app = Routes::new()
            .health(|| (StatusCode::SERVICE_UNAVAILABLE, "degraded\n").into_response())
            .export(|| metrics::gauge!("s3_event_routes_test_gauge").set(7.0))
            .into_router();
        let (status, _, body) = call(&app, "GET", "/health").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "degraded\n")
        );
        let (status, ct, body) = call(&app, "GET", "/metrics").await;
        assert_eq!(
            (status, ct.as_str()),
            (StatusCode::OK, "text/plain; version=0.0.4")
        );
        assert!(body.contains("s3_event_routes_test_gauge 7"), "{body}");
        assert_eq!(call(&app, "POST", "/").await.0, StatusCode::NOT_FOUND);
    }
}
