//! Who may use the dashboard. On 127.0.0.1 (the default) anyone on this machine may, as with
//! the CLI. On any other address a token is required: from `?token=` once (then a cookie,
//! HttpOnly and SameSite=Strict, and a redirect that drops it from the address bar), the
//! cookie, or `Authorization: Bearer`. The one write, cancel, also needs the CSRF token that
//! only the dashboard's own pages carry.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::AppState;

const COOKIE: &str = "ferry_ui_token";

/// The tokens of one server.
pub struct Access {
    /// Required of every request when set.
    token: Option<String>,
    /// Carried by the cancel forms of the pages this server renders.
    csrf: String,
}

impl Access {
    /// `token`: required of every request (a non-loopback address needs one).
    pub fn new(token: Option<String>) -> Self {
        Self {
            token,
            csrf: random_token(),
        }
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub(crate) fn csrf_matches(&self, given: &str) -> bool {
        constant_time_eq(given.as_bytes(), self.csrf.as_bytes())
    }

    fn admits(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(given.as_bytes(), t.as_bytes()))
    }
}

/// 128 random bits, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `127.0.0.1:8765`, `localhost`, `[::1]:8765`: names of this machine only.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

pub(crate) async fn require(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let access = &state.access;
    if access.token.is_none() {
        // Without a token the dashboard is for this machine only; a page elsewhere that
        // rebinds its own name to 127.0.0.1 (DNS rebinding) still sends its own Host.
        if let Some(host) = request.headers().get(header::HOST)
            && !is_loopback_host(host.to_str().unwrap_or_default())
        {
            return (
                StatusCode::FORBIDDEN,
                Html(
                    crate::pages::error(
                        StatusCode::FORBIDDEN,
                        "this dashboard answers only to 127.0.0.1 and localhost; to reach it from elsewhere, start it with --host (and a token)",
                    )
                    .into_string(),
                ),
            )
                .into_response();
        }
        return next.run(request).await;
    }
    let headers = request.headers();
    if cookie_token(headers).is_some_and(|t| access.admits(t))
        || bearer_token(headers).is_some_and(|t| access.admits(t))
    {
        return next.run(request).await;
    }
    let uri = request.uri();
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(str::to_string)
    });
    if let Some(token) = from_query.filter(|t| access.admits(t)) {
        let rest: Vec<&str> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.starts_with("token="))
            .collect();
        let target = if rest.is_empty() {
            uri.path().to_string()
        } else {
            format!("{}?{}", uri.path(), rest.join("&"))
        };
        let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
        return ([(header::SET_COOKIE, cookie)], Redirect::to(&target)).into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        Html(
            crate::pages::error(
                StatusCode::UNAUTHORIZED,
                "this dashboard needs its token: open the address `ferry ui` printed (it ends in ?token=...)",
            )
            .into_string(),
        ),
    )
        .into_response()
}
