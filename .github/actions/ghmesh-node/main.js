'use strict';
// main: install ghmesh (release asset, checksum-verified, kept in the tool cache; cargo
// install only when the release has no asset for this runner), start `ghmesh node`
// detached, wait for its ready line, and hand its address to later steps.

const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const lib = require('./lib');

const DEFAULT_API = '127.0.0.1:7711';
const DEFAULT_RELEASE_REPOSITORY = 'ghmesh/ghmesh';
const READY_TIMEOUT_MS = Number(process.env.GHMESH_READY_TIMEOUT_SECONDS || 30) * 1000;

class Failure extends Error {}

/** The release asset for this runner: ghmesh-<os>-<arch>, e.g. ghmesh-linux-x86_64. */
function platform() {
  const runnerOs = process.env.RUNNER_OS || { linux: 'Linux', darwin: 'macOS', win32: 'Windows' }[process.platform];
  const runnerArch = process.env.RUNNER_ARCH || { x64: 'X64', arm64: 'ARM64' }[process.arch] || process.arch;
  const osName = { Linux: 'linux', macOS: 'macos' }[runnerOs];
  if (!osName) {
    throw new Failure(`ghmesh runs on Linux and macOS runners, not on ${runnerOs || 'this OS'}`);
  }
  const arch = { X64: 'x86_64', ARM64: 'aarch64' }[runnerArch] || runnerArch.toLowerCase();
  return { asset: `ghmesh-${osName}-${arch}`, cacheArch: runnerArch.toLowerCase() };
}

/** Where the assets of `version` are: $GHMESH_RELEASE_BASE_URL, else the action's own release. */
function releaseBase(repository, version) {
  const override = process.env.GHMESH_RELEASE_BASE_URL;
  if (override) return override.replace(/\/+$/, '');
  const server = (process.env.GITHUB_SERVER_URL || 'https://github.com').replace(/\/+$/, '');
  return version === 'latest'
    ? `${server}/${repository}/releases/latest/download`
    : `${server}/${repository}/releases/download/${encodeURIComponent(version)}`;
}

const pathSafe = (s) => s.replace(/[^A-Za-z0-9._+-]/g, '_').replace(/^\.+/, '_');

/**
 * Installs the binary and returns its path. Kept under
 * $RUNNER_TOOL_CACHE/ghmesh/<version>/<arch>/ghmesh with its verified digest beside it;
 * a cached copy is reused when its digest still matches (never for "latest", whose
 * content changes with each release).
 */
async function install(repository, version) {
  const { asset, cacheArch } = platform();
  const toolCache = process.env.RUNNER_TOOL_CACHE || path.join(process.env.RUNNER_TEMP || os.tmpdir(), 'tool-cache');
  const dir = path.join(toolCache, 'ghmesh', pathSafe(version), cacheArch);
  const binary = path.join(dir, 'ghmesh');
  const digestFile = path.join(dir, 'ghmesh.sha256');
  fs.mkdirSync(dir, { recursive: true });

  if (version !== 'latest' && fs.existsSync(binary) && fs.existsSync(digestFile)) {
    const want = lib.parseChecksum(fs.readFileSync(digestFile, 'utf8'));
    if (want && want === (await lib.sha256File(binary))) {
      lib.info(`Using ghmesh ${version} from the tool cache: ${binary}`);
      return binary;
    }
    lib.warning(`the cached ghmesh at ${binary} does not match its checksum; downloading it again`);
  }

  const base = releaseBase(repository, version);
  const url = `${base}/${asset}`;
  const partial = path.join(dir, `.ghmesh.${process.pid}.partial`);
  lib.info(`Downloading ${url}`);
  let status;
  try {
    status = await lib.download(url, partial, { timeoutMs: 60000 });
  } catch (e) {
    fs.rmSync(partial, { force: true });
    throw new Failure(`cannot download ${url}: ${e.message}`);
  }
  if (status === 404) return cargoInstall(repository, version, asset, url, toolCache);
  if (status !== 200) throw new Failure(`cannot download ${url}: HTTP ${status}`);

  try {
    let checksum;
    try {
      checksum = await lib.getText(`${url}.sha256`, { timeoutMs: 30000 });
    } catch (e) {
      throw new Failure(`cannot download the checksum ${url}.sha256: ${e.message}`);
    }
    if (checksum.status !== 200) {
      throw new Failure(`cannot download the checksum ${url}.sha256: HTTP ${checksum.status}; refusing to run an unverified binary`);
    }
    const want = lib.parseChecksum(checksum.body);
    if (!want) throw new Failure(`${url}.sha256 holds no SHA-256 digest; refusing to run an unverified binary`);
    const got = await lib.sha256File(partial);
    if (got !== want) {
      throw new Failure(
        `checksum mismatch for ${asset} ${version}: ${url}.sha256 says ${want}, the download is ${got}. ` +
          'The download is corrupt or was tampered with; nothing was started.',
      );
    }
    fs.chmodSync(partial, 0o755);
    fs.renameSync(partial, binary);
    fs.writeFileSync(digestFile, `${want}  ${asset}\n`);
  } finally {
    fs.rmSync(partial, { force: true });
  }
  lib.info(`Verified SHA-256 ${lib.parseChecksum(fs.readFileSync(digestFile, 'utf8'))}; cached at ${binary}`);
  return binary;
}

/** No asset for this runner or version: build from the tagged source, with a warning. */
function cargoInstall(repository, version, asset, url, toolCache) {
  lib.warning(
    `no release asset ${asset} for ghmesh ${version} (404 at ${url}); building it with cargo install, ` +
      'which takes 10 minutes or more. Pin the action to a release tag (…/ghmesh-node@vX.Y.Z) to download a prebuilt binary.',
  );
  const root = path.join(toolCache, 'ghmesh', pathSafe(version), 'cargo');
  const server = (process.env.GITHUB_SERVER_URL || 'https://github.com').replace(/\/+$/, '');
  const args = ['install', '--locked', '--root', root, '--git', `${server}/${repository}`];
  if (/^[0-9a-f]{40}$/.test(version)) args.push('--rev', version);
  else if (/^v\d/.test(version)) args.push('--tag', version);
  else if (version !== 'latest') args.push('--branch', version);
  args.push('ghmesh-node');
  lib.info(`cargo ${args.join(' ')}`);
  const result = spawnSync('cargo', args, { stdio: 'inherit' });
  if (result.error && result.error.code === 'ENOENT') {
    throw new Failure(
      `no release asset ${asset} for ghmesh ${version} (404 at ${url}), and cargo is not installed to build it. ` +
        'Use a released version (input "version", e.g. v0.1.0) or install a Rust toolchain first.',
    );
  }
  if (result.error) throw new Failure(`cargo install failed to start: ${result.error.message}`);
  if (result.status !== 0) throw new Failure(`cargo install of ghmesh ${version} failed (exit ${result.status}); see the log above`);
  return path.join(root, 'bin', 'ghmesh');
}

/** http://<addr> for the API's bound address; a wildcard bind is reached on loopback. */
function reachable(addr) {
  return addr.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
}

/** The ready line, once the node has printed it to its stdout file. */
function readReady(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const value = JSON.parse(line);
      if (value && value.event === 'ready') return value;
    } catch {
      // not JSON: keep looking
    }
  }
  return null;
}

function readFileTrim(file) {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * Starts `ghmesh node` detached, through a small sh wrapper that records the node's pid
 * and, once it exits, its exit status (post reports it; a detached process's status is
 * otherwise lost). Secrets travel in the environment only, never in argv.
 */
async function start(binary, settings) {
  const runDir = fs.mkdtempSync(path.join(process.env.RUNNER_TEMP || os.tmpdir(), 'ghmesh-'));
  const files = {
    stdout: path.join(runDir, 'node.stdout'),
    log: path.join(runDir, 'node.log'),
    pid: path.join(runDir, 'node.pid'),
    exit: path.join(runDir, 'node.exit'),
  };
  fs.mkdirSync(settings.dataDir, { recursive: true });

  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(INPUT|STATE)_/.test(key)) env[key] = value;
  }
  const set = (key, value) => {
    if (value) env[key] = value;
  };
  set('GHMESH_SECRET', settings.secret);
  set('GHMESH_REPO', settings.repo);
  set('GHMESH_BOOTSTRAP', settings.bootstrap);
  env.GHMESH_PUBLIC_DHT = settings.publicDht;
  set('GH_TOKEN', settings.upstreamToken);
  env.GHMESH_API = settings.api;

  // $1 pid file, $2 exit file, then the command. The node is the wrapper's child, so its
  // status can be collected; the wrapper itself does nothing else.
  const wrapper =
    'pidf=$1; exitf=$2; shift 2; "$@" & pid=$!; echo "$pid" > "$pidf"; ' +
    'wait "$pid"; code=$?; echo "$code" > "$exitf.tmp" && mv "$exitf.tmp" "$exitf"';
  const stdout = fs.openSync(files.stdout, 'w', 0o600);
  const stderr = fs.openSync(files.log, 'w', 0o600);
  let child;
  try {
    child = spawn(
      'sh',
      ['-c', wrapper, 'ghmesh-node-action', files.pid, files.exit, binary, 'node', '--data-dir', settings.dataDir],
      { cwd: runDir, detached: true, stdio: ['ignore', stdout, stderr], env },
    );
  } finally {
    fs.closeSync(stdout);
    fs.closeSync(stderr);
  }
  let spawnError = null;
  child.on('error', (e) => {
    spawnError = e;
  });
  child.unref();

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const ready = readReady(files.stdout);
    const pid = Number(readFileTrim(files.pid));
    if (ready && pid) return { ready, pid, files };
    if (spawnError) throw new Failure(`cannot start ghmesh (through sh): ${spawnError.message}`);
    const exit = readFileTrim(files.exit);
    if (exit) {
      throw new Failure(
        `ghmesh node exited with code ${exit} before it was ready. Its last log lines:\n${lib.tail(files.log) || '(empty)'}`,
      );
    }
    if (Date.now() > deadline) {
      if (pid) stopQuietly(pid);
      throw new Failure(
        `ghmesh node printed no ready line within ${READY_TIMEOUT_MS / 1000} s; it was stopped. Its last log lines:\n` +
          `${lib.tail(files.log) || '(empty)'}`,
      );
    }
    await lib.sleep(100);
  }
}

function stopQuietly(pid) {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function run() {
  const secret = lib.getInput('secret');
  const upstreamToken = lib.getInput('upstream-token');
  if (secret) lib.setSecret(secret);
  if (upstreamToken) lib.setSecret(upstreamToken);

  const repository = process.env.GITHUB_ACTION_REPOSITORY || DEFAULT_RELEASE_REPOSITORY;
  const version = lib.getInput('version') || process.env.GITHUB_ACTION_REF || 'latest';
  const api = lib.getInput('api') || DEFAULT_API;
  const dataDir =
    lib.getInput('cache-dir') ||
    path.join(process.env.RUNNER_TOOL_CACHE || process.env.RUNNER_TEMP || os.tmpdir(), 'ghmesh-cache');
  if (!secret) {
    lib.warning('no "secret" input: unless GHMESH_SECRET or GH_TOKEN is set, the node runs local-only and shares nothing with other runners');
  }

  let publicDht;
  try {
    publicDht = lib.publicDht(lib.getInput('public-dht'), process.env.RUNNER_ENVIRONMENT);
  } catch (e) {
    throw new Failure(e.message);
  }

  const binary = await install(repository, version);
  const { ready, pid, files } = await start(binary, {
    secret,
    upstreamToken,
    repo: lib.getInput('repo'),
    bootstrap: lib.getInput('bootstrap'),
    publicDht,
    api,
    dataDir,
  });

  const apiAddr = reachable(String(ready.api || api));
  lib.saveState('pid', pid);
  lib.saveState('api', apiAddr);
  lib.saveState('exit-file', files.exit);
  lib.saveState('log-file', files.log);
  lib.setOutput('api-url', `http://${apiAddr}`);
  lib.setOutput('peer-id', ready.peer_id || '');
  lib.exportVariable('GHMESH_API', apiAddr);
  lib.addPath(path.dirname(binary));
  lib.info(`ghmesh node ${ready.peer_id} is ready: API http://${apiAddr}, listening on ${(ready.listen || []).join(', ')}`);
  lib.info(`Its log is ${files.log}; post stops it and writes the job summary.`);
}

run().catch((e) => {
  lib.setFailed(e instanceof Failure ? e.message : `ghmesh action failed: ${e.stack || e}`);
});
