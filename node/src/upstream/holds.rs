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
pub const REPEAT_WINDOW: Duration = Duration::from_secs(3600);
const REPEAT_WINDOW_MS: u64 = REPEAT_WINDOW.as_secs() * 1000;
/// The resource name of a hold on all of a token's requests: GitHub's secondary limits
/// are per account, whatever the resource.
pub const WHOLE_TOKEN: &str = "*";

/// Which limit a hold is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HoldKey {
    /// Fingerprint of the token (None: anonymous).
    pub token: Option<[u8; 8]>,
    /// GitHub's rate-limit resource.
    pub resource: String,
}

/// GitHub's name of the GraphQL budget.
pub const GRAPHQL_RESOURCE: &str = "graphql";

/// The resource a request path counts against, before GitHub says so.
pub fn resource_of_path(path: &str) -> &'static str {
    if path == "/graphql" {
        GRAPHQL_RESOURCE
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
///
/// `graphql`: `resp` answered a GraphQL request, where GitHub's primary limit comes as
/// a `200` with a `RATE_LIMITED` error; a REST body that says so (a file's contents)
/// is only a body.
pub fn hold_for(
    resp: &UpstreamResponse,
    now_secs: u64,
    streak: u32,
    graphql: bool,
) -> Option<(Duration, bool)> {
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
        || (graphql && crate::policy::upstream::is_graphql_rate_limited(resp))
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

/// A hold that just started (for the one warning it gets, and the ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// How long.
    pub wait: Duration,
    /// A secondary limit.
    pub secondary: bool,
    /// Secondary limits just before this one, ours or the fleet's.
    pub streak: u32,
}

/// What the fleet's ledger says of the budget an answer was spent on, when it arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetSaid {
    /// Until when a member's hold is on (unix seconds): a refusal arriving before then
    /// was sent before the hold was heard of, and escalates nothing; it starts a hold
    /// only where it ends later (a primary limit's reset past a secondary hold).
    pub held_until: Option<u64>,
    /// The streak of the fleet's latest secondary limit, if it ended less than
    /// [`REPEAT_WINDOW`] ago: a secondary limit now repeats it (GitHub backs off per
    /// account, whichever runner offends).
    pub secondary_streak: Option<u32>,
}

/// Every token's holds.
#[derive(Debug, Default)]
pub struct Holds {
    map: HashMap<HoldKey, Hold>,
}

impl Holds {
    /// GitHub's refusal to repeat when `key` is held at `now_ms`: a hold for its
    /// resource, or a secondary limit, which holds all of the token's requests.
    pub fn held(&self, key: &HoldKey, now_ms: u64) -> Option<UpstreamResponse> {
        let whole_token = HoldKey {
            token: key.token,
            resource: WHOLE_TOKEN.into(),
        };
        let hold = self
            .active(key, now_ms)
            .or_else(|| self.active(&whole_token, now_ms));
        hold.map(|h| h.refusal.clone())
    }

    fn active(&self, key: &HoldKey, now_ms: u64) -> Option<&Hold> {
        self.map.get(key).filter(|h| now_ms < h.until_ms)
    }

    /// Records `resp`, received with `token` for a request we counted against
    /// `resource`: starts a hold on a rate-limit refusal, ends this token's hold on a
    /// success. A refusal that arrives while our hold is on (requests that were
    /// already in flight) neither extends nor escalates it, and starts nothing; one
    /// that arrives under a member's hold escalates nothing and holds only past that
    /// hold's end (see [`FleetSaid::held_until`]).
    pub fn observe(
        &mut self,
        token: Option<[u8; 8]>,
        resource: &str,
        resp: &UpstreamResponse,
        now_ms: u64,
        fleet: FleetSaid,
    ) -> Option<Started> {
        let said = resp
            .header("x-ratelimit-resource")
            .filter(|r| r.len() <= 32 && *r != WHOLE_TOKEN)
            .unwrap_or(resource);
        let key = |resource: &str| HoldKey {
            token,
            resource: resource.to_string(),
        };
        // Held under GitHub's name for the resource and under ours for the path, so
        // that the next request, checked before GitHub names it, finds the hold.
        let mut keys = vec![key(said)];
        if said != resource {
            keys.push(key(resource));
        }
        if is_secondary_limit(resp) {
            keys = vec![key(WHOLE_TOKEN)];
        }
        // GraphQL's primary limit comes as a `200`: not a success.
        let graphql = resource == GRAPHQL_RESOURCE;
        let refused = resp.status >= 400
            || (graphql && crate::policy::upstream::is_graphql_rate_limited(resp));
        if !refused {
            for k in &keys {
                self.map.remove(k);
            }
            // A secondary streak is remembered past the hold, not past a success;
            // but a success that was in flight when the hold began does not end it.
            let whole = key(WHOLE_TOKEN);
            if self.active(&whole, now_ms).is_none() {
                self.map.remove(&whole);
            }
            return None;
        }
        if keys.iter().any(|k| self.active(k, now_ms).is_some())
            && hold_for(resp, 0, 0, graphql).is_some()
        {
            return None;
        }
        let ours = self
            .map
            .get(&keys[0])
            .filter(|h| h.secondary && now_ms < h.until_ms.saturating_add(REPEAT_WINDOW_MS))
            .map(|h| h.streak);
        let last = ours.max(fleet.secondary_streak);
        // Under a member's hold the offence is the member's: not repeated by ours.
        let streak = match fleet.held_until {
            Some(_) => last.unwrap_or(0),
            None => last.map_or(0, |s| s.saturating_add(1)),
        };
        let (wait, secondary) = hold_for(resp, now_ms / 1000, streak, graphql)?;
        let ends = (now_ms / 1000).saturating_add(wait.as_secs());
        if fleet.held_until.is_some_and(|until| ends <= until) {
            return None;
        }
        let hold = Hold {
            until_ms: now_ms.saturating_add(wait.as_millis() as u64),
            refusal: resp.clone(),
            secondary,
            streak: if secondary { streak } else { 0 },
        };
        for k in keys {
            self.make_room(now_ms);
            self.map.insert(k, hold.clone());
        }
        Some(Started {
            wait,
            secondary,
            streak: hold.streak,
        })
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
    fn graphqls_rate_limited_200_holds_the_graphql_resource_until_reset() {
        let limited = resp(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1100"),
                ("x-ratelimit-resource", "graphql"),
            ],
            r#"{"errors":[{"type":"RATE_LIMITED","message":"API rate limit already exceeded"}]}"#,
        );
        assert_eq!(
            hold_for(&limited, 1000, 0, true),
            Some((Duration::from_secs(100), false))
        );
        let mut holds = Holds::default();
        let token = Some([1; 8]);
        assert!(holds
            .observe(token, "graphql", &limited, 1_000_000, FleetSaid::default())
            .is_some());
        let key = |resource: &str| HoldKey {
            token,
            resource: resource.into(),
        };
        assert!(holds.held(&key("graphql"), 1_050_000).is_some());
        assert!(
            holds.held(&key("core"), 1_050_000).is_none(),
            "REST goes on"
        );
        assert!(
            holds.held(&key("graphql"), 1_100_000).is_none(),
            "until reset"
        );
        // A REST answer whose body says RATE_LIMITED (a file's contents) holds nothing.
        let file = resp(
            200,
            &[
                ("x-ratelimit-remaining", "4000"),
                ("x-ratelimit-resource", "core"),
            ],
            r#"{"errors":[{"type":"RATE_LIMITED"}]}"#,
        );
        assert_eq!(hold_for(&file, 1000, 0, false), None);
        let mut rest = Holds::default();
        assert!(rest
            .observe(token, "core", &file, 1_000_000, FleetSaid::default())
            .is_none());
        assert!(rest.held(&key("core"), 1_000_001).is_none());
        // Errors that are not the limit, and whole answers, hold nothing.
        let partial = resp(
            200,
            &[],
            r#"{"data":{"a":null},"errors":[{"type":"NOT_FOUND"}]}"#,
        );
        assert_eq!(hold_for(&partial, 0, 0, false), None);
        assert_eq!(
            hold_for(&resp(200, &[], r#"{"data":{}}"#), 0, 0, false),
            None
        );
    }

    #[test]
    fn primary_and_secondary_limits() {
        assert_eq!(hold_for(&resp(200, &[], ""), 0, 0, false), None);
        assert_eq!(hold_for(&resp(403, &[], "Forbidden"), 0, 0, false), None);
        assert_eq!(
            hold_for(&resp(429, &[("retry-after", "7")], ""), 0, 0, false),
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
            hold_for(&exhausted, 1000, 0, false),
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
        assert_eq!(
            hold_for(&far, 0, 0, false),
            Some((MAX_HOLD, false)),
            "capped"
        );
        let secondary = resp(403, &[("x-ratelimit-remaining", "4000")], SECONDARY);
        assert_eq!(
            hold_for(&secondary, 0, 0, false),
            Some((SECONDARY_FIRST, true))
        );
        assert_eq!(
            hold_for(&secondary, 0, 1, false),
            Some((SECONDARY_FIRST * 2, true)),
            "doubling on repeats"
        );
        assert_eq!(
            hold_for(&secondary, 0, 10, false),
            Some((SECONDARY_CEILING, true))
        );
        let told = resp(429, &[("retry-after", "30")], SECONDARY);
        assert_eq!(
            hold_for(&told, 0, 3, false),
            Some((Duration::from_secs(30), true))
        );
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
        let started = holds
            .observe(client, "core", &exhausted, 1_000, FleetSaid::default())
            .unwrap();
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

        holds.observe(node, "core", &exhausted, 1_000, FleetSaid::default());
        assert!(holds
            .observe(
                client,
                "core",
                &resp(200, &[], ""),
                1_500,
                FleetSaid::default()
            )
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
        holds.observe(client, "core", &search, 1_000, FleetSaid::default());
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
        let a = holds
            .observe(t, "core", &secondary, 0, FleetSaid::default())
            .unwrap();
        let b = holds
            .observe(t, "core", &secondary, 61_000, FleetSaid::default())
            .unwrap();
        let c = holds
            .observe(t, "core", &secondary, 200_000, FleetSaid::default())
            .unwrap();
        assert_eq!(
            (a.wait, b.wait, c.wait),
            (SECONDARY_FIRST, SECONDARY_FIRST * 2, SECONDARY_FIRST * 4)
        );
        assert!(a.secondary && b.secondary && c.secondary);
    }

    #[test]
    fn a_repeat_anywhere_in_the_fleet_doubles_and_a_refusal_under_its_hold_starts_none() {
        let secondary = resp(403, &[], SECONDARY);
        let t = Some([9; 8]);
        // A member's secondary limit (streak 1) ended a minute ago: ours repeats it.
        let mut holds = Holds::default();
        let after_members = FleetSaid {
            held_until: None,
            secondary_streak: Some(1),
        };
        let started = holds
            .observe(t, "core", &secondary, 0, after_members)
            .unwrap();
        assert_eq!((started.wait, started.streak), (SECONDARY_FIRST * 4, 2));
        // Our own streak counts when it is the longer one.
        let mut holds = Holds::default();
        holds.observe(t, "core", &secondary, 0, FleetSaid::default());
        holds.observe(t, "core", &secondary, 61_000, FleetSaid::default());
        let behind = FleetSaid {
            held_until: None,
            secondary_streak: Some(0),
        };
        let third = holds
            .observe(t, "core", &secondary, 200_000, behind)
            .unwrap();
        assert_eq!((third.wait, third.streak), (SECONDARY_FIRST * 4, 2));
        // A refusal sent before a member's hold was heard of starts nothing.
        let mut holds = Holds::default();
        let under_members = FleetSaid {
            held_until: Some(60),
            secondary_streak: Some(0),
        };
        assert_eq!(holds.observe(t, "core", &secondary, 0, under_members), None);
        let exhausted = resp(403, &[("x-ratelimit-remaining", "0")], "");
        assert_eq!(holds.observe(t, "core", &exhausted, 0, under_members), None);
        // One that ends later (a primary limit's reset past the member's secondary
        // hold) holds until then, without escalating anything.
        let until_reset = resp(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1800"),
            ],
            "",
        );
        let started = holds
            .observe(t, "core", &until_reset, 0, under_members)
            .unwrap();
        assert_eq!(
            (started.wait, started.secondary),
            (Duration::from_secs(1800), false)
        );
    }

    #[test]
    fn refusals_in_flight_during_a_hold_neither_extend_nor_escalate_it() {
        let mut holds = Holds::default();
        let t = Some([4; 8]);
        let secondary = resp(403, &[], SECONDARY);
        let first = holds
            .observe(t, "core", &secondary, 0, FleetSaid::default())
            .unwrap();
        // Seven more answers to requests sent before the hold began.
        for i in 1..8 {
            assert_eq!(
                holds.observe(t, "core", &secondary, i * 10, FleetSaid::default()),
                None,
                "one warning"
            );
        }
        assert_eq!(first.wait, SECONDARY_FIRST);
        let held = |holds: &Holds, now| {
            holds
                .held(
                    &HoldKey {
                        token: t,
                        resource: "core".into(),
                    },
                    now,
                )
                .is_some()
        };
        assert!(held(&holds, 59_000));
        assert!(!held(&holds, 60_000), "not extended");
        // A success that was in flight does not end it either.
        holds.observe(t, "core", &resp(200, &[], ""), 100, FleetSaid::default());
        assert!(held(&holds, 1_000));
    }

    #[test]
    fn a_secondary_limit_holds_all_of_the_tokens_requests() {
        let mut holds = Holds::default();
        let t = Some([5; 8]);
        holds.observe(
            t,
            "search",
            &resp(403, &[], SECONDARY),
            0,
            FleetSaid::default(),
        );
        for r in ["core", "search", "graphql"] {
            let k = HoldKey {
                token: t,
                resource: r.into(),
            };
            assert!(holds.held(&k, 1_000).is_some(), "{r}");
        }
        let other = HoldKey {
            token: Some([6; 8]),
            resource: "core".into(),
        };
        assert!(holds.held(&other, 1_000).is_none(), "another token");
    }

    #[test]
    fn a_hold_is_found_under_the_resource_we_check_before_github_names_it() {
        let mut holds = Holds::default();
        let t = Some([7; 8]);
        let audit = resp(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("retry-after", "60"),
                ("x-ratelimit-resource", "audit_log"),
            ],
            "",
        );
        holds.observe(t, "core", &audit, 0, FleetSaid::default());
        for r in ["core", "audit_log"] {
            let k = HoldKey {
                token: t,
                resource: r.into(),
            };
            assert!(holds.held(&k, 1_000).is_some(), "{r}");
        }
        holds.observe(
            t,
            "core",
            &resp(200, &[("x-ratelimit-resource", "audit_log")], ""),
            61_000,
            FleetSaid::default(),
        );
        let k = HoldKey {
            token: t,
            resource: "core".into(),
        };
        assert!(holds.held(&k, 61_500).is_none(), "cleared under both");
    }

    #[test]
    fn resources_by_path() {
        assert_eq!(resource_of_path("/repos/o/r"), "core");
        assert_eq!(resource_of_path("/search/issues"), "search");
        assert_eq!(resource_of_path("/search/code"), "code_search");
        assert_eq!(resource_of_path("/graphql"), "graphql");
    }
}
