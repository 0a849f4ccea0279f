'use strict';
// Tests of the ghmesh-node action: main.js and post.js run as the runner runs them (a
// child process, inputs as INPUT_* variables, file commands in temporary files) against
// the real binary, downloaded from a fake release server on loopback. Nothing leaves the
// machine: the node listens on 127.0.0.1, mDNS is off and its upstream is a fake GitHub
// on loopback.
//
// Run: node --test .github/actions/ghmesh-node/test/action.test.js   (needs target/debug/ghmesh, or
// GHMESH_BIN=/path/to/ghmesh)

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const ACTION_DIR = path.resolve(__dirname, '..');
const REPO_ROOT = path.resolve(ACTION_DIR, '..', '..', '..');
const BINARY = process.env.GHMESH_BIN || path.join(REPO_ROOT, 'target', 'debug', 'ghmesh');
const ASSET = 'ghmesh-linux-x86_64';
const VERSION = 'v0.0.0-test';
const SECRET = `fleet-secret-${crypto.randomBytes(8).toString('hex')}`;

let server;
let serverUrl;
let upstream;
let upstreamUrl;
const upstreamRequests = [];
let binaryDigest;
const requests = [];
const spawnedPids = new Set();
const tmpDirs = [];

// ---------------------------------------------------------------- helpers

/** A fake GitHub: GET /repos/octo/fleet is a 200 with an ETag and rate-limit headers. */
function startUpstream() {
  const srv = http.createServer((req, res) => {
    upstreamRequests.push(`${req.method} ${req.url}`);
    if (req.method === 'GET' && req.url === '/repos/octo/fleet') {
      res.writeHead(200, {
        'content-type': 'application/json; charset=utf-8',
        etag: '"fleet-v1"',
        'x-ratelimit-limit': '5000',
        'x-ratelimit-remaining': '4321',
        'x-ratelimit-reset': String(Math.floor(Date.now() / 1000) + 3600),
      });
      res.end(JSON.stringify({ full_name: 'octo/fleet', private: false }));
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: 'Not Found' }));
    }
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

/** The fake release: /<release>/<asset> and /<release>/<asset>.sha256. */
function startReleaseServer() {
  const srv = http.createServer((req, res) => {
    requests.push(req.url);
    const [, release, name] = req.url.split('/');
    const send = (status, body, type = 'text/plain') => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    if (release === 'redirect' && name === ASSET) {
      // GitHub answers release downloads with a redirect to its CDN.
      res.writeHead(302, { location: `/good/${ASSET}` });
      res.end();
    } else if (['good', 'redirect', 'bad'].includes(release) && name === ASSET) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      fs.createReadStream(BINARY).pipe(res);
    } else if (['good', 'redirect'].includes(release) && name === `${ASSET}.sha256`) {
      send(200, `${binaryDigest}  ${ASSET}\n`);
    } else if (release === 'bad' && name === `${ASSET}.sha256`) {
      send(200, `${'0'.repeat(64)}  ${ASSET}\n`);
    } else {
      send(404, 'Not Found');
    }
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

/** A temporary runner: its directories, file-command files and environment. */
function runner(release, inputs = {}) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ghmesh-action-test-'));
  tmpDirs.push(root);
  const dir = (name) => {
    const p = path.join(root, name);
    fs.mkdirSync(p, { recursive: true });
    return p;
  };
  const file = (name) => {
    const p = path.join(root, name);
    fs.writeFileSync(p, '');
    return p;
  };
  const env = {
    PATH: process.env.PATH,
    HOME: dir('home'),
    XDG_CACHE_HOME: dir('xdg-cache'),
    RUNNER_OS: 'Linux',
    RUNNER_ARCH: 'X64',
    RUNNER_TEMP: dir('runner-temp'),
    RUNNER_TOOL_CACHE: dir('tool-cache'),
    // Never github-hosted by inheritance: that would turn the public DHT on.
    RUNNER_ENVIRONMENT: 'self-hosted',
    GITHUB_OUTPUT: file('output'),
    GITHUB_ENV: file('env'),
    GITHUB_STATE: file('state'),
    GITHUB_PATH: file('path'),
    GITHUB_STEP_SUMMARY: file('summary.md'),
    GITHUB_REPOSITORY: 'octo/fleet',
    GITHUB_ACTION_REPOSITORY: 'ghmesh/ghmesh',
    GITHUB_ACTION_REF: '',
    GHMESH_RELEASE_BASE_URL: `${serverUrl}/${release}`,
    // Loopback only: no mDNS, peers on 127.0.0.1, the fake GitHub upstream.
    GHMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
    GHMESH_MDNS: 'false',
    GHMESH_UPSTREAM: upstreamUrl,
    GHMESH_UPSTREAM_TIMEOUT: '5',
    RUST_LOG: 'info',
    'INPUT_SECRET': SECRET,
    'INPUT_REPO': '',
    'INPUT_BOOTSTRAP': '',
    'INPUT_API': '127.0.0.1:0',
    'INPUT_VERSION': VERSION,
    'INPUT_CACHE-DIR': path.join(root, 'data'),
    'INPUT_UPSTREAM-TOKEN': '',
    'INPUT_PUBLIC-DHT': '',
  };
  for (const [name, value] of Object.entries(inputs)) env[`INPUT_${name.toUpperCase()}`] = value;
  return { root, env };
}

/** Runs one of the action's scripts as the runner does. Resolves { code, stdout, stderr }. */
function runScript(script, env, timeout = 60000) {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ACTION_DIR, script)], { env, timeout }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

/** Parses a file-command file (NAME=value lines and NAME<<DELIM heredocs) into a map. */
function fileCommands(file) {
  const lines = fs.readFileSync(file, 'utf8').split(/\r?\n/);
  const values = {};
  for (let i = 0; i < lines.length; i++) {
    const heredoc = /^([^=<]+)<<(.+)$/.exec(lines[i]);
    if (heredoc) {
      const body = [];
      for (i++; i < lines.length && lines[i] !== heredoc[2]; i++) body.push(lines[i]);
      values[heredoc[1]] = body.join('\n');
    } else if (lines[i].includes('=')) {
      const at = lines[i].indexOf('=');
      values[lines[i].slice(0, at)] = lines[i].slice(at + 1);
    }
  }
  return values;
}

/** The STATE_* environment post gets from main's GITHUB_STATE. */
function stateEnv(env) {
  const state = {};
  for (const [name, value] of Object.entries(fileCommands(env.GITHUB_STATE))) state[`STATE_${name}`] = value;
  return state;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid, ms) {
  const deadline = Date.now() + ms;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return !alive(pid);
}

function getJson(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode, headers: res.headers, body: JSON.parse(body) });
          } catch {
            resolve({ status: res.statusCode, headers: res.headers, body });
          }
        });
      })
      .on('error', reject)
      .setTimeout(20000, function onTimeout() {
        this.destroy(new Error(`timeout: ${url}`));
      });
  });
}

/** Pids of ghmesh processes whose command line mentions `needle` (Linux /proc). */
function processesMentioning(needle) {
  const found = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(needle)) found.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/** The summary table's rows: { 'served locally': '3', … }. */
function summaryRows(markdown) {
  const rows = {};
  for (const m of markdown.matchAll(/^\| ([^|]+?) \| ([^|]+?) \|$/gm)) {
    if (m[1] !== 'metric' && !m[1].startsWith('---')) rows[m[1]] = m[2];
  }
  return rows;
}

// ---------------------------------------------------------------- setup

const MISSING_BINARY = fs.existsSync(BINARY)
  ? null
  : `the ghmesh binary is missing at ${BINARY}: build it first (cargo build -p ghmesh-node --bin ghmesh; ` +
    '.ci/run does) or point GHMESH_BIN at one';

test("the job summary shows the fleet's remaining for every budget the job spent", () => {
  const { summary } = require('../post');
  const text = summary({
    peer_id: 'p',
    rate_limits: [
      { budget: 'a7af0a02fba3632ff579a7b943090296', resource: 'core', limit: 5000, remaining: 12, used: 4988, reset: 1700000000, held_until: null, source: 'fleet' },
      { budget: 'f150af595306e6c2779984a86386df79', resource: 'graphql', limit: 5000, remaining: 0, used: 5000, reset: 1700000000, held_until: 1700000000, source: 'local' },
    ],
  });
  assert.match(text, /^\| `a7af0a02fba3` \| core \| 12 \| 5000 \| 2023-11-14T22:13:20.000Z \| a member \|$/m);
  assert.match(text, /^\| `f150af595306` \| graphql \| 0 \| 5000 \| .* \| this node, held \|$/m);
  assert.doesNotMatch(text, /a7af0a02fba3632f/, 'ids are shortened');
});

test('public-dht is on by default on GitHub-hosted runners only, and says what is wrong', () => {
  const { publicDht } = require('../lib');
  assert.equal(publicDht('', 'github-hosted'), 'true');
  assert.equal(publicDht('', 'self-hosted'), 'false');
  assert.equal(publicDht('', undefined), 'false');
  assert.equal(publicDht('false', 'github-hosted'), 'false');
  assert.equal(publicDht(' TRUE ', 'self-hosted'), 'true');
  assert.throws(() => publicDht('yes please', ''), /bad "public-dht" input 'yes please': use true, false/);
});

test('the ghmesh binary is built', () => {
  assert.equal(MISSING_BINARY, null, MISSING_BINARY);
});

before(async () => {
  if (MISSING_BINARY) return;
  binaryDigest = crypto.createHash('sha256').update(fs.readFileSync(BINARY)).digest('hex');
  upstream = await startUpstream();
  upstreamUrl = `http://127.0.0.1:${upstream.address().port}`;
  server = await startReleaseServer();
  serverUrl = `http://127.0.0.1:${server.address().port}`;
});

after(() => {
  for (const pid of spawnedPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (server) server.close();
  if (upstream) upstream.close();
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------- cases

describe('ghmesh-node action', { timeout: 120000, skip: MISSING_BINARY ? 'no ghmesh binary' : false }, () => {
  test('main downloads and verifies the release, starts a node, sets outputs; post summarises and stops it', async () => {
    const { env } = runner('redirect');
    const main = await runScript('main.js', env);
    assert.equal(main.code, 0, `main failed:\n${main.stdout}\n${main.stderr}`);
    assert.ok(requests.includes(`/redirect/${ASSET}`) && requests.includes(`/good/${ASSET}`), 'followed the redirect');

    const state = stateEnv(env);
    const pid = Number(state.STATE_pid);
    assert.ok(pid > 0, 'main saved the pid');
    spawnedPids.add(pid);
    assert.ok(alive(pid), 'the node runs after main exits');

    // The secret is masked, and never on a command line.
    assert.ok(main.stdout.includes(`::add-mask::${SECRET}`), 'the secret is masked');
    const ppid = Number(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
    for (const p of [pid, ppid]) {
      assert.ok(!fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(SECRET), `the secret is not in the argv of ${p}`);
    }

    // Outputs: the real bound API address and the peer id.
    const outputs = fileCommands(env.GITHUB_OUTPUT);
    assert.match(outputs['api-url'], /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(outputs['api-url'], 'http://127.0.0.1:0', 'the real port, not the requested 0');
    assert.match(outputs['peer-id'], /^12D3Koo\w+$/);
    const exported = fileCommands(env.GITHUB_ENV);
    assert.equal(`http://${exported.GHMESH_API}`, outputs['api-url']);
    assert.ok(!fs.readFileSync(env.GITHUB_ENV, 'utf8').includes('GITHUB_API_URL'), 'GITHUB_API_URL is never exported');

    // The verified binary is kept in the tool cache and put on PATH.
    const cached = path.join(env.RUNNER_TOOL_CACHE, 'ghmesh', VERSION, 'x64', 'ghmesh');
    assert.equal(crypto.createHash('sha256').update(fs.readFileSync(cached)).digest('hex'), binaryDigest);
    assert.equal(fs.readFileSync(env.GITHUB_PATH, 'utf8').trim(), path.dirname(cached));

    // The node serves: one read from upstream, then the same read from its store.
    const api = outputs['api-url'];
    const first = await getJson(`${api}/repos/octo/fleet`);
    assert.equal(first.status, 200);
    assert.equal(first.headers['x-ghmesh-cache'], 'miss');
    const second = await getJson(`${api}/repos/octo/fleet`);
    assert.equal(second.headers['x-ghmesh-cache'], 'hit');
    assert.equal(second.body.full_name, 'octo/fleet');
    assert.deepEqual(upstreamRequests.filter((r) => r.endsWith('/repos/octo/fleet')), ['GET /repos/octo/fleet']);
    const health = await getJson(`${api}/_ghmesh/health`);
    assert.equal(health.status, 200);
    const { body: stats } = await getJson(`${api}/_ghmesh/stats`);
    assert.equal(stats.peer_id, outputs['peer-id']);
    assert.equal(stats.public_dht, false, 'a self-hosted runner leaves the public DHT alone');

    const post = await runScript('post.js', { ...env, ...state });
    assert.equal(post.code, 0, `post failed:\n${post.stdout}\n${post.stderr}`);
    assert.ok(await waitGone(pid, 5000), 'the node has exited');
    assert.match(post.stdout, /ghmesh stopped cleanly \(exit code 0\)/);
    assert.equal(fs.readFileSync(state['STATE_exit-file'], 'utf8').trim(), '0', 'the node exited 0');

    const summaryText = fs.readFileSync(env.GITHUB_STEP_SUMMARY, 'utf8');
    const rows = summaryRows(summaryText);
    // Anonymous reads spend no budget the fleet can share (GitHub counts them per
    // address): the ledger has nothing, and the summary no budget table.
    assert.deepEqual(stats.rate_limits, []);
    assert.doesNotMatch(summaryText, /rate-limit budget/);
    const n = (v) => (typeof v === 'number' ? v : 0);
    const requestsServed =
      n(stats.hits) + n(stats.peer_hits) + n(stats.misses) + n(stats.revalidated) + n(stats.coalesced) + n(stats.stale_served) + n(stats.bypass);
    assert.ok(requestsServed >= 2 && stats.hits >= 1 && stats.upstream_calls >= 1, `the reads were counted: ${JSON.stringify(stats)}`);
    assert.equal(stats.rate_limit.remaining, 4321, 'the rate limit seen upstream');
    assert.deepEqual(rows, {
      requests: String(requestsServed),
      'served locally': String(n(stats.hits)),
      'from peers': String(n(stats.peer_hits)),
      coalesced: String(n(stats.coalesced)),
      'revalidated for free': String(n(stats.revalidated)),
      'upstream calls': String(n(stats.upstream_calls)),
      'calls saved': String(n(stats.api_calls_saved)),
      'rate-limit remaining': stats.rate_limit && typeof stats.rate_limit.remaining === 'number' ? String(stats.rate_limit.remaining) : 'n/a',
      members: String(typeof stats.members === 'number' ? stats.members : n(stats.connected_peers)),
    });
  });

  test('a second job reuses the verified binary from the tool cache', async () => {
    const { env } = runner('good');
    const first = await runScript('main.js', env);
    assert.equal(first.code, 0, `main failed:\n${first.stdout}\n${first.stderr}`);
    const firstPid = Number(stateEnv(env).STATE_pid);
    spawnedPids.add(firstPid);
    const post = await runScript('post.js', { ...env, ...stateEnv(env) });
    assert.equal(post.code, 0);
    assert.ok(await waitGone(firstPid, 5000));

    // Same tool cache, fresh job files; the release server now has nothing.
    const second = runner('gone');
    second.env.RUNNER_TOOL_CACHE = env.RUNNER_TOOL_CACHE;
    second.env['INPUT_CACHE-DIR'] = env['INPUT_CACHE-DIR'];
    const again = await runScript('main.js', second.env);
    assert.equal(again.code, 0, `main failed:\n${again.stdout}\n${again.stderr}`);
    assert.match(again.stdout, /from the tool cache/);
    assert.ok(!requests.some((r) => r.startsWith('/gone/')), 'nothing was downloaded');
    const state = stateEnv(second.env);
    spawnedPids.add(Number(state.STATE_pid));
    const outputs = fileCommands(second.env.GITHUB_OUTPUT);
    assert.equal(outputs['peer-id'], fileCommands(env.GITHUB_OUTPUT)['peer-id'], 'same data dir, same peer id');
    const stop = await runScript('post.js', { ...second.env, ...state });
    assert.equal(stop.code, 0);
    assert.ok(await waitGone(Number(state.STATE_pid), 5000));
  });

  test('on a GitHub-hosted runner the node joins the public DHT; a bad public-dht input starts nothing', async () => {
    const { env } = runner('good');
    env.RUNNER_ENVIRONMENT = 'github-hosted';
    // Nothing leaves the machine: the "public DHT" is a closed port on loopback.
    env.GHMESH_PUBLIC_BOOTSTRAP = '/ip4/127.0.0.1/tcp/9/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN';
    const main = await runScript('main.js', env);
    assert.equal(main.code, 0, `main failed:\n${main.stdout}\n${main.stderr}`);
    const state = stateEnv(env);
    spawnedPids.add(Number(state.STATE_pid));
    const api = fileCommands(env.GITHUB_OUTPUT)['api-url'];
    const { body: stats } = await getJson(`${api}/_ghmesh/stats`);
    assert.equal(stats.public_dht, true);
    const stop = await runScript('post.js', { ...env, ...state });
    assert.equal(stop.code, 0);
    assert.ok(await waitGone(Number(state.STATE_pid), 5000));

    const bad = runner('good', { 'public-dht': 'sometimes' });
    const refused = await runScript('main.js', bad.env);
    assert.equal(refused.code, 1);
    assert.match(refused.stdout, /^::error::bad "public-dht" input 'sometimes': use true, false or leave it empty/m);
    assert.equal(fs.readFileSync(bad.env.GITHUB_STATE, 'utf8'), '', 'nothing started');
  });

  test('a checksum mismatch fails the step with a clear message and starts nothing', async () => {
    const { env, root } = runner('bad');
    const main = await runScript('main.js', env);
    assert.equal(main.code, 1);
    assert.match(main.stdout, /^::error::checksum mismatch for ghmesh-linux-x86_64 v0\.0\.0-test: .*nothing was started/m);
    assert.equal(fs.readFileSync(env.GITHUB_STATE, 'utf8'), '', 'no pid saved');
    assert.equal(fs.readFileSync(env.GITHUB_OUTPUT, 'utf8'), '', 'no outputs');
    assert.equal(fs.readFileSync(env.GITHUB_ENV, 'utf8'), '', 'nothing exported');
    assert.deepEqual(fs.readdirSync(env.RUNNER_TEMP), [], 'no node run directory');
    const cacheDir = path.join(env.RUNNER_TOOL_CACHE, 'ghmesh', VERSION, 'x64');
    assert.deepEqual(fs.readdirSync(cacheDir), [], 'the bad download is not kept');
    assert.deepEqual(processesMentioning(root), [], 'no process was started');

    const post = await runScript('post.js', { ...env, ...stateEnv(env) });
    assert.equal(post.code, 0);
    assert.match(post.stdout, /nothing to report or stop/);
  });

  test('no asset and no cargo fails with a clear message', async () => {
    const { env } = runner('missing');
    const emptyBin = fs.mkdtempSync(path.join(os.tmpdir(), 'ghmesh-action-nopath-'));
    tmpDirs.push(emptyBin);
    env.PATH = emptyBin;
    const main = await runScript('main.js', env);
    assert.equal(main.code, 1);
    assert.match(main.stdout, /^::warning::no release asset ghmesh-linux-x86_64 for ghmesh v0\.0\.0-test \(404/m);
    assert.match(main.stdout, /^::error::no release asset .* and cargo is not installed to build it/m);
    assert.equal(fs.readFileSync(env.GITHUB_STATE, 'utf8'), '');
  });

  test('a node that cannot start fails the step with its exit code and log', async () => {
    const { env } = runner('good', { api: 'not-an-address' });
    const main = await runScript('main.js', env);
    assert.equal(main.code, 1, main.stdout);
    assert.match(main.stdout, /^::error::ghmesh node exited with code 2 before it was ready/m);
    assert.equal(fs.readFileSync(env.GITHUB_STATE, 'utf8'), '');
  });
});
