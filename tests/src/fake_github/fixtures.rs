//! The fake GitHub's bodies: repositories, users, issues, pull requests, commits,
//! workflow runs, runners and jobs, in GitHub's field order and shapes, derived from
//! the request so that every node of a test sees the same bytes.

use super::*;

/// What list items are derived from. Ids depend only on the repository and
/// position so an item keeps its identity across versions; shas and
/// timestamps depend on the versions so bodies change when they do.
pub(super) struct Ctx<'a> {
    pub(super) owner: &'a str,
    pub(super) repo: &'a str,
    pub(super) seed: String,
    pub(super) rev: u64,
}

impl Ctx<'_> {
    fn repo_api(&self) -> String {
        format!("{API}/repos/{}/{}", self.owner, self.repo)
    }

    fn repo_web(&self) -> String {
        format!("{WEB}/{}/{}", self.owner, self.repo)
    }

    fn id(&self, kind: &str, pos: usize) -> u64 {
        1_000_000_000 + hash_u64(&[kind, self.owner, self.repo, &pos.to_string()]) % 8_000_000_000
    }

    fn sha(&self, kind: &str, pos: usize) -> String {
        sha256_hex(&[kind, &self.seed, &pos.to_string()])[..40].to_string()
    }

    /// Newest first, one minute apart, moved forward by every version bump.
    fn updated(&self, pos: usize) -> u64 {
        EPOCH + self.rev * 3600 - (pos as u64 % 1000) * 60
    }

    fn created(&self, pos: usize) -> u64 {
        EPOCH - (pos as u64 + 1) * 5 * 3600
    }
}

pub(super) fn map<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub(super) fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(map(pairs))
}

pub(super) fn login_for(pos: usize) -> &'static str {
    LOGINS[pos % LOGINS.len()]
}

pub(super) fn user(login: &str) -> Value {
    let id = 1 + hash_u64(&["user", login]) % 200_000_000;
    let url = format!("{API}/users/{login}");
    obj([
        ("login", login.into()),
        ("id", id.into()),
        ("node_id", node_id("U_kgDO", id).into()),
        (
            "avatar_url",
            format!("https://avatars.githubusercontent.com/u/{id}?v=4").into(),
        ),
        ("gravatar_id", "".into()),
        ("url", url.clone().into()),
        ("html_url", format!("{WEB}/{login}").into()),
        ("followers_url", format!("{url}/followers").into()),
        (
            "following_url",
            format!("{url}/following{{/other_user}}").into(),
        ),
        ("gists_url", format!("{url}/gists{{/gist_id}}").into()),
        (
            "starred_url",
            format!("{url}/starred{{/owner}}{{/repo}}").into(),
        ),
        ("subscriptions_url", format!("{url}/subscriptions").into()),
        ("organizations_url", format!("{url}/orgs").into()),
        ("repos_url", format!("{url}/repos").into()),
        ("events_url", format!("{url}/events{{/privacy}}").into()),
        (
            "received_events_url",
            format!("{url}/received_events").into(),
        ),
        ("type", "User".into()),
        ("user_view_type", "public".into()),
        ("site_admin", false.into()),
    ])
}

pub(super) fn repository(owner: &str, repo: &str, rev: u64) -> Value {
    let api = format!("{API}/repos/{owner}/{repo}");
    let web = format!("{WEB}/{owner}/{repo}");
    let id = 10_000_000 + hash_u64(&["repo", owner, repo]) % 900_000_000;
    let mut m = map([
        ("id", id.into()),
        ("node_id", node_id("R_kgDO", id).into()),
        ("name", repo.into()),
        ("full_name", format!("{owner}/{repo}").into()),
        ("private", false.into()),
        ("owner", user(owner)),
        ("html_url", web.clone().into()),
        (
            "description",
            format!("Deterministic fake of {owner}/{repo} served by ghmesh's test server.").into(),
        ),
        ("fork", false.into()),
        ("url", api.clone().into()),
        ("created_at", iso(EPOCH - 3 * 365 * 86_400).into()),
        ("updated_at", iso(EPOCH + rev * 3600).into()),
        ("pushed_at", iso(EPOCH + rev * 3600 - 120).into()),
        (
            "git_url",
            format!("git://github.com/{owner}/{repo}.git").into(),
        ),
        (
            "ssh_url",
            format!("git@github.com:{owner}/{repo}.git").into(),
        ),
        ("clone_url", format!("{web}.git").into()),
        ("svn_url", web.clone().into()),
        (
            "homepage",
            format!("https://{owner}.github.io/{repo}").into(),
        ),
        ("mirror_url", Value::Null),
        ("size", (1000 + id % 50_000).into()),
        ("stargazers_count", (id % 9000).into()),
        ("watchers_count", (id % 9000).into()),
        ("language", "Rust".into()),
        ("has_issues", true.into()),
        ("has_projects", true.into()),
        ("has_downloads", true.into()),
        ("has_wiki", false.into()),
        ("has_pages", false.into()),
        ("has_discussions", false.into()),
        ("forks_count", (id % 700).into()),
        ("archived", false.into()),
        ("disabled", false.into()),
        ("open_issues_count", (id % 300).into()),
        (
            "license",
            json!({
                "key": "mit",
                "name": "MIT License",
                "spdx_id": "MIT",
                "url": format!("{API}/licenses/mit"),
                "node_id": "MDc6TGljZW5zZTEz",
            }),
        ),
        ("allow_forking", true.into()),
        ("is_template", false.into()),
        ("web_commit_signoff_required", false.into()),
        ("topics", json!(["api", "cache", "github", "proxy", "rust"])),
        ("visibility", "public".into()),
        ("forks", (id % 700).into()),
        ("open_issues", (id % 300).into()),
        ("watchers", (id % 9000).into()),
        ("default_branch", "main".into()),
        (
            "permissions",
            json!({ "admin": false, "maintain": false, "push": false, "triage": false, "pull": true }),
        ),
        ("temp_clone_token", "".into()),
        ("allow_squash_merge", true.into()),
        ("allow_merge_commit", true.into()),
        ("allow_rebase_merge", true.into()),
        ("allow_auto_merge", false.into()),
        ("delete_branch_on_merge", true.into()),
        ("allow_update_branch", false.into()),
        ("use_squash_pr_title_as_default", false.into()),
        ("squash_merge_commit_message", "COMMIT_MESSAGES".into()),
        ("squash_merge_commit_title", "COMMIT_OR_PR_TITLE".into()),
        ("merge_commit_message", "PR_TITLE".into()),
        ("merge_commit_title", "MERGE_MESSAGE".into()),
        ("network_count", (id % 700).into()),
        ("subscribers_count", (id % 400).into()),
        (
            "security_and_analysis",
            json!({
                "secret_scanning": { "status": "enabled" },
                "secret_scanning_push_protection": { "status": "enabled" },
                "dependabot_security_updates": { "status": "disabled" },
                "secret_scanning_non_provider_patterns": { "status": "disabled" },
                "secret_scanning_validity_checks": { "status": "disabled" },
            }),
        ),
    ]);
    // GitHub's hypermedia templates; generated from a table because there are
    // dozens and they differ only in suffix.
    for (key, suffix) in [
        ("forks_url", "/forks"),
        ("keys_url", "/keys{/key_id}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("teams_url", "/teams"),
        ("hooks_url", "/hooks"),
        ("issue_events_url", "/issues/events{/number}"),
        ("events_url", "/events"),
        ("assignees_url", "/assignees{/user}"),
        ("branches_url", "/branches{/branch}"),
        ("tags_url", "/tags"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("trees_url", "/git/trees{/sha}"),
        ("statuses_url", "/statuses/{sha}"),
        ("languages_url", "/languages"),
        ("stargazers_url", "/stargazers"),
        ("contributors_url", "/contributors"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("commits_url", "/commits{/sha}"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("comments_url", "/comments{/number}"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("contents_url", "/contents/{+path}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("merges_url", "/merges"),
        ("archive_url", "/{archive_format}{/ref}"),
        ("downloads_url", "/downloads"),
        ("issues_url", "/issues{/number}"),
        ("pulls_url", "/pulls{/number}"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("labels_url", "/labels{/name}"),
        ("releases_url", "/releases{/id}"),
        ("deployments_url", "/deployments"),
    ] {
        m.insert(key.to_string(), format!("{api}{suffix}").into());
    }
    Value::Object(m)
}

pub(super) fn label(ctx: &Ctx<'_>, pos: usize) -> Value {
    const LABELS: [(&str, &str); 4] = [
        ("bug", "d73a4a"),
        ("enhancement", "a2eeef"),
        ("documentation", "0075ca"),
        ("good first issue", "7057ff"),
    ];
    let (name, color) = LABELS[pos % LABELS.len()];
    let id = ctx.id(name, 0);
    json!({
        "id": id,
        "node_id": node_id("LA_kwDO", id),
        "url": format!("{}/labels/{}", ctx.repo_api(), name.replace(' ', "%20")),
        "name": name,
        "color": color,
        "default": true,
        "description": format!("Default label: {name}"),
    })
}

pub(super) fn issue(ctx: &Ctx<'_>, pos: usize, paging: &Paging<'_>) -> Value {
    let number = NEWEST_NUMBER - pos;
    let id = ctx.id("issue", pos);
    let url = format!("{}/issues/{number}", ctx.repo_api());
    // Reflect the state filter so a filtered list reads like one.
    let state = if paging.others.contains(&"state=closed") {
        "closed"
    } else {
        "open"
    };
    let closed_at = if state == "closed" {
        iso(ctx.updated(pos)).into()
    } else {
        Value::Null
    };
    obj([
        ("url", url.clone().into()),
        ("repository_url", ctx.repo_api().into()),
        ("labels_url", format!("{url}/labels{{/name}}").into()),
        ("comments_url", format!("{url}/comments").into()),
        ("events_url", format!("{url}/events").into()),
        (
            "html_url",
            format!("{}/issues/{number}", ctx.repo_web()).into(),
        ),
        ("id", id.into()),
        ("node_id", node_id("I_kwDO", id).into()),
        ("number", number.into()),
        (
            "title",
            format!("Fake issue #{number} in {}/{}", ctx.owner, ctx.repo).into(),
        ),
        ("user", user(login_for(pos))),
        ("labels", json!([label(ctx, pos)])),
        ("state", state.into()),
        ("locked", false.into()),
        ("assignee", Value::Null),
        ("assignees", json!([])),
        ("milestone", Value::Null),
        ("comments", (pos % 7).into()),
        ("created_at", iso(ctx.created(pos)).into()),
        ("updated_at", iso(ctx.updated(pos)).into()),
        ("closed_at", closed_at),
        ("author_association", "CONTRIBUTOR".into()),
        ("active_lock_reason", Value::Null),
        (
            "body",
            format!("Steps to reproduce #{number}: run the thing, observe the other thing.").into(),
        ),
        ("timeline_url", format!("{url}/timeline").into()),
        ("performed_via_github_app", Value::Null),
        ("state_reason", Value::Null),
    ])
}

pub(super) fn pull(ctx: &Ctx<'_>, pos: usize) -> Value {
    let number = NEWEST_NUMBER - pos;
    let id = ctx.id("pull", pos);
    let url = format!("{}/pulls/{number}", ctx.repo_api());
    let web = format!("{}/pull/{number}", ctx.repo_web());
    let head_sha = ctx.sha("pull-head", pos);
    let base_sha = ctx.sha("pull-base", pos);
    let login = login_for(pos);
    obj([
        ("url", url.clone().into()),
        ("id", id.into()),
        ("node_id", node_id("PR_kwDO", id).into()),
        ("html_url", web.clone().into()),
        ("diff_url", format!("{web}.diff").into()),
        ("patch_url", format!("{web}.patch").into()),
        (
            "issue_url",
            format!("{}/issues/{number}", ctx.repo_api()).into(),
        ),
        ("number", number.into()),
        ("state", "open".into()),
        ("locked", false.into()),
        ("title", format!("Fake change #{number}").into()),
        ("user", user(login)),
        ("body", format!("Implements change #{number}.").into()),
        ("created_at", iso(ctx.created(pos)).into()),
        ("updated_at", iso(ctx.updated(pos)).into()),
        ("closed_at", Value::Null),
        ("merged_at", Value::Null),
        ("merge_commit_sha", ctx.sha("pull-merge", pos).into()),
        ("assignee", Value::Null),
        ("assignees", json!([])),
        ("requested_reviewers", json!([])),
        ("requested_teams", json!([])),
        ("labels", json!([])),
        ("milestone", Value::Null),
        ("draft", pos.is_multiple_of(5).into()),
        ("commits_url", format!("{url}/commits").into()),
        ("review_comments_url", format!("{url}/comments").into()),
        (
            "review_comment_url",
            format!("{}/pulls/comments{{/number}}", ctx.repo_api()).into(),
        ),
        (
            "comments_url",
            format!("{}/issues/{number}/comments", ctx.repo_api()).into(),
        ),
        (
            "statuses_url",
            format!("{}/statuses/{head_sha}", ctx.repo_api()).into(),
        ),
        (
            "head",
            json!({
                "label": format!("{login}:change-{number}"),
                "ref": format!("change-{number}"),
                "sha": head_sha,
            }),
        ),
        (
            "base",
            json!({
                "label": format!("{}:main", ctx.owner),
                "ref": "main",
                "sha": base_sha,
            }),
        ),
        ("author_association", "CONTRIBUTOR".into()),
        ("auto_merge", Value::Null),
        ("active_lock_reason", Value::Null),
    ])
}

pub(super) fn commit(ctx: &Ctx<'_>, pos: usize) -> Value {
    let sha = ctx.sha("commit", pos);
    let parent = ctx.sha("commit", pos + 1);
    let tree = ctx.sha("tree", pos);
    let login = login_for(pos);
    let when = iso(ctx.updated(pos));
    let person = json!({
        "name": login,
        "email": format!("{login}@users.noreply.github.com"),
        "date": when,
    });
    let api = ctx.repo_api();
    obj([
        ("sha", sha.clone().into()),
        ("node_id", node_id("C_kwDO", ctx.id("commit", pos)).into()),
        (
            "commit",
            json!({
                "author": person,
                "committer": person,
                "message": format!("Fake commit {pos}\n\nDeterministic history for tests."),
                "tree": { "sha": tree, "url": format!("{api}/git/trees/{tree}") },
                "url": format!("{api}/git/commits/{sha}"),
                "comment_count": 0,
                "verification": {
                    "verified": false,
                    "reason": "unsigned",
                    "signature": null,
                    "payload": null,
                    "verified_at": null,
                },
            }),
        ),
        ("url", format!("{api}/commits/{sha}").into()),
        (
            "html_url",
            format!("{}/commit/{sha}", ctx.repo_web()).into(),
        ),
        (
            "comments_url",
            format!("{api}/commits/{sha}/comments").into(),
        ),
        ("author", user(login)),
        ("committer", user(login)),
        (
            "parents",
            json!([{
                "sha": parent,
                "url": format!("{api}/commits/{parent}"),
                "html_url": format!("{}/commit/{parent}", ctx.repo_web()),
            }]),
        ),
    ])
}

pub(super) fn workflow_run(ctx: &Ctx<'_>, pos: usize) -> Value {
    let id = ctx.id("run", pos);
    let api = ctx.repo_api();
    let url = format!("{api}/actions/runs/{id}");
    let head_sha = ctx.sha("run-head", pos);
    let workflow_id = ctx.id("workflow", 0);
    let check_suite_id = ctx.id("check-suite", pos);
    let login = login_for(pos);
    let conclusion = if pos % 4 == 3 { "failure" } else { "success" };
    obj([
        ("id", id.into()),
        ("name", "CI".into()),
        ("node_id", node_id("WFR_kwLO", id).into()),
        ("head_branch", "main".into()),
        ("head_sha", head_sha.clone().into()),
        ("path", ".github/workflows/ci.yml".into()),
        ("display_title", format!("Fake commit {pos}").into()),
        ("run_number", (NEWEST_NUMBER - pos).into()),
        ("event", "push".into()),
        ("status", "completed".into()),
        ("conclusion", conclusion.into()),
        ("workflow_id", workflow_id.into()),
        ("check_suite_id", check_suite_id.into()),
        (
            "check_suite_node_id",
            node_id("CS_kwDO", check_suite_id).into(),
        ),
        ("url", url.clone().into()),
        (
            "html_url",
            format!("{}/actions/runs/{id}", ctx.repo_web()).into(),
        ),
        ("pull_requests", json!([])),
        ("created_at", iso(ctx.updated(pos)).into()),
        ("updated_at", iso(ctx.updated(pos) + 300).into()),
        ("actor", user(login)),
        ("run_attempt", 1.into()),
        ("referenced_workflows", json!([])),
        ("run_started_at", iso(ctx.updated(pos)).into()),
        ("jobs_url", format!("{url}/jobs").into()),
        ("logs_url", format!("{url}/logs").into()),
        (
            "check_suite_url",
            format!("{api}/check-suites/{check_suite_id}").into(),
        ),
        ("artifacts_url", format!("{url}/artifacts").into()),
        ("cancel_url", format!("{url}/cancel").into()),
        ("rerun_url", format!("{url}/rerun").into()),
        ("previous_attempt_url", Value::Null),
        (
            "workflow_url",
            format!("{api}/actions/workflows/{workflow_id}").into(),
        ),
        (
            "head_commit",
            json!({
                "id": head_sha,
                "tree_id": ctx.sha("run-tree", pos),
                "message": format!("Fake commit {pos}"),
                "timestamp": iso(ctx.updated(pos) - 60),
                "author": { "name": login, "email": format!("{login}@users.noreply.github.com") },
                "committer": { "name": "GitHub", "email": "noreply@github.com" },
            }),
        ),
    ])
}

pub(super) fn runner(ctx: &Ctx<'_>, pos: usize) -> Value {
    let id = 1 + pos as u64;
    let busy = pos.is_multiple_of(3);
    let label = |name: &str, kind: &str| json!({ "id": ctx.id(name, 0) % 100_000, "name": name, "type": kind });
    obj([
        ("id", id.into()),
        ("name", format!("{}-runner-{:03}", ctx.repo, pos + 1).into()),
        ("os", "linux".into()),
        (
            "status",
            if pos % 5 == 4 { "offline" } else { "online" }.into(),
        ),
        ("busy", busy.into()),
        ("ephemeral", false.into()),
        ("runner_group_id", 1.into()),
        (
            "labels",
            json!([
                label("self-hosted", "read-only"),
                label("Linux", "read-only"),
                label("X64", "read-only"),
                label("ghmesh-fake", "custom"),
            ]),
        ),
    ])
}

pub(super) fn job(ctx: &Ctx<'_>, run_id: u64, pos: usize) -> Value {
    let id = ctx.id(&format!("job-{run_id}"), pos);
    let api = ctx.repo_api();
    let start = ctx.updated(pos);
    let steps: Vec<Value> = ["Set up job", "Checkout", "Build", "Test", "Complete job"]
        .iter()
        .zip(0u64..)
        .map(|(name, i)| {
            json!({
                "name": name,
                "status": "completed",
                "conclusion": "success",
                "number": i + 1,
                "started_at": iso(start + i * 30),
                "completed_at": iso(start + i * 30 + 29),
            })
        })
        .collect();
    let runner_id = 1 + (pos % 10) as u64;
    obj([
        ("id", id.into()),
        ("run_id", run_id.into()),
        ("workflow_name", "CI".into()),
        ("head_branch", "main".into()),
        ("run_url", format!("{api}/actions/runs/{run_id}").into()),
        ("run_attempt", 1.into()),
        ("node_id", node_id("CR_kwDO", id).into()),
        ("head_sha", ctx.sha("job-head", 0).into()),
        ("url", format!("{api}/actions/jobs/{id}").into()),
        (
            "html_url",
            format!("{}/actions/runs/{run_id}/job/{id}", ctx.repo_web()).into(),
        ),
        ("status", "completed".into()),
        ("conclusion", "success".into()),
        ("created_at", iso(start - 10).into()),
        ("started_at", iso(start).into()),
        ("completed_at", iso(start + 150).into()),
        ("name", format!("build ({})", pos + 1).into()),
        ("steps", Value::Array(steps)),
        ("check_run_url", format!("{api}/check-runs/{id}").into()),
        ("labels", json!(["ubuntu-latest"])),
        ("runner_id", runner_id.into()),
        (
            "runner_name",
            format!("{}-runner-{runner_id:03}", ctx.repo).into(),
        ),
        ("runner_group_id", 1.into()),
        ("runner_group_name", "Default".into()),
    ])
}

pub(super) fn generic(path: &str, query: &str, pv: u64, gv: u64, rev: u64) -> Value {
    let id = hash_u64(&["generic", path]) % 1_000_000_000;
    json!({
        "id": id,
        "node_id": node_id("G_kwDO", id),
        "url": format!("{API}{path}"),
        "path": path,
        "query": query,
        "version": pv,
        "global_version": gv,
        "updated_at": iso(EPOCH + rev * 3600),
    })
}

pub(super) fn node_id(prefix: &str, id: u64) -> String {
    format!("{prefix}{id:010X}")
}
