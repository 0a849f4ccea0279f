// @octokit/rest, unmodified, against a ghmesh node (GHMESH_BASE) backed by the fake
// GitHub. Each step is what a CI script (or actions/github-script) does; any failure
// throws and the process exits non-zero. Prints one JSON line of what it saw.
import assert from "node:assert/strict";
import { Octokit } from "@octokit/rest";

const base = process.env.GHMESH_BASE;
const octokit = new Octokit({ baseUrl: base, auth: "ghp_octokit" });
const owner = "acme";
const repo = "widgets";

const { data: r } = await octokit.rest.repos.get({ owner, repo });
assert.equal(r.full_name, "acme/widgets");
assert.ok(r.url.startsWith(base), r.url);

const issues = await octokit.paginate(octokit.rest.issues.listForRepo, {
  owner,
  repo,
  state: "all",
  per_page: 30,
});
assert.ok(issues.length > 30, `pagination through Link headers: ${issues.length}`);

await octokit.rest.repos.getContent({ owner, repo, path: "README.md" });

const version = async () =>
  (await octokit.request("GET /repos/{owner}/{repo}/issues/{n}", { owner, repo, n: 5 })).data
    .version;
const before = await version();
const created = await octokit.rest.issues.createComment({
  owner,
  repo,
  issue_number: 5,
  body: "hello from octokit",
});
assert.equal(created.status, 201);
const after = await version();
assert.ok(after > before, `the read after the write sees it: ${before} -> ${after}`);

// A conditional poll: the node answers the client's own If-None-Match with 304, which
// octokit reports as a RequestError with status 304.
const fresh = await octokit.rest.repos.get({ owner, repo });
await assert.rejects(
  octokit.rest.repos.get({ owner, repo, headers: { "if-none-match": fresh.headers.etag } }),
  (e) => e.name === "HttpError" && e.status === 304,
);

await assert.rejects(
  octokit.rest.repos.get({ owner, repo: "missing" }),
  (e) => e.name === "HttpError" && e.status === 404,
);

console.log(JSON.stringify({ issues: issues.length, before, after, ok: true }));
