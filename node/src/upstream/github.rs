//! The real upstream: GitHub's REST API over reqwest (rustls).
//!
//! - Cacheable reads go with the node's token (`Authorization: Bearer …`) or a local
//!   client's own header ([`Credential`]); forwarded requests with exactly the client's
//!   headers. A User-Agent on every request.
//! - Tracks `x-ratelimit-*`, and holds a token after a rate-limit answer (primary or
//!   secondary) per token and resource: see [`super::holds`].
//! - Connect and whole-request timeouts; bodies over the size limit are refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ghmesh_protocol::ledger::BudgetEntry;
use ghmesh_protocol::{entry::MAX_BODY_LEN, token_fingerprint, CanonicalRequest, GRAPHQL_PATH};
use libp2p::PeerId;

use super::holds::{resource_of_path, FleetSaid, HoldKey, Holds};
use super::ledger::{
    before_figures, may_spend, spender_rank, BudgetBook, BudgetId, BudgetView, NewHold, Share,
    Spend, MAX_TURN_WAIT_SECS, QUIET_SECS,
};
use super::{
    BoxFuture, Conditional, Credential, RateLimit, Upstream, UpstreamError, UpstreamResponse,
};
use crate::clock::{self, SharedClock};
use crate::limits::{MAX_BUDGETS, MAX_PEERS};

/// Headers a client may not pass through (hop-by-hop, or ours to set).
const DROP_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
    "accept-encoding",
];

/// Configuration of the GitHub client.
#[derive(Clone)]
pub struct GithubConfig {
    /// Base URL, e.g. `https://api.github.com` (no trailing slash needed).
    pub base_url: String,
    /// Token for cached requests; None means anonymous.
    pub token: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

/// How budgets are named and spent (contract §10).
#[derive(Clone)]
pub struct BudgetRules {
    /// Keys budget ids: the mesh's budget key, so members name budgets alike.
    pub key: [u8; 32],
    /// The repository Actions job tokens (`ghs_…`) spend for.
    pub repository: Option<String>,
    /// `--rate-limit-reserve`: misses stop spending a budget whose fleet-wide
    /// `remaining` is down to this.
    pub reserve: u64,
}

impl std::fmt::Debug for BudgetRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetRules")
            .field("repository", &self.repository)
            .field("reserve", &self.reserve)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// GitHub REST client used by the node.
pub struct GithubClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    token_fp: Option<[u8; 8]>,
    /// What GitHub said of our budget. A `std::sync::Mutex`: read and updated between
    /// awaits, after each response, never across one.
    state: Mutex<LimitState>,
    /// Where hold times are read: the node's clock, so that tests move it.
    clock: SharedClock,
    budgets: BudgetRules,
    /// A hold started, or a budget fell to the reserve, since the node last asked
    /// (see `take_ledger_urgent`).
    ledger_urgent: std::sync::atomic::AtomicBool,
    /// A request on a budget ended or the figures changed: requests waiting for their
    /// share look again.
    share_freed: tokio::sync::Notify,
    /// Requests that waited for their share or turn of a budget near its end.
    share_waits: std::sync::atomic::AtomicU64,
    /// A read began to wait for its share and members must hear now that this node
    /// spends the budget (see `Upstream::ledger_wake`).
    ledger_wake: tokio::sync::Notify,
    /// Our rank among a budget's spenders before the node says who we are.
    anonymous: PeerId,
    /// The budget the node's own token spends (what its hellos say).
    own_budget: Option<BudgetId>,
}

#[derive(Default)]
struct LimitState {
    /// The node token's last rate-limit headers (what stats report).
    last: RateLimit,
    holds: Holds,
    /// Every budget spent here or heard of from members.
    book: BudgetBook,
    /// Requests on their way to GitHub per budget (entries only while some are).
    in_flight: HashMap<(BudgetId, String), u64>,
    /// This node's peer id (a random one until the node says).
    me: Option<PeerId>,
    /// The node's members, as it last said (at most `MAX_PEERS`).
    members: Vec<PeerId>,
    /// The budget each member's hello said its own token spends (at most `MAX_PEERS`).
    spends: HashMap<PeerId, BudgetId>,
    /// Since when requests on the node token's budget have waited for its first
    /// figures, by resource (see `ledger::before_figures`); one instant per resource,
    /// so that `share_ready`'s wait and `take_share`'s are one wait.
    awaiting_figures: HashMap<String, tokio::time::Instant>,
}

impl GithubClient {
    /// Builds the client.
    pub fn new(cfg: GithubConfig) -> Result<Self, UpstreamError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .user_agent(concat!("ghmesh/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            base: cfg.base_url.trim_end_matches('/').to_string(),
            token_fp: cfg.token.as_deref().map(token_fingerprint),
            token: cfg.token,
            state: Mutex::new(LimitState::default()),
            clock: clock::system(),
            // Without a mesh, names only this node uses.
            budgets: BudgetRules {
                key: rand::random(),
                repository: None,
                reserve: 0,
            },
            ledger_urgent: std::sync::atomic::AtomicBool::new(false),
            share_freed: tokio::sync::Notify::new(),
            share_waits: std::sync::atomic::AtomicU64::new(0),
            ledger_wake: tokio::sync::Notify::new(),
            anonymous: PeerId::random(),
            own_budget: None,
        }
        .named_by_rules())
    }

    /// Works out the node token's budget by the current rules.
    fn named_by_rules(mut self) -> Self {
        self.own_budget = self.token.as_deref().map(|t| self.budget_of_token(t));
        self
    }

    /// Names and spends budgets by `rules` (the mesh's key, so that members' ledgers
    /// meet).
    pub fn with_budgets(mut self, rules: BudgetRules) -> Self {
        self.budgets = rules;
        self.named_by_rules()
    }

    /// The budget a request with `cred` spends (`None`: anonymous).
    fn budget_of(&self, cred: &Credential) -> Option<BudgetId> {
        match cred {
            Credential::Node => self.own_budget,
            Credential::Client(t) => Some(self.budget_of_token(super::bare_token(t.header()))),
        }
    }

    /// The budget `token` spends.
    fn budget_of_token(&self, token: &str) -> BudgetId {
        let repository = self.budgets.repository.as_deref();
        ghmesh_protocol::keys::budget_id(&self.budgets.key, token, repository)
    }

    /// The refusal to answer instead of sending a request with `token` on `budget`
    /// for `resource`: GitHub's own while this node holds the token, else one in
    /// GitHub's shape while the fleet's ledger holds the budget (a member's refusal,
    /// or, for a miss, `miss`, a budget down to the reserve).
    fn held(
        &self,
        token: Option<[u8; 8]>,
        budget: Option<BudgetId>,
        resource: &str,
        miss: bool,
    ) -> Option<UpstreamResponse> {
        let state = self.state.lock().ok()?;
        let key = HoldKey {
            token,
            resource: resource.to_string(),
        };
        if let Some(refusal) = state.holds.held(&key, self.clock.now_ms()) {
            return Some(refusal);
        }
        let budget = budget?;
        let now = self.clock.now_secs();
        if let Some(until) = state.book.held_until(budget, resource, now) {
            return Some(held_refusal(
                resource,
                until,
                now,
                "the fleet's budget is spent",
            ));
        }
        if miss {
            if let Some(e) = state
                .book
                .at_reserve(budget, resource, self.budgets.reserve, now)
            {
                let why = if e.remaining == 0 {
                    "the fleet's budget is spent"
                } else {
                    "the rest of the budget is kept for people (--rate-limit-reserve)"
                };
                return Some(held_refusal(resource, e.reset, now, why));
            }
        }
        None
    }

    /// This node's share of `budget` for `resource` near its end, by the book in
    /// `state` (see [`BudgetBook::share`]).
    fn share(
        &self,
        state: &LimitState,
        budget: BudgetId,
        resource: &str,
        now: u64,
    ) -> Option<Share> {
        let me = state.me.unwrap_or(self.anonymous);
        let sharers = self.sharers(state, budget);
        state
            .book
            .share(budget, resource, self.budgets.reserve, me, &sharers, now)
    }

    /// The members that said they spend `budget` with their own token: known only of
    /// the node token's budget (a client's token is its own business).
    fn sharers(&self, state: &LimitState, budget: BudgetId) -> Vec<PeerId> {
        if self.own_budget != Some(budget) {
            return Vec::new();
        }
        state
            .members
            .iter()
            .filter(|m| state.spends.get(m) == Some(&budget))
            .copied()
            .collect()
    }

    /// Whether a request on `budget` for `resource` may go now (see [`may_spend`]), or,
    /// before anyone has figures of a budget members said they spend too, by
    /// [`before_figures`].
    fn spend(&self, state: &mut LimitState, budget: BudgetId, resource: &str, now: u64) -> Spend {
        let n = state
            .in_flight
            .get(&(budget, resource.to_string()))
            .copied()
            .unwrap_or(0);
        let sharers = self.sharers(state, budget);
        if sharers.is_empty() || state.book.knows(budget, resource) {
            // Waits for figures are the node token's only (keyed by resource): another
            // budget's requests must not restart them.
            if Some(budget) == self.own_budget {
                state.awaiting_figures.remove(resource);
            }
            return may_spend(self.share(state, budget, resource, now), n, now);
        }
        let me = state.me.unwrap_or(self.anonymous);
        let rank = spender_rank(budget, resource, me, &sharers);
        if state.awaiting_figures.len() >= MAX_BUDGETS
            && !state.awaiting_figures.contains_key(resource)
        {
            // Forgetting costs at most one request sent without figures.
            state.awaiting_figures.clear();
        }
        let since = *state
            .awaiting_figures
            .entry(resource.to_string())
            .or_insert_with(tokio::time::Instant::now);
        let waited = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        before_figures(rank, n, waited)
    }

    /// Takes a place in this node's share of `budget` for `resource` (see
    /// [`BudgetBook::share`] and [`may_spend`]), waiting while the share is in flight
    /// or, without a share, for this node's turn; or the refusal to answer when
    /// nothing is left above the reserve, or when the turn has not come within
    /// [`MAX_TURN_WAIT_SECS`] (then held until the turn). Looks again as soon as a
    /// request on the budget ends or members' figures arrive.
    async fn take_share(
        &self,
        budget: BudgetId,
        resource: &str,
    ) -> Result<InFlight<'_>, UpstreamResponse> {
        self.share_wait(budget, resource, true).await
    }

    /// [`Self::take_share`]'s wait; the place is taken only when `take` (else the place
    /// seen free is left for the caller to take later, see `Upstream::share_ready`).
    async fn share_wait(
        &self,
        budget: BudgetId,
        resource: &str,
        take: bool,
    ) -> Result<InFlight<'_>, UpstreamResponse> {
        let slot = (budget, resource.to_string());
        let started = tokio::time::Instant::now();
        let mut waited = false;
        loop {
            // Registered before looking, so that a place freed in between is not missed.
            let freed = self.share_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let wait = {
                let Ok(mut state) = self.state.lock() else {
                    return Ok(InFlight {
                        client: self,
                        slot: None,
                    });
                };
                let now = self.clock.now_secs();
                let spend = self.spend(&mut state, budget, resource, now);
                if matches!(spend, Spend::Wait { .. }) && state.book.wants(budget, resource) {
                    // No call of ours may end soon to have it said: the ledger wakes now
                    // (a permit is kept if it is busy).
                    self.ledger_wake.notify_one();
                }
                let n = state.in_flight.get(&slot).copied().unwrap_or(0);
                let held = |until| {
                    let why = "the fleet's last requests of this window are other members' turn";
                    held_refusal(resource, until, now, why)
                };
                match spend {
                    Spend::Go if !take => {
                        return Ok(InFlight {
                            client: self,
                            slot: None,
                        })
                    }
                    Spend::Go => {
                        state.in_flight.insert(slot.clone(), n + 1);
                        return Ok(InFlight {
                            client: self,
                            slot: Some(slot),
                        });
                    }
                    Spend::Held { until } => return Err(held(until)),
                    // Members' news may move a turn again and again: the whole wait
                    // for one is bounded, then the client hears when to come back.
                    Spend::Wait { until: Some(turn) }
                        if started.elapsed() >= Duration::from_secs(MAX_TURN_WAIT_SECS) =>
                    {
                        return Err(held(turn));
                    }
                    Spend::AwaitFigures { for_ms } => Some(Duration::from_millis(for_ms)),
                    Spend::Wait { until } => until.map(|u| {
                        // The clock is the node's (tests move it): a nap of at most
                        // a turn looks again whatever the clock does.
                        let secs = u.saturating_sub(now).clamp(1, QUIET_SECS);
                        Duration::from_secs(secs)
                    }),
                }
            };
            if !waited {
                waited = true;
                self.share_waits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            match wait {
                Some(nap) => {
                    let _ = tokio::time::timeout(nap, freed).await;
                }
                // One of ours is in flight: its end (bounded by the request timeout)
                // wakes us.
                None => freed.await,
            }
        }
    }

    /// Reads time from `clock` (the node's) instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Records a response received with `token` on `budget`: its rate-limit headers
    /// (the node's own for stats; every budget's for the ledger) and its holds.
    fn observe(
        &self,
        token: Option<[u8; 8]>,
        budget: Option<BudgetId>,
        resource: &str,
        resp: &UpstreamResponse,
    ) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if token == self.token_fp {
            if let Some(rl) = RateLimit::from_headers(&resp.headers) {
                state.last = rl;
            }
        }
        let now_ms = self.clock.now_ms();
        let fleet = budget.map_or_else(FleetSaid::default, |b| FleetSaid {
            held_until: state.book.held_until(b, resource, now_ms / 1000),
            secondary_streak: state.book.secondary_streak(b, now_ms / 1000),
        });
        let started = state.holds.observe(token, resource, resp, now_ms, fleet);
        // A budget's first figures, when members said they spend it too: they may be
        // waiting for them (see `ledger::before_figures`).
        let first_figures = budget
            .is_some_and(|b| !state.book.knows(b, resource) && !self.sharers(&state, b).is_empty());
        if let Some(budget) = budget {
            let hold = started.map(|s| NewHold {
                until: (now_ms / 1000).saturating_add(s.wait.as_secs().max(1)),
                secondary: s.secondary,
                streak: u8::try_from(s.streak).unwrap_or(u8::MAX),
            });
            state
                .book
                .observe(budget, resource, resp, hold, now_ms / 1000);
            state.book.answered(budget, resource);
        }
        // A refusal, GitHub saying the budget is down to the reserve (or gone), or a
        // budget near its end (shared out by the fleet's figures, see `take_share`):
        // members should know before they spend past it.
        let remaining = resp
            .header("x-ratelimit-remaining")
            .and_then(|r| r.trim().parse::<u64>().ok());
        let near_end =
            budget.is_some_and(|b| self.share(&state, b, resource, now_ms / 1000).is_some());
        let spent =
            resp.status < 400 && (near_end || remaining.is_some_and(|r| r <= self.budgets.reserve));
        if started.is_some() || spent || first_figures {
            self.ledger_urgent
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(started) = started {
            let whose = if token == self.token_fp {
                "the node's token"
            } else {
                "a client's token"
            };
            let kind = if started.secondary {
                "secondary rate limit"
            } else {
                "rate limit"
            };
            tracing::warn!(
                status = resp.status,
                wait_s = started.wait.as_secs(),
                "GitHub {kind} for {whose}; holding its requests until then"
            );
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let url = format!("{}{}", self.base, path_and_query);
        self.send_to(method, &url, headers, body).await
    }

    /// GitHub's GraphQL endpoint: `/graphql` beside the REST base, and on GitHub
    /// Enterprise Server (REST under `/api/v3`) `/api/graphql`.
    fn graphql_url(&self) -> String {
        match self.base.strip_suffix("/v3") {
            Some(api) if api.ends_with("/api") => format!("{api}/graphql"),
            _ => format!("{}/graphql", self.base),
        }
    }

    async fn send_to(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut rb = self.http.request(method, url);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        if let Some(body) = body {
            rb = rb.body(body);
        }
        let resp = rb.send().await.map_err(map_err)?;
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_BODY_LEN as u64 * 2)
        {
            return Err(UpstreamError::TooLarge);
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(map_err)?;
            if body.len() + chunk.len() > MAX_BODY_LEN * 2 {
                return Err(UpstreamError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(UpstreamResponse {
            status,
            headers,
            body: Bytes::from(body),
        })
    }
}

fn map_err(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else {
        UpstreamError::Unreachable(without_url(&e))
    }
}

/// reqwest errors embed the URL; ours never carries secrets, but keep errors short.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(url.as_str(), "upstream");
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

impl Upstream for GithubClient {
    fn share_waits(&self) -> u64 {
        self.share_waits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn share_ready<'a>(&'a self, path: &'a str, cred: &'a Credential) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(budget) = self.budget_of(cred) {
                // A refusal is `fetch`'s to give: it looks again.
                let _ = self.share_wait(budget, resource_of_path(path), false).await;
            }
        })
    }

    fn fetch<'a>(
        &'a self,
        req: &'a CanonicalRequest,
        cond: Conditional,
        cred: &'a Credential,
    ) -> BoxFuture<'a, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async move {
            let token = self.fingerprint_of(cred);
            let budget = self.budget_of(cred);
            let resource = resource_of_path(&req.path);
            if let Some(refusal) = self.held(token, budget, resource, true) {
                return Err(UpstreamError::Held(Box::new(refusal)));
            }
            let _in_flight = match budget {
                Some(b) => Some(
                    self.take_share(b, resource)
                        .await
                        .map_err(|r| UpstreamError::Held(Box::new(r)))?,
                ),
                None => None,
            };
            let mut headers = Vec::new();
            headers.push((
                "accept".to_string(),
                req.accept
                    .clone()
                    .unwrap_or_else(|| "application/vnd.github+json".into()),
            ));
            if let Some(v) = &req.api_version {
                headers.push(("x-github-api-version".into(), v.clone()));
            }
            match cred {
                Credential::Node => {
                    if let Some(t) = &self.token {
                        headers.push(("authorization".into(), format!("Bearer {t}")));
                    }
                }
                Credential::Client(t) => headers.push(("authorization".into(), t.header().into())),
            }
            let resp = match &req.graphql {
                // GitHub has no conditional GraphQL requests (an `If-None-Match` gets
                // 412): the query is sent whole, to the GraphQL endpoint.
                Some(query) => {
                    headers.push(("content-type".into(), "application/json".into()));
                    let url = self.graphql_url();
                    let body = Some(Bytes::from(query.body()));
                    self.send_to(reqwest::Method::POST, &url, headers, body)
                        .await?
                }
                None => {
                    if let Some(etag) = cond.etag {
                        headers.push(("if-none-match".into(), etag));
                    }
                    if let Some(lm) = cond.last_modified {
                        headers.push(("if-modified-since".into(), lm));
                    }
                    let method = reqwest::Method::from_bytes(req.method.as_bytes())
                        .map_err(|_| UpstreamError::Unreachable("bad method".into()))?;
                    self.send(method, &req.path_and_query(), headers, None)
                        .await?
                }
            };
            self.observe(token, budget, resource, &resp);
            Ok(resp)
        })
    }

    fn forward<'a>(
        &'a self,
        method: &'a str,
        path_and_query: &'a str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> BoxFuture<'a, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| UpstreamError::Unreachable("bad method".into()))?;
            // Exactly the client's headers: the node's token is lent only to cacheable
            // reads (`fetch`), never added here.
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(k, _)| !DROP_REQUEST_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
                .collect();
            let auth = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| super::bare_token(v).to_string());
            let token = auth.as_deref().map(token_fingerprint);
            let budget = auth.as_deref().map(|t| self.budget_of_token(t));
            let resource = resource_of_path(path_and_query.split('?').next().unwrap_or(""));
            // A fleet hold holds writes too (GitHub would refuse them); the reserve
            // is for misses only: a person's write is theirs to spend.
            if let Some(refusal) = self.held(token, budget, resource, false) {
                return Err(UpstreamError::Held(Box::new(refusal)));
            }
            let body = (!body.is_empty()).then_some(body);
            let resp = if path_and_query == GRAPHQL_PATH {
                let url = self.graphql_url();
                self.send_to(method, &url, headers, body).await?
            } else {
                self.send(method, path_and_query, headers, body).await?
            };
            self.observe(token, budget, resource, &resp);
            Ok(resp)
        })
    }

    fn token_fingerprint(&self) -> Option<[u8; 8]> {
        self.token_fp
    }

    fn base(&self) -> Option<&str> {
        Some(&self.base)
    }

    fn rate_limit(&self) -> RateLimit {
        self.state.lock().map(|s| s.last).unwrap_or_default()
    }

    fn take_ledger_urgent(&self) -> bool {
        self.ledger_urgent
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    fn ledger_wake(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.ledger_wake.notified())
    }

    fn ledger_news(&self) -> Vec<BudgetEntry> {
        self.state
            .lock()
            .map(|mut s| s.book.news())
            .unwrap_or_default()
    }

    fn ledger_heard(&self, entries: &[BudgetEntry], spender: Option<PeerId>) -> usize {
        let now = self.clock.now_secs();
        let changed = self
            .state
            .lock()
            .map(|mut s| s.book.heard(entries, spender, now))
            .unwrap_or(0);
        if changed > 0 {
            self.share_freed.notify_waiters();
        }
        changed
    }

    fn set_peer_id(&self, me: PeerId) {
        if let Ok(mut s) = self.state.lock() {
            s.me = Some(me);
        }
    }

    fn set_members(&self, members: &[PeerId]) {
        if let Ok(mut s) = self.state.lock() {
            // What hellos said is kept (a hello comes before its sender is a member);
            // only members count (see `sharers`), and `member_spends` makes room.
            s.members = members.iter().take(MAX_PEERS).copied().collect();
        }
        self.share_freed.notify_waiters();
    }

    fn member_spends(&self, peer: PeerId, budget: Option<BudgetId>) {
        if let Ok(mut s) = self.state.lock() {
            if s.spends.len() >= MAX_PEERS {
                // Hellos of peers not (or no longer) members make room first.
                let LimitState {
                    members, spends, ..
                } = &mut *s;
                spends.retain(|p, _| members.contains(p));
            }
            match budget {
                Some(b) if s.spends.len() < MAX_PEERS || s.spends.contains_key(&peer) => {
                    s.spends.insert(peer, b);
                }
                Some(_) => {}
                None => {
                    s.spends.remove(&peer);
                }
            }
        }
    }

    fn own_budget(&self) -> Option<BudgetId> {
        self.own_budget
    }

    fn ledger_snapshot(&self) -> Vec<BudgetEntry> {
        let now = self.clock.now_secs();
        self.state
            .lock()
            .map(|s| s.book.snapshot(now))
            .unwrap_or_default()
    }

    fn rate_limits(&self) -> Vec<BudgetView> {
        let now = self.clock.now_secs();
        self.state
            .lock()
            .map(|s| s.book.view(now))
            .unwrap_or_default()
    }
}

/// A place in a budget's share, given back when the request ends (answered, failed or
/// dropped at its deadline).
struct InFlight<'a> {
    client: &'a GithubClient,
    slot: Option<(BudgetId, String)>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if let Ok(mut state) = self.client.state.lock() {
            if let Some(n) = state.in_flight.get_mut(&slot) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.in_flight.remove(&slot);
                }
            }
        }
        self.client.share_freed.notify_waiters();
    }
}

/// GitHub's shape of a primary rate-limit refusal, for a request the node holds
/// because of what the fleet knows: `403`, nothing remaining, and when to retry.
fn held_refusal(resource: &str, until: u64, now: u64, why: &str) -> UpstreamResponse {
    let body = serde_json::json!({
        "message": format!("API rate limit exceeded: held by ghmesh, {why}, until {until} (unix time)"),
        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
    });
    UpstreamResponse {
        status: 403,
        headers: vec![
            (
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            ),
            ("x-ratelimit-remaining".into(), "0".into()),
            ("x-ratelimit-reset".into(), until.to_string()),
            ("x-ratelimit-resource".into(), resource.to_string()),
            (
                "retry-after".into(),
                until.saturating_sub(now).max(1).to_string(),
            ),
        ],
        body: Bytes::from(body.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_token() {
        let cfg = GithubConfig {
            base_url: "https://api.github.com".into(),
            token: Some("ghp_supersecret".into()),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{cfg:?}").contains("supersecret"));
    }
}
