// A Node.js host for the ionflow connector component, transpiled by jco:
//   npx jco transpile ionflow-connector.wasm --instantiation async -o generated
//   node host.mjs generated/ionflow-connector.js tenant.ionapi
// It lends the component the three capabilities of `ionflow:gateway/connector`
// (transport on fetch, an in-memory token store, log), then requests a
// backend-service token, calls users/me and reads an M3 list page by page.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { MessageChannel, Worker, receiveMessageOnPort } from 'node:worker_threads';
import { cli, clocks, io, random } from '@bytecodealliance/preview2-shim';

const [generatedJs, ionapiFile, pageSize = '100'] = process.argv.slice(2);
if (!generatedJs || !ionapiFile) {
  console.error('usage: node host.mjs GENERATED/ionflow-connector.js FILE.ionapi [PAGE_SIZE]');
  process.exit(2);
}

// transport: fetch runs on a worker; this thread waits for it synchronously.
const allowedHosts = new Set(); // the .ionapi file's hosts, filled once it is open
const signal = new Int32Array(new SharedArrayBuffer(4));
const toWorker = new MessageChannel();
const fromWorker = new MessageChannel();
const worker = new Worker(new URL('./fetch-worker.mjs', import.meta.url), {
  workerData: { requests: toWorker.port2, replies: fromWorker.port2, signal },
  transferList: [toWorker.port2, fromWorker.port2],
});
worker.unref();
let lastId = 0;

function send(request) {
  const host = new URL(request.url).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (!allowedHosts.has(host)) throw { tag: 'refused', val: `${host} is not named in the .ionapi file` };
  const id = ++lastId;
  const seen = Atomics.load(signal, 0);
  toWorker.port1.postMessage({ id, ...request });
  const deadline = Date.now() + request.timeoutMs + 1000;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0 || Atomics.wait(signal, 0, seen, left) === 'timed-out') throw { tag: 'timeout' };
    const reply = receiveMessageOnPort(fromWorker.port1)?.message;
    if (reply?.id !== id) continue; // a late reply to an exchange that already timed out
    if (reply.error) throw reply.error;
    return reply.response;
  }
}

// token-store: compare-and-swap on a version per key; versions only grow.
const entries = new Map();
const leases = new Map();
let lastVersion = 0n;
let lastLease = 0n;
const tokenStore = {
  load: (key) => entries.get(key),
  save(key, expectedVersion, value) {
    const current = entries.get(key);
    if ((current?.version ?? 0n) !== expectedVersion) throw { tag: 'conflict', val: current };
    if (value === undefined) return entries.delete(key), 0n;
    entries.set(key, { value, version: ++lastVersion });
    return lastVersion;
  },
  // One instance on one thread: a lease still held was left by a caller that
  // failed to unlock, so wait for it to expire when that is within the timeout.
  lock(key, ttlMs, timeoutMs) {
    const wait = (leases.get(key)?.expires ?? 0) - Date.now();
    if (wait > timeoutMs) throw { tag: 'lock-timeout' };
    if (wait > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, wait);
    leases.set(key, { id: ++lastLease, expires: Date.now() + ttlMs });
    return lastLease;
  },
  unlock(key, lease) {
    if (leases.get(key)?.id === lease) leases.delete(key);
  },
};

const log = (level, message) => {
  if (level === 'warn' || level === 'error') console.error(`connector ${level}: ${message}`);
};

// WASI: clocks, random and stdio from the shim, and an empty environment:
// the connector gets no variables, arguments or files from this process.
const wasi = {};
for (const [pkg, ifaces] of Object.entries({ cli, clocks, io, random })) {
  for (const [name, iface] of Object.entries(ifaces)) {
    if (!name.startsWith('_')) wasi[`wasi:${pkg}/${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`] = iface;
  }
}
wasi['wasi:cli/environment'] = { getEnvironment: () => [], getArguments: () => [], initialCwd: () => undefined };

const { instantiate } = await import(pathToFileURL(generatedJs));
// jco 1.35 looks imports up without their version (the .d.ts shows them with it).
const { auth, gateway } = await instantiate(undefined, {
  ...wasi,
  'ionflow:gateway/types': {},
  'ionflow:gateway/transport': { send },
  'ionflow:gateway/token-store': tokenStore,
  'ionflow:gateway/log': { log },
});

try {
  const connection = auth.Connection.open(readFileSync(ionapiFile, 'utf8'), {});
  const info = connection.describe();
  for (const url of [info.portalUrl, info.ionApiUrl]) allowedHosts.add(new URL(url).hostname.replace(/^\[|\]$/g, ''));

  const token = connection.token(); // the token itself is never printed
  console.log(`token: ${token.grant} grant, ${token.tokenType}, expires in ${token.expiresInSecs} s`);

  const get = (path, query = []) => {
    const response = gateway.call(connection, { method: 'get', path, query, headers: [], body: new Uint8Array() });
    const body = JSON.parse(new TextDecoder().decode(response.body));
    if (response.status !== 200) throw new Error(`${path} answered HTTP ${response.status}`);
    return body;
  };
  console.log(`whoami: ${get('ifsservice/usermgt/v2/users/me').response.userlist[0].userName} (${info.tenant})`);

  // M3 has no cursor: ask for the records from the last key seen on and drop
  // the repeated first one.
  const items = [];
  let pages = 0;
  for (let lastKey; ; ) {
    const maxrecs = Number(pageSize) + (lastKey ? 1 : 0);
    const query = [['maxrecs', String(maxrecs)], ...(lastKey ? [['ITNO', lastKey]] : [])];
    const answer = get('M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm', query);
    if (answer.nrOfFailedTransactions > 0) throw new Error(`M3: ${answer.results[0].errorMessage}`);
    const records = answer.results[0].records;
    pages += 1;
    items.push(...records.filter((r, i) => !(i === 0 && r.ITNO === lastKey)));
    if (records.length < maxrecs) break;
    lastKey = records.at(-1).ITNO;
  }
  const distinct = new Set(items.map((r) => r.ITNO)).size;
  console.log(`items: ${items.length} records (${distinct} distinct) in ${pages} pages`);
  connection.revoke();
} catch (error) {
  // The connector's errors carry the WIT `error` variant; no message holds a secret.
  const { tag, val } = error.payload ?? { tag: 'host', val: error.message };
  const detail = typeof val === 'string' ? val : JSON.stringify(val, (_, v) => (typeof v === 'bigint' ? `${v}` : v));
  console.error(`error: ${tag}: ${detail}`);
  process.exitCode = 1;
} finally {
  worker.terminate();
}
