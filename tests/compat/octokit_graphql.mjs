// @octokit/graphql and the graphql method of @octokit/rest, unmodified, against a
// ghmesh node (GHMESH_BASE) backed by the fake GitHub's GraphQL endpoint. Any failure
// throws and the process exits non-zero. Prints one JSON line of what it saw.
import assert from "node:assert/strict";
import { graphql } from "@octokit/graphql";
import { Octokit } from "@octokit/rest";

const base = process.env.GHMESH_BASE;
const as = (token) => graphql.defaults({ baseUrl: base, headers: { authorization: `token ${token}` } });
const gql = as("ghp_graphql");
const owner = "acme";
const name = "widgets";

// A query twice, then spelled another way: one entry (the test counts GitHub's calls).
const q = `query Repo($owner: String!, $name: String!) {
  repository(owner: $owner, name: $name) { nameWithOwner stargazerCount }
}`;
const first = await gql(q, { owner, name });
assert.equal(first.repository.nameWithOwner, "acme/widgets");
assert.deepEqual(await gql(q, { owner, name }), first);
const respelled = "# the same\nquery Repo($owner:String!,$name:String!){repository(owner:$owner,name:$name){nameWithOwner,stargazerCount}}";
assert.deepEqual(await gql(respelled, { name, owner }), first);

// A connection, page by page through its cursors.
const page = `query Issues($owner: String!, $name: String!, $after: String) {
  repository(owner: $owner, name: $name) {
    issues(first: 100, after: $after) { nodes { number } pageInfo { hasNextPage endCursor } }
  }
}`;
const numbers = [];
let after = null;
for (;;) {
  const { repository } = await gql(page, { owner, name, after });
  numbers.push(...repository.issues.nodes.map((n) => n.number));
  if (!repository.issues.pageInfo.hasNextPage) break;
  after = repository.issues.pageInfo.endCursor;
}
assert.equal(numbers.length, 250);
assert.equal(new Set(numbers).size, 250);

// A mutation through octokit's own graphql: passed through, and later reads see it.
const octokit = new Octokit({ baseUrl: base, auth: "ghp_graphql" });
const comments = `query { repository(owner: "acme", name: "widgets") { issue(number: 3) { id comments { totalCount } } } }`;
const before = (await octokit.graphql(comments)).repository.issue;
assert.equal(before.comments.totalCount, 0);
const added = await octokit.graphql(
  "mutation($id: ID!, $body: String!) { addComment(input: {subjectId: $id, body: $body}) { commentEdge { node { body } } } }",
  { id: before.id, body: "hello from octokit" },
);
assert.equal(added.addComment.commentEdge.node.body, "hello from octokit");
const afterWrite = (await octokit.graphql(comments)).repository.issue;
assert.equal(afterWrite.comments.totalCount, 1, "the read after the mutation sees it");

// The viewer under two tokens: each sees its own.
const alice = (await as("ghp_alice")(`{ viewer { login } }`)).viewer.login;
const bob = (await as("ghp_bob")(`{ viewer { login } }`)).viewer.login;
assert.notEqual(alice, bob);

// GitHub's errors reach the client as octokit's GraphqlResponseError.
await assert.rejects(
  gql(`{ repository(owner: "acme", name: "missing") { name } }`),
  (e) => e.name === "GraphqlResponseError" && e.errors[0].type === "NOT_FOUND",
);

console.log(JSON.stringify({ pages: numbers.length, alice, bob, ok: true }));
