//! The operators' page (contract §11): `GET /_ghmesh/` serves one self-contained HTML
//! page that draws itself from `/_ghmesh/{stats,peers,history}`; `/_ghmesh/history`
//! serves the last hour of samples.
//!
//! The page is three files embedded in the binary (markup, style, script) put together
//! once. Its `Content-Security-Policy` allows exactly that style and that script, by
//! hash, and connections to this API only: even if a peer id or address shown on the
//! page could carry markup (the script only ever sets text), nothing could run or load.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::ApiState;

const MARKUP: &str = include_str!("dashboard/page.html");
const STYLE: &str = include_str!("dashboard/page.css");
const SCRIPT: &str = include_str!("dashboard/page.js");

/// The page and its policy, put together on first use.
struct Page {
    html: String,
    policy: String,
}

fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| {
        let hash = |s: &str| {
            let digest = Sha256::digest(s.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        Page {
            html: MARKUP
                .replacen("/*STYLE*/", STYLE, 1)
                .replacen("/*SCRIPT*/", SCRIPT, 1),
            policy: format!(
                "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
                 img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                hash(SCRIPT),
                hash(STYLE)
            ),
        }
    })
}

/// `GET /_ghmesh/`: the status page.
pub(super) async fn status_page() -> Response {
    let page = page();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, page.policy.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page.html.clone(),
    )
        .into_response()
}

/// `GET /_ghmesh/history`: the last hour of the node's main figures.
pub(super) async fn history(State(s): State<ApiState>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(s.node.history().await),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_its_policy_allows_exactly_its_own_code() {
        let p = page();
        assert!(!p.html.contains("/*STYLE*/") && !p.html.contains("/*SCRIPT*/"));
        assert!(p.html.contains(SCRIPT) && p.html.contains(STYLE));
        // Nothing is loaded from elsewhere: no external script, style, font or image.
        // The empty icon keeps browsers from asking for /favicon.ico, which this API
        // would forward to GitHub as a read.
        // SVG's namespace is a name, not something loaded.
        let html = p
            .html
            .replacen(r#"<link rel="icon" href="data:,">"#, "", 1)
            .replace("\"http://www.w3.org/2000/svg\"", "");
        for outside in ["src=", "href=", "@import", "url(", "http://", "https://"] {
            assert!(
                !html.contains(outside),
                "the page refers outside: {outside}"
            );
        }
        assert_eq!(p.html.matches("<script").count(), 1);
        assert_eq!(p.html.matches("<style").count(), 1);
        let digest = Sha256::digest(SCRIPT.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        assert!(p.policy.contains(&format!("script-src 'sha256-{b64}';")));
        assert!(p.policy.starts_with("default-src 'none';"));
        assert!(!p.policy.contains("unsafe"), "{}", p.policy);
        assert!(p.html.len() < 16 * 1024, "a few KiB: {}", p.html.len());
    }
}
