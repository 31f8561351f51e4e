//! `hr-search serve`: an HTTP server (axum on tokio) over one index.
//!
//! - `GET /`: the search page (a search box, ranked results with scores, captions and metadata,
//!   an audio player per result);
//! - `GET /api/search?q=TEXT&k=K`: the ranked items as JSON;
//! - `GET /api/item/{id}`: one item as JSON;
//! - `GET /api/audio/{id}`: the clip's audio as stored (from the dataset's Parquet shard or the
//!   source file), with its content type;
//! - `GET /api/info`: what the index holds.
//!
//! The text encoder runs per request on a blocking thread; at most `workers` run at once and at
//! most `queue` requests wait or run (more get 503). A malformed, too long or unknown request
//! gets a 4xx with a JSON `{"error": ...}`, never a crash.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use hr_data::SplitIndex;

use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::search::{search_text, Hit};
use crate::source::{audio_bytes, SourceSpec};

/// The search page.
pub const PAGE: &str = include_str!("page.html");

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests encoding a query at once.
    pub workers: usize,
    /// Requests waiting or encoding at most; more are answered 503.
    pub queue: usize,
    /// Longest query in characters.
    pub max_query_chars: usize,
    /// Largest `k`.
    pub max_k: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: 2,
            queue: 64,
            max_query_chars: 1000,
            max_k: 1000,
        }
    }
}

/// Everything a request needs.
pub struct App {
    index: Index,
    encoder: Encoder,
    split: Option<SplitIndex>,
    limits: Limits,
    slots: Semaphore,
    admitted: AtomicUsize,
}

impl App {
    /// The server state of `index` with the model of `encoder` (opens the dataset split of a
    /// dataset index, to serve its audio).
    pub fn new(index: Index, encoder: Encoder, limits: Limits) -> Result<Arc<App>> {
        let split = match &index.manifest.plan.source {
            SourceSpec::Dataset { root, split } => {
                let (store, manifest) = hr_data::open_dataset(root)?;
                Some(SplitIndex::open(&store, &manifest, split, false)?)
            }
            SourceSpec::Folder { .. } => None,
        };
        Ok(Arc::new(App {
            index,
            encoder,
            split,
            slots: Semaphore::new(limits.workers.max(1)),
            admitted: AtomicUsize::new(0),
            limits,
        }))
    }
}

/// The routes of the server.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/info", get(info))
        .route("/api/search", get(search))
        .route("/api/item/{*id}", get(item))
        .route("/api/audio/{*id}", get(audio))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(app)
}

/// Serves `app` on `listener` until the process ends.
pub async fn serve(app: Arc<App>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(app)).await
}

/// Serves `app` on `addr` from a background thread with its own runtime (tests, benches, an
/// embedding program); returns the bound address (`127.0.0.1:0` picks a free port).
pub fn spawn(app: Arc<App>, addr: &str) -> std::io::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = serve(app, l).await {
                        tracing::error!("server on {bound} stopped: {e}");
                    }
                }
                Err(e) => tracing::error!("server on {bound}: {e}"),
            }
        })
    });
    Ok(bound)
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": msg.to_string() }))).into_response()
}

/// The status of a failed request: the client's fault or ours.
fn failure(e: Error) -> Response {
    match e {
        Error::UnknownId(_) => error(StatusCode::NOT_FOUND, e),
        Error::BadRequest(_) => error(StatusCode::BAD_REQUEST, e),
        e => {
            tracing::error!("request failed: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

/// An id as one URL path segment.
pub fn url_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn item_json(app: &App, i: usize) -> Value {
    let it = &app.index.items[i];
    json!({
        "id": it.id, "source": it.source, "row": it.row, "duration_s": it.duration_s,
        "metadata": it.metadata, "metadata_fused": app.index.present[i], "captions": it.captions,
        "audio": format!("/api/audio/{}", url_segment(&it.id)),
    })
}

async fn info(State(app): State<Arc<App>>) -> Response {
    let p = &app.index.manifest.plan;
    Json(json!({
        "items": app.index.len(), "fusion": p.fusion, "metadata": p.metadata, "dim": p.dim,
        "model_sha256": p.model_sha256, "checkpoint": p.checkpoint, "source": p.source,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: Option<String>,
    k: Option<usize>,
}

async fn search(
    State(app): State<Arc<App>>,
    params: std::result::Result<Query<SearchParams>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad parameters: {}", e.body_text()),
            )
        }
    };
    let q = p.q.unwrap_or_default();
    let q = q.trim().to_string();
    let k = p.k.unwrap_or(10);
    let lim = app.limits;
    if q.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the query `q` is empty");
    }
    if q.chars().count() > lim.max_query_chars {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the query is longer than {} characters",
                lim.max_query_chars
            ),
        );
    }
    if k == 0 || k > lim.max_k {
        return error(
            StatusCode::BAD_REQUEST,
            format!("k must be between 1 and {}", lim.max_k),
        );
    }
    let Some(_admitted) = Admitted::enter(&app) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy: retry shortly",
        );
    };
    let res = ranked(&app, q.clone(), k).await;
    match res {
        Ok((hits, ms)) => {
            let results: Vec<Value> = hits
                .iter()
                .enumerate()
                .map(|(r, h)| {
                    let mut v = item_json(&app, h.item);
                    v["rank"] = json!(r + 1);
                    v["score"] = json!(h.score);
                    v
                })
                .collect();
            Json(json!({ "query": q, "k": k, "took_ms": ms, "results": results })).into_response()
        }
        Err(e) => failure(e),
    }
}

/// A request counted against the queue bound; leaves the count when dropped (also when the
/// client goes away mid-request and the handler is cancelled).
struct Admitted<'a>(&'a AtomicUsize);

impl<'a> Admitted<'a> {
    /// Enters the queue, or `None` when it is full.
    fn enter(app: &'a App) -> Option<Admitted<'a>> {
        if app.admitted.fetch_add(1, Ordering::SeqCst) >= app.limits.queue {
            app.admitted.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Admitted(&app.admitted))
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Encodes the query and ranks the index on a blocking thread, holding a model slot.
async fn ranked(app: &Arc<App>, q: String, k: usize) -> Result<(Vec<Hit>, f64)> {
    let _slot = app
        .slots
        .acquire()
        .await
        .map_err(|e| Error::BadRequest(format!("server stopping: {e}")))?;
    let app = app.clone();
    let t0 = std::time::Instant::now();
    let hits = tokio::task::spawn_blocking(move || search_text(&app.index, &app.encoder, &[q], k))
        .await
        .map_err(|e| Error::BadRequest(format!("search task: {e}")))??;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok((hits.into_iter().next().unwrap_or_default(), ms))
}

async fn item(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.index.position(&id) {
        Ok(i) => Json(item_json(&app, i)).into_response(),
        Err(e) => failure(e),
    }
}

async fn audio(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let i = match app.index.position(&id) {
        Ok(i) => i,
        Err(e) => return failure(e),
    };
    let app2 = app.clone();
    let read =
        tokio::task::spawn_blocking(move || audio_bytes(app2.split.as_ref(), &app2.index.items[i]))
            .await;
    match read {
        Ok(Ok((bytes, name))) => {
            let ct = content_type(&bytes, &name);
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Ok(Err(e)) => failure(e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("audio task: {e}"),
        ),
    }
}

/// The media type of encoded audio, from its first bytes (else its file name).
pub fn content_type(bytes: &[u8], name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match bytes {
        [b'R', b'I', b'F', b'F', ..] => "audio/wav",
        [b'f', b'L', b'a', b'C', ..] => "audio/flac",
        [b'O', b'g', b'g', b'S', ..] => "audio/ogg",
        [b'I', b'D', b'3', ..] => "audio/mpeg",
        [0xFF, b, ..] if b & 0xE0 == 0xE0 => "audio/mpeg",
        _ => match ext.as_str() {
            "wav" => "audio/wav",
            "flac" => "audio/flac",
            "ogg" | "oga" => "audio/ogg",
            "mp3" => "audio/mpeg",
            _ => "application/octet-stream",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_bytes_then_the_name() {
        assert_eq!(content_type(b"RIFF....WAVE", "x.bin"), "audio/wav");
        assert_eq!(content_type(b"fLaC....", "x"), "audio/flac");
        assert_eq!(content_type(b"OggS....", "x"), "audio/ogg");
        assert_eq!(content_type(b"ID3.....", "x"), "audio/mpeg");
        assert_eq!(content_type(&[0xFF, 0xFB, 0, 0], "x"), "audio/mpeg");
        assert_eq!(content_type(b"????", "a.FLAC"), "audio/flac");
        assert_eq!(content_type(b"????", "a"), "application/octet-stream");
    }

    #[test]
    fn ids_become_one_path_segment() {
        assert_eq!(url_segment("more/a b.wav"), "more%2Fa%20b.wav");
        assert_eq!(url_segment("Y-x_1.~"), "Y-x_1.~");
        assert_eq!(url_segment("é"), "%C3%A9");
    }
}
