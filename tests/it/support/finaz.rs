//! A real HTTP server playing Finaz's webhook endpoint: records every request exactly as it
//! arrived (raw path and query), and answers with scripted statuses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use warp::Filter;
use warp::http::StatusCode;

/// One request Finaz received and what it answered.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Path and query, as sent (still percent-encoded).
    pub target: String,
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    hits: Mutex<Vec<Hit>>,
    /// Answers for the next requests (status, Retry-After), then `default`.
    script: Mutex<VecDeque<(u16, Option<String>)>>,
    default: Mutex<u16>,
    /// Time taken before answering.
    delay: Mutex<Duration>,
    arrived: Notify,
}

pub struct FakeFinaz {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeFinaz {
    pub async fn start() -> FakeFinaz {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> FakeFinaz {
        let state = Arc::new(State::default());
        *state.default.lock().unwrap() = 200;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = state.clone();
        let route = warp::path::full()
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .then(move |path: warp::path::FullPath, query: String| {
                let s = s.clone();
                async move {
                    let at = Instant::now();
                    let (status, retry_after) = s
                        .script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((*s.default.lock().unwrap(), None));
                    let delay = *s.delay.lock().unwrap();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let target = if query.is_empty() {
                        path.as_str().to_string()
                    } else {
                        format!("{}?{query}", path.as_str())
                    };
                    s.hits.lock().unwrap().push(Hit { target, status, at });
                    s.arrived.notify_waiters();
                    let mut r = warp::reply::Response::new("ok".into());
                    *r.status_mut() = StatusCode::from_u16(status).unwrap();
                    if let Some(ra) = retry_after {
                        r.headers_mut().insert("retry-after", ra.parse().unwrap());
                    }
                    r
                }
            });
        let task = tokio::spawn(warp::serve(route).incoming(listener).run());
        FakeFinaz { addr, state, task }
    }

    /// The webhook template pointing here.
    pub fn template(&self) -> String {
        format!(
            "http://{}/telephony-proxy/atendimentodiscador?pid={{pid}}&num={{num}}&cid={{cid}}&ramal={{ramal}}&empresald={{empresa_id}}",
            self.addr
        )
    }

    /// The next answers, in order.
    pub fn script(&self, answers: &[(u16, Option<&str>)]) {
        self.state
            .script
            .lock()
            .unwrap()
            .extend(answers.iter().map(|(s, r)| (*s, r.map(str::to_string))));
    }

    pub fn set_default(&self, status: u16) {
        *self.state.default.lock().unwrap() = status;
    }

    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    /// Requests answered 2xx.
    pub fn accepted(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.status))
            .collect()
    }

    /// Waits until `pred` holds for the hits so far.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let hits = self.hits();
            if pred(&hits) {
                return hits;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "Finaz never saw what was expected: {hits:#?}"
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }
}

impl Drop for FakeFinaz {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of `name` in a request's query, still encoded.
pub fn param<'a>(hit: &'a Hit, name: &str) -> Option<&'a str> {
    hit.target
        .split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}
