// Drives the real @actions/cache against a runcache server, as actions/cache would.
// Usage: node cache-client.mjs save|restore '<json options>'
//   options: {paths: [...], key: "...", restoreKeys: [...], lookupOnly: bool, crossOs: bool}
// Server and identity come from the environment exactly as on a runner (ACTIONS_CACHE_URL,
// ACTIONS_RESULTS_URL, ACTIONS_CACHE_SERVICE_V2, ACTIONS_RUNTIME_TOKEN, GITHUB_WORKSPACE, ...).
// The last line printed is `RESULT <json>` for the test to parse; @actions/core log lines precede it.
import * as cache from '@actions/cache';

const [, , command, raw] = process.argv;
const opts = JSON.parse(raw || '{}');

async function main() {
  if (command === 'save') {
    const id = await cache.saveCache(opts.paths, opts.key, undefined, !!opts.crossOs);
    return { cacheId: id };
  }
  if (command === 'restore') {
    const matched = await cache.restoreCache(
      opts.paths, opts.key, opts.restoreKeys || [], { lookupOnly: !!opts.lookupOnly }, !!opts.crossOs);
    return { matchedKey: matched ?? null };
  }
  throw new Error(`unknown command ${command}`);
}

main().then(
  (result) => { console.log(`RESULT ${JSON.stringify(result)}`); },
  (error) => { console.log(`RESULT ${JSON.stringify({ error: String(error && error.message || error) })}`); process.exitCode = 1; },
);
