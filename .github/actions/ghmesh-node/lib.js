'use strict';
// Helpers shared by main.js and post.js. Node built-ins only: the action ships no
// node_modules and fetches nothing at run time but the ghmesh release asset.
//
// The runner's file commands and workflow commands are written exactly as
// @actions/core writes them, so that the action behaves like any toolkit action.

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const os = require('os');
const path = require('path');

// ---------------------------------------------------------------- workflow commands

function escapeData(s) {
  return String(s).replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

function command(name, message) {
  process.stdout.write(`::${name}::${escapeData(message)}${os.EOL}`);
}

const info = (message) => process.stdout.write(`${message}${os.EOL}`);
const warning = (message) => command('warning', message);
const error = (message) => command('error', message);
const startGroup = (name) => command('group', name);
const endGroup = () => command('endgroup', '');

/** Masks a value in the job log (each line of it, as the runner matches lines). */
function setSecret(value) {
  for (const line of String(value).split(/\r?\n/)) {
    if (line.trim()) command('add-mask', line);
  }
}

/** Fails the step: one `::error::` line and exit code 1. */
function setFailed(message) {
  process.exitCode = 1;
  error(message);
}

// ---------------------------------------------------------------- inputs and file commands

/**
 * An input as @actions/core reads it: env INPUT_<NAME>, spaces to underscores, upper
 * case, dashes kept (INPUT_CACHE-DIR), trimmed.
 */
function getInput(name) {
  const value = process.env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] || '';
  return value.trim();
}

/** State saved by main (GITHUB_STATE), read back in post as env STATE_<name>. */
function getState(name) {
  return process.env[`STATE_${name}`] || '';
}

function keyValueMessage(key, value) {
  const delimiter = `ghadelimiter_${crypto.randomUUID()}`;
  const text = String(value);
  if (key.includes(delimiter) || text.includes(delimiter)) {
    throw new Error(`unexpected input: the value of ${key} contains the delimiter`);
  }
  return `${key}<<${delimiter}${os.EOL}${text}${os.EOL}${delimiter}`;
}

function fileCommand(variable, message) {
  const file = process.env[variable];
  if (!file) {
    warning(`${variable} is not set (not running on an Actions runner?): ${message.split(os.EOL)[0]}`);
    return false;
  }
  fs.appendFileSync(file, `${message}${os.EOL}`, 'utf8');
  return true;
}

const setOutput = (name, value) => fileCommand('GITHUB_OUTPUT', keyValueMessage(name, value));
const saveState = (name, value) => fileCommand('GITHUB_STATE', keyValueMessage(name, value));

/** Exports a variable to this step's later code and to every later step of the job. */
function exportVariable(name, value) {
  if (/^(GITHUB|RUNNER)_/.test(name)) {
    // The runner ignores overrides of its default variables; never pretend otherwise.
    throw new Error(`refusing to export ${name}: GitHub ignores overrides of GITHUB_* and RUNNER_* variables`);
  }
  process.env[name] = String(value);
  fileCommand('GITHUB_ENV', keyValueMessage(name, value));
}

/** Prepends a directory to PATH for later steps. */
function addPath(dir) {
  process.env.PATH = `${dir}${path.delimiter}${process.env.PATH || ''}`;
  fileCommand('GITHUB_PATH', dir);
}

/** Appends markdown to the job summary ($GITHUB_STEP_SUMMARY). */
function appendSummary(markdown) {
  return fileCommand('GITHUB_STEP_SUMMARY', markdown);
}

// ---------------------------------------------------------------- HTTP

const USER_AGENT = 'ghmesh-node-action';

/**
 * GET `url`, following up to 10 redirects (release downloads redirect to a CDN).
 * Resolves { status, headers, response } with the response stream unconsumed; the
 * request times out when the server is silent for `timeoutMs`.
 */
function get(url, { timeoutMs = 30000, redirects = 10 } = {}) {
  return new Promise((resolve, reject) => {
    let parsed;
    try {
      parsed = new URL(url);
    } catch (e) {
      reject(new Error(`invalid URL ${url}: ${e.message}`));
      return;
    }
    const client = parsed.protocol === 'https:' ? https : parsed.protocol === 'http:' ? http : null;
    if (!client) {
      reject(new Error(`unsupported URL scheme in ${url}`));
      return;
    }
    const req = client.get(parsed, { headers: { 'user-agent': USER_AGENT, accept: '*/*' } }, (res) => {
      const status = res.statusCode || 0;
      if ([301, 302, 303, 307, 308].includes(status) && res.headers.location) {
        res.resume();
        if (redirects <= 0) {
          reject(new Error(`too many redirects fetching ${url}`));
          return;
        }
        const next = new URL(res.headers.location, parsed).toString();
        get(next, { timeoutMs, redirects: redirects - 1 }).then(resolve, reject);
        return;
      }
      resolve({ status, headers: res.headers, response: res });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from ${parsed.host} within ${timeoutMs / 1000} s`)));
    req.on('error', reject);
  });
}

/** GET `url` as text. Resolves { status, body }. */
async function getText(url, options) {
  const { status, response } = await get(url, options);
  const chunks = [];
  for await (const chunk of response) chunks.push(chunk);
  return { status, body: Buffer.concat(chunks).toString('utf8') };
}

/**
 * GET `url` into `file`. Resolves the HTTP status; the file is written only for a 200
 * (any other status leaves it absent).
 */
async function download(url, file, options) {
  const { status, response } = await get(url, options);
  if (status !== 200) {
    response.resume();
    return status;
  }
  await new Promise((resolve, reject) => {
    const out = fs.createWriteStream(file, { mode: 0o600 });
    response.on('error', reject);
    out.on('error', reject);
    out.on('finish', resolve);
    response.pipe(out);
  });
  return status;
}

/** SHA-256 of a file, lower-case hex. */
function sha256File(file) {
  return new Promise((resolve, reject) => {
    const hash = crypto.createHash('sha256');
    fs.createReadStream(file)
      .on('error', reject)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/** The digest in a checksum file (`sha256sum` output: "<hex>  <name>"), or null. */
function parseChecksum(text) {
  const match = /^\s*([0-9a-fA-F]{64})\b/.exec(text);
  return match ? match[1].toLowerCase() : null;
}

// ---------------------------------------------------------------- processes and files

/** Is `pid` a live process (signal 0)? */
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The last `lines` lines of a text file ('' when it cannot be read). */
function tail(file, lines = 30) {
  try {
    const text = fs.readFileSync(file, 'utf8').trimEnd();
    return text.split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * The `public-dht` input as GHMESH_PUBLIC_DHT: `true` or `false` as given, and when empty
 * `true` on GitHub-hosted runners (RUNNER_ENVIRONMENT=github-hosted: no LAN neighbours,
 * no inbound connections, only the public DHT can bring runners together) and `false`
 * elsewhere. Throws on anything else.
 */
function publicDht(input, runnerEnvironment) {
  const v = String(input || '').trim().toLowerCase();
  if (v === '') return runnerEnvironment === 'github-hosted' ? 'true' : 'false';
  if (v === 'true' || v === 'false') return v;
  throw new Error(`bad "public-dht" input '${input}': use true, false or leave it empty`);
}

module.exports = {
  addPath,
  alive,
  appendSummary,
  download,
  endGroup,
  error,
  exportVariable,
  getInput,
  getState,
  getText,
  info,
  parseChecksum,
  publicDht,
  saveState,
  setFailed,
  setOutput,
  setSecret,
  sha256File,
  sleep,
  startGroup,
  tail,
  warning,
};
