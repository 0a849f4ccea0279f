//! Rate-limit holds: after GitHub refuses a token for its rate limit, nothing more is
//! sent with that token for that resource (`core`, `search`, `graphql`, …) until the
//! limit resets; GitHub's refusal is repeated instead. Many runners retrying a limited
//! token would only extend the ban.
//!
//! Holds are kept per token fingerprint and per resource: a response changes only the
//! holds of the token that received it, so a client's exhausted token never holds the
//! node's token, and a client's good answer never clears the node's hold. Everything
//! here is a plain function of the response and `now`.

use std::collections::HashMap;
use std::time::Duration;

use super::{is_secondary_limit, UpstreamResponse};
use crate::limits::MAX_HOLDS;

/// A hold never lasts longer than this, whatever the headers say.
pub const MAX_HOLD: Duration = Duration::from_secs(3600);
/// A secondary limit without `retry-after` holds at least this long…
pub const SECONDARY_FIRST: Duration = Duration::from_secs(60);
/// …doubling on repeats up to this.
pub const SECONDARY_CEILING: Duration = Duration::from_secs(900);
/// A secondary limit within this long after the previous one counts as a repeat.
const REPEAT_WINDOW_MS: u64 = 3600 * 1000;

/// Which limit a hold is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HoldKey {
    /// Fingerprint of the token (None: anonymous).
    pub token: Option<[u8; 8]>,
    /// GitHub's rate-limit resource.
    pub resource: String,
}

/// The resource a request path counts against, before GitHub says so.
pub fn resource_of_path(path: &str) -> &'static str {
    if path == "/graphql" {
        "graphql"
    } else if path.starts_with("/search/code") {
        "code_search"
    } else if path.starts_with("/search/") {
        "search"
    } else {
        "core"
    }
}

/// How long to hold after `resp`, and whether it is a secondary limit; `None` when it
/// is no rate-limit refusal. `streak` counts the secondary limits just before this one.
pub fn hold_for(resp: &UpstreamResponse, now_secs: u64, streak: u32) -> Option<(Duration, bool)> {
    let retry_after = resp
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if is_secondary_limit(resp) {
        let doubled = SECONDARY_FIRST
            .saturating_mul(1u32 << streak.min(16))
            .min(SECONDARY_CEILING);
        return Some((retry_after.unwrap_or(doubled).min(MAX_HOLD), true));
    }
    let primary = resp.status == 429
        || (resp.status == 403
            && (resp.header("x-ratelimit-remaining") == Some("0") || retry_after.is_some()));
    if !primary {
        return None;
    }
    let wait = retry_after.unwrap_or_else(|| {
        match resp
            .header("x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(reset) => Duration::from_secs(reset.saturating_sub(now_secs).max(1)),
            None => SECONDARY_FIRST,
        }
    });
    Some((wait.min(MAX_HOLD), false))
}

#[derive(Debug, Clone)]
struct Hold {
    until_ms: u64,
    refusal: UpstreamResponse,
    secondary: bool,
    streak: u32,
}

/// A hold that just started (for the one warning it gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// How long.
    pub wait: Duration,
    /// A secondary limit.
    pub secondary: bool,
}

/// Every token's holds.
#[derive(Debug, Default)]
pub struct Holds {
    map: HashMap<HoldKey, Hold>,
}

impl Holds {
    /// GitHub's refusal to repeat when `key` is held at `now_ms`.
    pub fn held(&self, key: &HoldKey, now_ms: u64) -> Option<UpstreamResponse> {
        self.map
            .get(key)
            .filter(|h| now_ms < h.until_ms)
            .map(|h| h.refusal.clone())
    }

    /// Records `resp`, received with `token` for a request of `resource`: starts a hold
    /// on a rate-limit refusal, ends this token's hold on a success.
    pub fn observe(
        &mut self,
        token: Option<[u8; 8]>,
        resource: &str,
        resp: &UpstreamResponse,
        now_ms: u64,
    ) -> Option<Started> {
        let key = HoldKey {
            token,
            resource: resp
                .header("x-ratelimit-resource")
                .filter(|r| r.len() <= 32)
                .unwrap_or(resource)
                .to_string(),
        };
        let streak = self
            .map
            .get(&key)
            .filter(|h| h.secondary && now_ms < h.until_ms.saturating_add(REPEAT_WINDOW_MS))
            .map_or(0, |h| h.streak + 1);
        match hold_for(resp, now_ms / 1000, streak) {
            Some((wait, secondary)) => {
                self.make_room(now_ms);
                let hold = Hold {
                    until_ms: now_ms.saturating_add(wait.as_millis() as u64),
                    refusal: resp.clone(),
                    secondary,
                    streak: if secondary { streak } else { 0 },
                };
                self.map.insert(key, hold);
                Some(Started { wait, secondary })
            }
            None => {
                if resp.status < 400 {
                    // A secondary streak is remembered past the hold, not past a success.
                    self.map.remove(&key);
                }
                None
            }
        }
    }

    fn make_room(&mut self, now_ms: u64) {
        if self.map.len() < MAX_HOLDS {
            return;
        }
        self.map
            .retain(|_, h| now_ms < h.until_ms.saturating_add(REPEAT_WINDOW_MS));
        if self.map.len() >= MAX_HOLDS {
            if let Some(k) = self
                .map
                .iter()
                .min_by_key(|(_, h)| h.until_ms)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;

    fn resp(status: u16, h: &[(&str, &str)], body: &str) -> UpstreamResponse {
        UpstreamResponse {
            status,
            headers: h
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: Bytes::from(body.to_string()),
        }
    }

    const SECONDARY: &str = r#"{"message":"You have exceeded a secondary rate limit."}"#;

    #[test]
    fn primary_and_secondary_limits() {
        assert_eq!(hold_for(&resp(200, &[], ""), 0, 0), None);
        assert_eq!(hold_for(&resp(403, &[], "Forbidden"), 0, 0), None);
        assert_eq!(
            hold_for(&resp(429, &[("retry-after", "7")], ""), 0, 0),
            Some((Duration::from_secs(7), false))
        );
        let exhausted = resp(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1100"),
            ],
            "",
        );
        assert_eq!(
            hold_for(&exhausted, 1000, 0),
            Some((Duration::from_secs(100), false))
        );
        let far = resp(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "99999999"),
            ],
            "",
        );
        assert_eq!(hold_for(&far, 0, 0), Some((MAX_HOLD, false)), "capped");
        let secondary = resp(403, &[("x-ratelimit-remaining", "4000")], SECONDARY);
        assert_eq!(hold_for(&secondary, 0, 0), Some((SECONDARY_FIRST, true)));
        assert_eq!(
            hold_for(&secondary, 0, 1),
            Some((SECONDARY_FIRST * 2, true)),
            "doubling on repeats"
        );
        assert_eq!(hold_for(&secondary, 0, 10), Some((SECONDARY_CEILING, true)));
        let told = resp(429, &[("retry-after", "30")], SECONDARY);
        assert_eq!(hold_for(&told, 0, 3), Some((Duration::from_secs(30), true)));
    }

    #[test]
    fn holds_are_per_token_and_resource() {
        let mut holds = Holds::default();
        let node = Some([1; 8]);
        let client = Some([2; 8]);
        let key = |token, resource: &str| HoldKey {
            token,
            resource: resource.into(),
        };
        let exhausted = resp(
            403,
            &[("x-ratelimit-remaining", "0"), ("retry-after", "60")],
            "",
        );
        let started = holds.observe(client, "core", &exhausted, 1_000).unwrap();
        assert_eq!(started.wait, Duration::from_secs(60));
        assert!(holds.held(&key(client, "core"), 2_000).is_some());
        assert!(
            holds.held(&key(node, "core"), 2_000).is_none(),
            "not the node's"
        );
        assert!(
            holds.held(&key(client, "search"), 2_000).is_none(),
            "not search"
        );
        assert!(holds.held(&key(client, "core"), 61_000).is_none(), "over");

        holds.observe(node, "core", &exhausted, 1_000);
        assert!(holds
            .observe(client, "core", &resp(200, &[], ""), 1_500)
            .is_none());
        assert!(
            holds.held(&key(client, "core"), 2_000).is_none(),
            "own success clears"
        );
        assert!(
            holds.held(&key(node, "core"), 2_000).is_some(),
            "a client's success never clears the node's hold"
        );
        let search = resp(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("retry-after", "60"),
                ("x-ratelimit-resource", "search"),
            ],
            "",
        );
        holds.observe(client, "core", &search, 1_000);
        assert!(
            holds.held(&key(client, "search"), 2_000).is_some(),
            "GitHub's resource wins"
        );
    }

    #[test]
    fn repeated_secondary_limits_double() {
        let mut holds = Holds::default();
        let t = Some([3; 8]);
        let secondary = resp(403, &[], SECONDARY);
        let a = holds.observe(t, "core", &secondary, 0).unwrap();
        let b = holds.observe(t, "core", &secondary, 61_000).unwrap();
        let c = holds.observe(t, "core", &secondary, 200_000).unwrap();
        assert_eq!(
            (a.wait, b.wait, c.wait),
            (SECONDARY_FIRST, SECONDARY_FIRST * 2, SECONDARY_FIRST * 4)
        );
        assert!(a.secondary && b.secondary && c.secondary);
    }

    #[test]
    fn resources_by_path() {
        assert_eq!(resource_of_path("/repos/o/r"), "core");
        assert_eq!(resource_of_path("/search/issues"), "search");
        assert_eq!(resource_of_path("/search/code"), "code_search");
        assert_eq!(resource_of_path("/graphql"), "graphql");
    }
}
