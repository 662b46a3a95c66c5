// Drives the real GitHub REST client (@octokit/rest) against runcache with a base URL, as a
// GitHub Enterprise user would. Usage: node octokit-cache.mjs <baseUrl> <token> '<json list of calls>'
// A call is {"method": "getActionsCacheList", "params": {...}} (octokit.rest.actions.<method>),
// {"paginate": "getActionsCacheList", "params": {...}} or {"request": "GET /route", "params": {...}}.
// Prints one line: RESULT <json list of {status, data, link} or {error: {status, message}}>.
import { Octokit } from "@octokit/rest";

const [baseUrl, token, callsJson] = process.argv.slice(2);
const octokit = new Octokit({ baseUrl, auth: token, userAgent: "runcache-tests", request: { retries: 0 } });
const results = [];
for (const call of JSON.parse(callsJson)) {
  try {
    if (call.paginate) {
      const items = await octokit.paginate(octokit.rest.actions[call.paginate], call.params);
      results.push({ status: 200, data: items });
    } else {
      const fn = call.request
        ? (p) => octokit.request(call.request, p)
        : octokit.rest.actions[call.method];
      if (!fn) throw new Error(`no such octokit method: ${call.method}`);
      const res = await fn(call.params);
      results.push({ status: res.status, data: res.data ?? null, link: res.headers.link ?? null });
    }
  } catch (err) {
    results.push({ error: { status: err.status ?? 0, message: err.response?.data?.message ?? String(err) } });
  }
}
console.log("RESULT " + JSON.stringify(results));
