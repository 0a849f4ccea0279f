'use strict';
// post (always): write what the node saved to the job summary, then stop it with
// SIGTERM and wait for a clean exit, so that its store is flushed before the runner's
// end-of-job cleanup kills whatever is left.

const fs = require('fs');
const lib = require('./lib');

const STOP_TIMEOUT_MS = Number(process.env.GHMESH_STOP_TIMEOUT_SECONDS || 15) * 1000;

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** The summary rows, from a /_ghmesh/stats document. */
function rows(stats) {
  const requests =
    num(stats.hits) +
    num(stats.peer_hits) +
    num(stats.misses) +
    num(stats.revalidated) +
    num(stats.coalesced) +
    num(stats.stale_served) +
    num(stats.bypass);
  const remaining = stats.rate_limit && typeof stats.rate_limit.remaining === 'number' ? stats.rate_limit.remaining : null;
  const members = typeof stats.members === 'number' ? stats.members : num(stats.connected_peers);
  return [
    ['requests', requests],
    ['served locally', num(stats.hits)],
    ['from peers', num(stats.peer_hits)],
    ['coalesced', num(stats.coalesced)],
    ['revalidated for free', num(stats.revalidated)],
    ['upstream calls', num(stats.upstream_calls)],
    ['calls saved', num(stats.api_calls_saved)],
    ['rate-limit remaining', remaining === null ? 'n/a' : remaining],
    ['members', members],
  ];
}

/** The rate-limit budgets the node spent or heard of, with the fleet's remaining. */
function budgetLines(stats) {
  const budgets = Array.isArray(stats.rate_limits) ? stats.rate_limits : [];
  if (budgets.length === 0) return [];
  const lines = ['', '| rate-limit budget | resource | remaining | of | resets | figures |', '| --- | --- | ---: | ---: | --- | --- |'];
  for (const b of budgets) {
    const resets = new Date(num(b.reset) * 1000).toISOString();
    const whose = b.source === 'fleet' ? 'a member' : 'this node';
    const held = typeof b.held_until === 'number' ? ', held' : '';
    lines.push(`| \`${String(b.budget).slice(0, 12)}\` | ${b.resource} | ${num(b.remaining)} | ${num(b.limit)} | ${resets} | ${whose}${held} |`);
  }
  return lines;
}

function summary(stats) {
  const lines = ['### ghmesh', '', '| metric | value |', '| --- | ---: |'];
  for (const [name, value] of rows(stats)) lines.push(`| ${name} | ${value} |`);
  lines.push(...budgetLines(stats));
  const rate = typeof stats.hit_rate === 'number' ? `${Math.round(stats.hit_rate * 100)}%` : 'n/a';
  lines.push('', `Peer \`${stats.peer_id || '?'}\` · hit rate ${rate} · ${num(stats.entries)} entries in the store`, '');
  return lines.join('\n');
}

async function report(api) {
  let stats;
  try {
    const { status, body } = await lib.getText(`http://${api}/_ghmesh/stats`, { timeoutMs: 5000 });
    if (status !== 200) throw new Error(`HTTP ${status}`);
    stats = JSON.parse(body);
  } catch (e) {
    lib.warning(`cannot read the ghmesh stats at http://${api}/_ghmesh/stats: ${e.message}`);
    return;
  }
  for (const [name, value] of rows(stats)) lib.info(`${name}: ${value}`);
  lib.appendSummary(summary(stats));
}

/** SIGTERM, then wait for the wrapper to record the exit status. Resolves the status or null. */
async function stop(pid, exitFile) {
  const recorded = () => {
    try {
      return fs.readFileSync(exitFile, 'utf8').trim();
    } catch {
      return '';
    }
  };
  if (recorded()) return recorded(); // exited on its own
  try {
    process.kill(pid, 'SIGTERM');
  } catch (e) {
    if (e.code !== 'ESRCH') throw e;
  }
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const code = recorded();
    if (code) return code;
    if (!lib.alive(pid)) {
      // Gone; give the wrapper a moment to write the status.
      await lib.sleep(200);
      return recorded() || null;
    }
    await lib.sleep(100);
  }
  lib.warning(`ghmesh (pid ${pid}) did not stop within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM; killing it`);
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
  return null;
}

async function run() {
  const pid = Number(lib.getState('pid'));
  if (!pid) {
    lib.info('ghmesh was not started in this job; nothing to report or stop.');
    return;
  }
  await report(lib.getState('api'));
  const code = await stop(pid, lib.getState('exit-file'));
  const log = lib.getState('log-file');
  if (code === '0') {
    lib.info(`ghmesh stopped cleanly (exit code 0); its store is flushed.`);
  } else {
    lib.warning(`ghmesh did not stop cleanly (exit ${code === null ? 'status unknown' : `code ${code}`}); see its log below`);
  }
  const lines = lib.tail(log, 50);
  if (lines) {
    // The log is data: workflow commands in it (`::…::` lines) must not be run.
    const token = require('crypto').randomUUID();
    lib.startGroup('ghmesh log (last 50 lines)');
    lib.info(`::stop-commands::${token}`);
    lib.info(lines);
    lib.info(`::${token}::`);
    lib.endGroup();
  }
}

if (require.main === module) {
  run().catch((e) => lib.warning(`ghmesh post step: ${e.stack || e}`));
}

module.exports = { rows, summary };
