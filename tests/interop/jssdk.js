#!/usr/bin/env node
// The official EXP JavaScript SDK (npm exp-sdk 5.0.0, unmodified) against a
// local EXP server with the demo seed, driven by tests/test_interop_jssdk.py.
//
//   node jssdk.js --url URL [--timeout MS] [--hold MS] [--only REGEXP]
//
// It calls every operation the SDK's README documents, as a user, a device, a
// consumer app and a device in pairing mode, and prints one JSON object per
// check on stdout:
//
//   {"check": "<name>", "ok": true}
//   {"check": "<name>", "ok": false, "error": "<what went wrong>"}
//
// A check may add "note" (something worth knowing about how the SDK behaves).
// A failed check does not stop the run; the exit status is 1 if any failed.
//   --timeout  ms a check may take (default 5000); a hang is a failure
//   --hold     ms a broadcast collects responses (default 800)
//   --only     run only the checks whose name matches this regular expression
//
// Needs the demo seed's credentials and resources (see README.md).  It
// serves the sources of its RSS and JSON feeds itself on 127.0.0.1.

'use strict';

const http = require('http');
const EXP = require('exp-sdk');

const DEMO = {
  username: 'test@goexp.io',
  password: 'test-Password1',
  organization: 'scala',
  deviceUuid: 'test-uuid',
  deviceSecret: 'test-secret',
  consumerUuid: 'test-uuid',
  apiKey: 'test-api-key',
  location: 'demo-location',
  experience: 'demo-experience',
  thing: 'demo-thing',
};

function parseArgs(argv) {
  const options = { timeout: 5000, hold: 800, only: null };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    switch (name) {
      case '--url': options.url = value.replace(/\/+$/, ''); break;
      case '--timeout': options.timeout = Number(value); break;
      case '--hold': options.hold = Number(value); break;
      case '--only': options.only = new RegExp(value); break;
      default: throw new Error(`unknown option ${name}`);
    }
  }
  if (!options.url) throw new Error('--url is required');
  return options;
}

const OPTIONS = parseArgs(process.argv.slice(2));
const HOST = OPTIONS.url;
const HOLD = OPTIONS.hold;

// -- reporting ----------------------------------------------------------------

let failures = 0;

function describe(error) {
  if (!(error instanceof Error)) return JSON.stringify(error);
  const extra = [];
  if (error.status !== undefined && error.status !== null) extra.push(`status ${error.status}`);
  if (error.code !== undefined && error.code !== null) extra.push(`code ${error.code}`);
  const text = `${error.constructor.name}: ${error.message}`;
  return extra.length ? `${text} (${extra.join(', ')})` : text;
}

function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms ${what}`)), ms);
  });
  return Promise.race([Promise.resolve(promise), timeout]).finally(() => clearTimeout(timer));
}

// Run one check: fn may return a note (a string) to print with the result.
async function check(name, fn) {
  if (OPTIONS.only && !OPTIONS.only.test(name)) return;
  const line = { check: name };
  try {
    const note = await within(Promise.resolve().then(fn), OPTIONS.timeout, 'for the check');
    line.ok = true;
    if (typeof note === 'string') line.note = note;
  } catch (error) {
    failures += 1;
    line.ok = false;
    line.error = describe(error);
  }
  process.stdout.write(JSON.stringify(line) + '\n');
}

class CheckError extends Error {}

function expect(condition, message) {
  if (!condition) throw new CheckError(message);
}

function show(value) {
  return value === undefined ? 'undefined' : JSON.stringify(value);
}

function equal(actual, expected, what) {
  expect(show(actual) === show(expected), `${what}: expected ${show(expected)}, got ${show(actual)}`);
}

// A value an earlier check should have made.
function need(value, what) {
  if (value === undefined || value === null) throw new CheckError(`needs ${what}, which failed`);
  return value;
}

// The rejection of a promise that should fail.
async function rejection(promise, what) {
  let result;
  try {
    result = await promise;
  } catch (error) {
    return error;
  }
  throw new CheckError(`${what} succeeded with ${show(result && result.document || result)}`);
}

function unique(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// -- helpers around the SDK -------------------------------------------------

// Start an SDK instance and record its events.
function start(options) {
  const exp = EXP.start(Object.assign({ host: HOST }, options));
  const events = { update: [], online: [], offline: [], error: [] };
  const waiters = [];
  Object.keys(events).forEach((name) => exp.on(name, (value) => {
    events[name].push(value);
    waiters.filter((w) => w.name === name).forEach((w) => w.resolve(value));
  }));
  // A fatal login rejects getAuth(): keep node from calling it unhandled.
  exp.getAuth().catch(() => {});
  exp.events = events;
  exp.event = (name) => {
    if (events[name].length) return Promise.resolve(events[name][0]);
    return new Promise((resolve) => waiters.push({ name, resolve }));
  };
  return exp;
}

// A queue of the broadcasts a listener receives, in order.
function queue() {
  const items = [];
  const waiters = [];
  return {
    push(item) {
      const waiter = waiters.shift();
      if (waiter) waiter(item); else items.push(item);
    },
    next(ms, what) {
      if (items.length) return Promise.resolve(items.shift());
      let waiter;
      const arrival = new Promise((resolve) => { waiter = resolve; waiters.push(resolve); });
      return within(arrival, ms || OPTIONS.timeout, `waiting for ${what || 'a broadcast'}`)
        .catch((error) => {
          // A later broadcast goes to the next wait, not to this abandoned one.
          waiters.splice(waiters.indexOf(waiter), 1);
          throw error;
        });
    },
  };
}

// Listen on a channel (for `name`, or for every event when name is null);
// `answer(payload, message)` is the response sent back, if given.
async function listen(channel, name, answer) {
  const received = queue();
  const callback = (payload, respond, message) => {
    received.push({ payload, message });
    if (answer) {
      respond(answer(payload, message)).catch((error) => {
        process.stderr.write(`response failed: ${describe(error)}\n`);
      });
    }
  };
  const listener = await within(name === null ? channel.listen(callback) : channel.listen(name, callback),
    OPTIONS.timeout - 500, 'for the subscription');
  received.listener = listener;
  return received;
}

// A plain HTTP GET of a URL the SDK makes, with the Bearer token a browser would
// have to add itself (getUrl() and getLayoutUrl() carry no token).
async function download(url, token) {
  const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  const body = Buffer.from(await response.arrayBuffer());
  return { status: response.status, type: response.headers.get('content-type') || '', body };
}

function uuids(list) {
  return list.map((item) => item.uuid);
}

// The sources of the RSS and JSON feeds, served on 127.0.0.1.
function feedSource() {
  const server = http.createServer((request, response) => {
    if (request.url === '/feed.json') {
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.end(JSON.stringify({ items: [{ title: 'first' }, { title: 'second' }] }));
    } else if (request.url.startsWith('/search/')) {
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.end(JSON.stringify({ searched: decodeURIComponent(request.url.slice(8)) }));
    } else if (request.url === '/feed.rss') {
      response.writeHead(200, { 'Content-Type': 'application/rss+xml' });
      response.end('<?xml version="1.0"?><rss version="2.0"><channel><title>Local news</title>'
        + '<link>http://example.com/</link><item><title>Cats win</title>'
        + '<guid>n1</guid><description>All of them.</description></item></channel></rss>');
    } else {
      response.writeHead(404);
      response.end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// -- the checks --------------------------------------------------------------

const USER = { username: DEMO.username, password: DEMO.password, organization: DEMO.organization };
const DEVICE = { uuid: DEMO.deviceUuid, secret: DEMO.deviceSecret };
const CONSUMER = { uuid: DEMO.consumerUuid, apiKey: DEMO.apiKey };

async function runtime(s) {
  await check('start as a user: getAuth() resolves to the auth payload', async () => {
    const auth = await s.user.getAuth();
    equal(auth.identity.type, 'user', 'identity.type');
    equal(auth.identity.organization, DEMO.organization, 'identity.organization');
    expect(typeof auth.token === 'string' && auth.token, 'no token');
    expect(auth.expiration > Date.now(), `expiration ${auth.expiration} is not in the future`);
  });
  await check('start as a user: exp.auth and the update event give the same payload', async () => {
    const auth = await s.user.getAuth();
    expect(s.user.auth === auth, 'exp.auth is not the payload getAuth() resolved to');
    const update = await within(s.user.event('update'), 2000, 'for the update event');
    expect(update.token === auth.token, 'the update event carried another payload');
  });
  await check('start as a user: online event and isConnected', async () => {
    await within(s.user.event('online'), OPTIONS.timeout - 500, 'for the online event');
    expect(s.user.isConnected === true, 'isConnected is not true');
  });
  await check('start as a device: identity and online', async () => {
    const auth = await s.device.getAuth();
    equal(auth.identity.type, 'device', 'identity.type');
    equal(auth.identity.uuid, DEMO.deviceUuid, 'identity.uuid');
    await within(s.device.event('online'), OPTIONS.timeout - 500, 'for the online event');
    expect(s.device.isConnected, 'isConnected is not true');
  });
  await check('start as a consumer app: identity and online', async () => {
    const auth = await s.consumer.getAuth();
    equal(auth.identity.type, 'consumerApp', 'identity.type');
    equal(auth.identity.uuid, DEMO.consumerUuid, 'identity.uuid');
    await within(s.consumer.event('online'), OPTIONS.timeout - 500, 'for the online event');
    expect(s.consumer.isConnected, 'isConnected is not true');
  });
  await check('start with a wrong password: the error event, no retry loop', async () => {
    const exp = start(Object.assign({}, USER, { password: 'wrong-Password1' }));
    try {
      await within(exp.event('error'), OPTIONS.timeout - 500,
        'for the error event (a login answered with another status than 401 is retried '
        + 'every 5 s instead)');
      const error = await rejection(exp.getAuth(), 'getAuth()');
      expect(/Authentication failed/.test(error.message), `getAuth() rejected with ${describe(error)}`);
      equal(exp.events.update.length, 0, 'update events');
    } finally {
      exp.stop();
    }
    return 'the error event carries {} (the SDK\'s events pass JSON copies; an Error becomes {}); '
      + 'getAuth() rejects with the Error';
  });
  await check('start as a device with a wrong secret: the error event', async () => {
    const exp = start({ uuid: DEMO.deviceUuid, secret: 'wrong-secret' });
    try {
      await within(exp.event('error'), OPTIONS.timeout - 500, 'for the error event');
      await rejection(exp.getAuth(), 'getAuth()');
    } finally {
      exp.stop();
    }
  });
  await check('start with an auth payload: used as is, REST and network work', async () => {
    const auth = await s.user.getAuth();
    const exp = start({ auth });
    try {
      const again = await exp.getAuth();
      expect(again.token === auth.token, 'another token than the given payload');
      const device = await exp.getDevice(DEMO.deviceUuid);
      expect(device && device.uuid === DEMO.deviceUuid, 'getDevice gave no device');
      await within(exp.event('online'), OPTIONS.timeout - 1000, 'for the online event');
    } finally {
      exp.stop();
    }
  });
  await check('start with enableNetwork false: REST works, no socket', async () => {
    const exp = start(Object.assign({ enableNetwork: false }, DEVICE));
    try {
      const device = await exp.getCurrentDevice();
      expect(device && device.uuid === DEMO.deviceUuid, 'getCurrentDevice gave no device');
      await sleep(200);
      equal(exp.isConnected, false, 'isConnected');
      equal(exp.events.online.length, 0, 'online events');
    } finally {
      exp.stop();
    }
  });
  await check('exp.stop(): offline event, then every call throws', async () => {
    const exp = start(DEVICE);
    await within(exp.event('online'), OPTIONS.timeout - 1000, 'for the online event');
    exp.stop();
    expect(exp.events.offline.length >= 1, 'no offline event');
    let thrown = null;
    try { exp.getDevice(DEMO.deviceUuid); } catch (error) { thrown = error; }
    expect(thrown && /stopped/.test(thrown.message), 'getDevice after stop() did not throw');
  });
}

async function pairing(s) {
  let exp = null;
  let auth = null;
  let waiting = null;
  let device = null;
  let paired = null;
  const name = unique('js-paired');
  await check('pairing: start with allowPairing and no credentials, paired false and a code', async () => {
    exp = start({ allowPairing: true });
    auth = await exp.getAuth();
    equal(auth.identity.type, 'device', 'identity.type');
    equal(auth.identity.paired, false, 'identity.paired');
    expect(typeof auth.identity.pairingCode === 'string' && auth.identity.pairingCode,
      `no pairingCode in ${show(auth.identity)}`);
  });
  await check('pairing: listen for paired on its own system channel', async () => {
    need(auth, 'the pairing login');
    waiting = await listen(exp.getChannel(auth.identity.uuid, { system: true }), 'paired');
  });
  await check('pairing: a user pairs the code with POST /api/devices/pair', async () => {
    need(auth, 'the pairing login');
    device = await s.user.post('/api/devices/pair', { pairingCode: auth.identity.pairingCode, name });
    expect(device && typeof device.uuid === 'string' && device.uuid, `no uuid in ${show(device)}`);
    equal(device.name, name, 'name');
  });
  await check('pairing: the paired broadcast carries uuid and secret', async () => {
    need(waiting, 'the pairing listener');
    const message = await waiting.next(OPTIONS.timeout - 500, 'the paired broadcast');
    paired = message.payload;
    expect(paired && paired.uuid && paired.secret, `payload ${show(paired)}`);
    if (device) equal(paired.uuid, device.uuid, 'uuid');
  });
  await check('pairing: EXP.start with the paired uuid and secret logs in as that device', async () => {
    need(paired, 'the paired broadcast');
    const again = start({ uuid: paired.uuid, secret: paired.secret });
    try {
      const login = await again.getAuth();
      equal(login.identity.uuid, paired.uuid, 'identity.uuid');
      expect(login.identity.paired !== false, 'still not paired');
      const current = await again.getCurrentDevice();
      equal(current && current.name, name, 'getCurrentDevice().name');
    } finally {
      again.stop();
    }
  });
  if (exp) exp.stop();
  await check('pairing: invalid device credentials with allowPairing fall back to pairing', async () => {
    const fallback = start({ uuid: unique('no-such-device'), secret: 'wrong', allowPairing: true });
    try {
      const login = await fallback.getAuth();
      equal(login.identity.paired, false, 'identity.paired');
      expect(login.identity.pairingCode, 'no pairingCode');
    } finally {
      fallback.stop();
    }
  });
}

async function channels(s) {
  const name = unique('js-channel');
  await check('channel: broadcast collects the response of a listener in another instance', async () => {
    const heard = await listen(s.device.getChannel(name), 'ping', (payload) => ({ pong: payload }));
    try {
      const responses = await s.user.getChannel(name).broadcast('ping', { n: 1 }, HOLD);
      equal(responses, [{ pong: { n: 1 } }], 'responses');
      const message = await heard.next(1000, 'the broadcast at the listener');
      equal(message.payload, { n: 1 }, 'payload');
      equal(message.message.name, 'ping', 'name');
      expect(typeof message.message.id === 'string' && message.message.id, 'no message id');
    } finally {
      heard.listener.cancel();
    }
  });
  let every = null;
  await check('channel: listen(callback) gets every event', async () => {
    every = await listen(s.device.getChannel(name), null);
    await s.user.getChannel(name).broadcast('first', { n: 1 }, 0);
    await s.user.getChannel(name).broadcast('second', { n: 2 }, 0);
    const first = await every.next(1000, 'the first broadcast');
    const second = await every.next(1000, 'the second broadcast');
    equal([first.message.name, second.message.name], ['first', 'second'], 'names');
    equal(first.payload, { n: 1 }, 'first argument');
    return 'the callback gets (payload, respond, message), not the raw message its README promises';
  });
  await check('channel: broadcast(name) without payload or timeout (?timeout=undefined)', async () => {
    need(every, 'listen(callback)');
    const responses = await s.user.getChannel(name).broadcast('bare');
    expect(Array.isArray(responses), `responses ${show(responses)} are not an array`);
    const message = await every.next(1000, 'the bare broadcast');
    equal(message.message.name, 'bare', 'name');
    expect(message.payload === undefined || message.payload === null, `payload ${show(message.payload)}`);
  });
  await check('channel: fling', async () => {
    const flung = await listen(s.device.getChannel(name), 'fling');
    try {
      await s.user.getChannel(name).fling({ appTemplate: { uuid: 'app' } });
      const message = await flung.next(1000, 'the fling');
      equal(message.payload, { appTemplate: { uuid: 'app' } }, 'payload');
    } finally {
      flung.listener.cancel();
    }
  });
  await check('channel: identify', async () => {
    const identify = await listen(s.device.getChannel(name), 'identify');
    const channel = s.user.getChannel(name);
    let note;
    try {
      if (typeof channel.identify === 'function') {
        await channel.identify();
      } else {
        note = 'exp-sdk 5.0.0 has no channel.identify() (its README documents one); '
          + "sent broadcast('identify') instead";
        await channel.broadcast('identify', undefined, 0);
      }
      const message = await identify.next(1000, 'the identify broadcast');
      equal(message.message.name, 'identify', 'name');
    } finally {
      identify.listener.cancel();
    }
    return note;
  });
  if (every) every.listener.cancel();
  await check('channel: a consumer app answers a device on a consumer channel', async () => {
    const heard = await listen(s.consumer.getChannel(name, { consumer: true }), 'hello',
      () => ({ from: 'consumer app' }));
    try {
      const responses = await s.device.getChannel(name, { consumer: true }).broadcast('hello', {}, HOLD);
      equal(responses, [{ from: 'consumer app' }], 'responses');
    } finally {
      heard.listener.cancel();
    }
  });
  await check('channel: a device answers a consumer app on a consumer channel', async () => {
    const heard = await listen(s.device.getChannel(name, { consumer: true }), 'hello',
      () => ({ from: 'device' }));
    try {
      const responses = await s.consumer.getChannel(name, { consumer: true }).broadcast('hello', {}, HOLD);
      equal(responses, [{ from: 'device' }], 'responses');
    } finally {
      heard.listener.cancel();
    }
  });
  await check('channel: a consumer app may not broadcast on a plain channel (403)', async () => {
    const error = await rejection(s.consumer.getChannel(name).broadcast('hello', {}, 0), 'the broadcast');
    equal(error.status, 403, 'status');
  });
  await check('channel: nobody may broadcast on a system channel (403)', async () => {
    const error = await rejection(s.user.getChannel(name, { system: true }).broadcast('x', {}, 0),
      'the broadcast');
    equal(error.status, 403, 'status');
  });

  // Notifications of resources saved by another instance.
  const uuid = unique('js-thing');
  let system = null;
  let thing = null;
  await check('system channel: create of a thing saved by another instance', async () => {
    system = await listen(s.user.getChannel(uuid, { system: true }), null);
    thing = await s.device.createThing({ uuid, name: 'watched', subtype: 'scala:thing:rfid' });
    equal(thing.uuid, uuid, 'the uuid given to createThing');
    const message = await system.next(2000, 'the create broadcast');
    equal(message.message.name, 'create', 'name');
    equal(message.payload && message.payload.uuid, uuid, 'payload.uuid');
  });
  await check('system channel: update of a thing saved by another instance', async () => {
    need(system, 'the system listener');
    need(thing, 'the created thing');
    thing.name = 'renamed';
    await thing.save();
    const message = await system.next(2000, 'the update broadcast');
    equal(message.message.name, 'update', 'name');
    equal(message.payload && message.payload.name, 'renamed', 'payload.name');
  });
  await check('system channel: delete of a thing saved by another instance', async () => {
    need(system, 'the system listener');
    need(thing, 'the created thing');
    await thing.delete();
    const message = await system.next(2000, 'the delete broadcast');
    equal(message.message.name, 'delete', 'name');
    equal(message.payload && message.payload.uuid, uuid, 'payload.uuid');
  });
  if (system) system.listener.cancel();

  await check('system channel: resource.getChannel({system: true}) gets update and delete', async () => {
    const experience = await s.user.createExperience({ name: 'watched' });
    const heard = await listen(experience.getChannel({ system: true }), null);
    try {
      const copy = need(await s.device.getExperience(experience.uuid), 'the experience');
      copy.name = 'renamed';
      await copy.save();
      const update = await heard.next(2000, 'the update broadcast');
      equal([update.message.name, update.payload.name], ['update', 'renamed'], 'event and name');
      await s.device.deleteExperience(experience.uuid);
      const deleted = await heard.next(2000, 'the delete broadcast');
      equal(deleted.message.name, 'delete', 'event');
    } finally {
      heard.listener.cancel();
    }
  });

  const group = unique('js-watched');
  let sdkName = null;
  let protocolName = null;
  await check('system channel: data item channel set up (the SDK names it data:<key>:<group>)', async () => {
    const item = await s.user.createData(group, 'cat', { n: 0 });
    sdkName = await listen(item.getChannel({ system: true }), null);
    protocolName = await listen(s.user.getChannel(`data:${group}:cat`, { system: true }), null);
    await s.device.createData(group, 'cat', { n: 1 });
    return `the SDK's data channel is named data:<key>:<group> ("data:cat:${group}"), `
      + 'PROTOCOL.md A3 says data:<group>:<key>';
  });
  await check('system channel: data update arrives on the SDK\'s data:<key>:<group> channel', async () => {
    need(sdkName, 'the data channel set-up');
    const message = await sdkName.next(2000, 'the update on data:<key>:<group>');
    equal(message.message.name, 'update', 'name');
    equal(message.payload && message.payload.value, { n: 1 }, 'payload.value');
  });
  await check('system channel: data update arrives on PROTOCOL.md\'s data:<group>:<key> channel', async () => {
    need(protocolName, 'the data channel set-up');
    const message = await protocolName.next(2000, 'the update on data:<group>:<key>');
    equal(message.message.name, 'update', 'name');
  });
  if (sdkName) sdkName.listener.cancel();
  if (protocolName) protocolName.listener.cancel();
}

const KINDS = [
  { kind: 'Device', plural: 'Devices', document: { subtype: 'scala:device:player' } },
  { kind: 'Thing', plural: 'Things', document: { subtype: 'scala:thing:rfid', id: 'rfid-1' } },
  { kind: 'Experience', plural: 'Experiences', document: {} },
  { kind: 'Location', plural: 'Locations', document: {} },
  { kind: 'Feed', plural: 'Feeds', document: { subtype: 'scala:feed:weather', searchValue: '16902' } },
];

async function resources(s) {
  const exp = s.user;
  for (const { kind, plural, document } of KINDS) {
    const label = kind.toLowerCase();
    const create = (doc) => exp[`create${kind}`](doc);
    const get = (uuid) => exp[`get${kind}`](uuid);
    const name = unique(`js-${label}`);
    let created = null;
    let copy = null;
    let bare = null;
    await check(`${label}: create(document)`, async () => {
      created = await create(Object.assign({ name }, document));
      expect(typeof created.uuid === 'string' && created.uuid, `no uuid in ${show(created.document)}`);
      equal(created.name, name, 'name');
      if (kind === 'Device') expect(created.document.secret, 'a created device has no secret');
    });
    await check(`${label}: create() with no document has a uuid and name ""`, async () => {
      bare = await create();
      expect(typeof bare.uuid === 'string' && bare.uuid, `no uuid in ${show(bare.document)}`);
      equal(bare.name, '', 'name');
    });
    await check(`${label}: create({}) has a uuid and name ""`, async () => {
      const empty = await create({});
      expect(typeof empty.uuid === 'string' && empty.uuid, `no uuid in ${show(empty.document)}`);
      equal(empty.name, '', 'name');
      await empty.delete();
    });
    await check(`${label}: get(uuid)`, async () => {
      need(created, `${label}: create(document)`);
      copy = await get(created.uuid);
      expect(copy, 'got null');
      equal([copy.uuid, copy.name], [created.uuid, name], 'uuid and name');
    });
    await check(`${label}: get(unknown uuid) is null`, async () => {
      equal(await get(unique('no-such')), null, 'result');
    });
    await check(`${label}: get() without a uuid is null`, async () => {
      equal(await get(), null, 'result');
    });
    await check(`${label}: find(params) is an array with total`, async () => {
      need(created, `${label}: create(document)`);
      const found = await exp[`find${plural}`]({ name });
      expect(Array.isArray(found), 'not an array');
      equal(uuids(found), [created.uuid], 'uuids');
      equal(found.total, 1, 'total');
    });
    await check(`${label}: save()`, async () => {
      need(created, `${label}: create(document)`);
      created.name = `${name}-saved`;
      await created.save();
      equal(created.name, `${name}-saved`, 'name after save');
      const again = await get(created.uuid);
      equal(again && again.name, `${name}-saved`, 'name read back');
    });
    await check(`${label}: refresh()`, async () => {
      need(copy, `${label}: get(uuid)`);
      await copy.refresh();
      equal(copy.name, `${name}-saved`, 'name after refresh');
    });
    await check(`${label}: delete()`, async () => {
      need(created, `${label}: create(document)`);
      await created.delete();
      equal(await get(created.uuid), null, 'get after delete');
    });
    await check(`${label}: exp.delete${kind}(uuid)`, async () => {
      const target = bare || await create({ name: `${name}-2` });
      await exp[`delete${kind}`](target.uuid);
      equal(await get(target.uuid), null, 'get after delete');
    });
  }
}

async function relations(s) {
  const exp = s.user;
  await check('device: getLocation, getZones, getExperience', async () => {
    const device = need(await exp.getDevice(DEMO.deviceUuid), 'the demo device');
    const location = await device.getLocation();
    equal(location && location.uuid, DEMO.location, 'location');
    const zones = await device.getZones();
    equal(zones.map((z) => [z.key, z.name]), [['entrance', 'Entrance']], 'zones');
    equal(zones.total, 1, 'zones.total');
    const experience = await device.getExperience();
    equal(experience && experience.uuid, DEMO.experience, 'experience');
  });
  await check('device: location {uuid: null} gives getLocation() null and getZones() []', async () => {
    const device = await exp.createDevice({ name: unique('js-nowhere'), location: { uuid: null } });
    try {
      equal(await device.getLocation(), null, 'getLocation()');
      const zones = await device.getZones();
      equal([zones.length, zones.total], [0, 0], 'zones length and total');
      equal(await device.getExperience(), null, 'getExperience()');
    } finally {
      await device.delete();
    }
  });
  await check('thing: getLocation, getZones', async () => {
    const thing = need(await exp.getThing(DEMO.thing), 'the demo thing');
    const location = await thing.getLocation();
    equal(location && location.uuid, DEMO.location, 'location');
    const zones = await thing.getZones();
    equal(zones.map((z) => z.key), ['entrance'], 'zones');
  });
  await check('experience: getDevices', async () => {
    const experience = need(await exp.getExperience(DEMO.experience), 'the demo experience');
    const devices = await experience.getDevices();
    expect(uuids(devices).includes(DEMO.deviceUuid), `devices ${show(uuids(devices))}`);
    expect(devices.total >= 1, `total ${devices.total}`);
  });
  await check('location: getDevices, getThings, getZones', async () => {
    const location = need(await exp.getLocation(DEMO.location), 'the demo location');
    const devices = await location.getDevices();
    expect(uuids(devices).includes(DEMO.deviceUuid), `devices ${show(uuids(devices))}`);
    const things = await location.getThings();
    expect(uuids(things).includes(DEMO.thing), `things ${show(uuids(things))}`);
    const zones = await location.getZones();
    equal(zones.map((z) => [z.key, z.name]), [['entrance', 'Entrance'], ['cafe', 'Cafe']], 'zones');
    equal(zones.total, 2, 'zones.total');
  });
  await check('location: getLayoutUrl() serves an image (with the token)', async () => {
    const location = need(await exp.getLocation(DEMO.location), 'the demo location');
    const url = location.getLayoutUrl();
    equal(url, `/api/locations/${DEMO.location}/layout`, 'getLayoutUrl()');
    const image = await download(HOST + url, (await exp.getAuth()).token);
    equal(image.status, 200, 'status');
    expect(image.type.startsWith('image/'), `content type ${image.type}`);
    expect(image.body.length > 0, 'empty image');
    return 'getLayoutUrl() is a path (no host, no _rt token)';
  });
  await check('location: created without zones has zones [] and getZones() []', async () => {
    const location = await exp.createLocation({ name: unique('js-no-zones') });
    try {
      equal(location.document.zones, [], 'document.zones');
      const zones = await location.getZones();
      equal(zones.length, 0, 'getZones().length');
    } finally {
      await location.delete();
    }
  });
  await check('device: getZones() in a location created without zones is []', async () => {
    const location = await exp.createLocation({ name: unique('js-no-zones') });
    const device = await exp.createDevice({ location: { uuid: location.uuid, zones: [] } });
    try {
      const zones = await device.getZones();
      equal(zones.length, 0, 'getZones().length');
    } finally {
      await device.delete();
      await location.delete();
    }
  });
  await check('zone: getDevices, getThings, getLocation', async () => {
    const location = need(await exp.getLocation(DEMO.location), 'the demo location');
    const zone = (await location.getZones()).find((z) => z.key === 'entrance');
    need(zone, 'the entrance zone');
    const devices = await zone.getDevices();
    expect(uuids(devices).includes(DEMO.deviceUuid), `devices ${show(uuids(devices))}`);
    const things = await zone.getThings();
    expect(uuids(things).includes(DEMO.thing), `things ${show(uuids(things))}`);
    const cafe = (await location.getZones()).find((z) => z.key === 'cafe');
    const none = await cafe.getDevices();
    expect(!uuids(none).includes(DEMO.deviceUuid), 'the cafe zone lists the entrance device');
    expect((await zone.getLocation()) === location, 'getLocation() is not its location');
  });
  await check('zone: save() and refresh() through the location', async () => {
    const location = await exp.createLocation({
      name: unique('js-zones'), zones: [{ key: 'a', name: 'A' }, { key: 'b', name: 'B' }],
    });
    try {
      const copy = await exp.getLocation(location.uuid);
      const other = (await copy.getZones()).find((z) => z.key === 'a');
      const zone = (await location.getZones()).find((z) => z.key === 'a');
      zone.name = 'A renamed';
      await zone.save();
      await other.refresh();
      equal(other.name, 'A renamed', 'name after refresh');
      equal(other.key, 'a', 'key after refresh');
    } finally {
      await location.delete();
    }
  });
}

async function current(s) {
  await check('current: a device in the demo location and experience', async () => {
    const device = await s.device.getCurrentDevice();
    equal(device && device.uuid, DEMO.deviceUuid, 'getCurrentDevice()');
    const experience = await s.device.getCurrentExperience();
    equal(experience && experience.uuid, DEMO.experience, 'getCurrentExperience()');
    const location = await s.device.getCurrentLocation();
    equal(location && location.uuid, DEMO.location, 'getCurrentLocation()');
    const zones = await s.device.getCurrentZones();
    equal(zones.map((z) => z.key), ['entrance'], 'getCurrentZones()');
  });
  await check('current: a user has no device, experience, location or zones', async () => {
    equal(await s.user.getCurrentDevice(), null, 'getCurrentDevice()');
    equal(await s.user.getCurrentExperience(), null, 'getCurrentExperience()');
    equal(await s.user.getCurrentLocation(), null, 'getCurrentLocation()');
    equal(await s.user.getCurrentZones(), [], 'getCurrentZones()');
  });
}

async function data(s) {
  const exp = s.user;
  const group = unique('js-data');
  let item = null;
  await check('data: getData(group, key) of the demo seed', async () => {
    const fluffy = await exp.getData('cats', 'fluffy');
    need(fluffy, 'cats/fluffy');
    equal([fluffy.group, fluffy.key], ['cats', 'fluffy'], 'group and key');
    expect(fluffy.value && typeof fluffy.value === 'object', `value ${show(fluffy.value)}`);
  });
  await check('data: getData of an unknown key is null', async () => {
    equal(await exp.getData(group, 'nothing'), null, 'result');
  });
  await check('data: createData(group, key, value)', async () => {
    item = await exp.createData(group, 'brown', { color: 'brown' });
    equal([item.group, item.key, item.value], [group, 'brown', { color: 'brown' }], 'item');
  });
  const keys = [];
  if (item) keys.push('brown');
  await check('data: createData(group, key) with no value stores {}', async () => {
    const empty = await exp.createData(group, 'empty');
    keys.push('empty');
    equal([empty.group, empty.key, empty.value], [group, 'empty', {}], 'item');
  });
  await check('data: findData({group}) is an array with total', async () => {
    need(keys.length || null, 'createData');
    const found = await exp.findData({ group });
    expect(Array.isArray(found), 'not an array');
    equal(found.map((d) => d.key).sort(), keys, 'keys');
    equal(found.total, keys.length, 'total');
  });
  await check('data: value = ...; save(), then refresh() of another copy', async () => {
    need(item, 'createData');
    const copy = need(await exp.getData(group, 'brown'), 'the item');
    item.value = { color: 'black' };
    await item.save();
    await copy.refresh();
    equal(copy.value, { color: 'black' }, 'value after refresh');
  });
  await check('data: delete()', async () => {
    need(item, 'createData');
    await item.delete();
    equal(await exp.getData(group, 'brown'), null, 'getData after delete');
  });
  await check('data: deleteData(group, key)', async () => {
    await exp.createData(group, 'gone', { n: 1 });
    await exp.deleteData(group, 'gone');
    equal(await exp.getData(group, 'gone'), null, 'getData after deleteData');
  });
}

async function content(s) {
  const exp = s.user;
  let items = null;
  const subtypes = ['scala:content:folder', 'scala:content:file', 'scala:content:url', 'scala:content:app'];
  const token = async () => (await exp.getAuth()).token;
  await check('content: findContent() is an array with total', async () => {
    items = await exp.findContent();
    expect(Array.isArray(items) && items.length > 0, 'no items');
    expect(items.total >= items.length, `total ${items.total}`);
    const odd = items.filter((c) => !subtypes.includes(c.subtype));
    equal(odd.map((c) => c.subtype), [], 'unknown subtypes');
  });
  await check('content: getContent(uuid), unknown uuid is null', async () => {
    const first = need(items, 'findContent')[0];
    const item = await exp.getContent(first.uuid);
    equal(item && [item.uuid, item.subtype], [first.uuid, first.subtype], 'item');
    equal(await exp.getContent(unique('no-such')), null, 'unknown uuid');
  });
  await check('content: getChildren() of the root folder', async () => {
    const root = need(need(items, 'findContent').find((c) => c.document.path === '/'),
      'the root folder');
    const children = await root.getChildren();
    expect(children.length > 0, 'no children');
    equal(children.total, children.length, 'total');
    equal(children.filter((c) => c.document.parent !== root.uuid).map((c) => c.document.path), [],
      'children of another parent');
  });
  await check('content: a folder inside a folder lists its children', async () => {
    const all = need(items, 'findContent');
    const folders = all.filter((c) => c.subtype === 'scala:content:folder');
    const nested = folders.find((f) => folders.some(
      (p) => p.uuid === f.document.parent && p.document.path !== '/'));
    need(nested, 'a folder inside a folder (there is none)');
    const children = await nested.getChildren();
    expect(children.length > 0, `${nested.document.path} has no children`);
  });
  await check('content: a file\'s getUrl() delivers its bytes', async () => {
    const file = need(need(items, 'findContent').find((c) => c.subtype === 'scala:content:file'),
      'a file');
    const url = file.getUrl();
    expect(url.startsWith(`${HOST}/api/delivery/`), `url ${url}`);
    const got = await download(url, await token());
    equal(got.status, 200, `status of ${url}`);
    if (typeof file.document.size === 'number') equal(got.body.length, file.document.size, 'size');
    return 'getUrl() carries no token (no _rt): fetched with an Authorization header';
  });
  await check('content: an app\'s getUrl() ends in /index.html and is delivered', async () => {
    const app = need(need(items, 'findContent').find((c) => c.subtype === 'scala:content:app'),
      'a scala:content:app item (there is none)');
    const url = app.getUrl();
    expect(url.endsWith('/index.html'), `url ${url}`);
    const got = await download(url, await token());
    equal(got.status, 200, `status of ${url}`);
    expect(got.type.startsWith('text/html'), `content type ${got.type}`);
  });
  await check('content: a url item\'s getUrl() is its url', async () => {
    const link = need(need(items, 'findContent').find((c) => c.subtype === 'scala:content:url'),
      'a url item');
    equal(link.getUrl(), link.document.url, 'getUrl()');
    expect(/^https?:\/\//.test(link.getUrl()), `url ${link.getUrl()}`);
  });
  await check('content: hasVariant and getVariantUrl', async () => {
    const all = need(items, 'findContent');
    const file = need(all.find(
      (c) => c.subtype === 'scala:content:file' && (c.document.variants || []).length),
    'a file with variants');
    const variant = file.document.variants[0].name;
    equal([file.hasVariant(variant), file.hasVariant('no-such-variant')], [true, false], 'hasVariant');
    const url = file.getVariantUrl(variant);
    equal(url, `${file.getUrl()}?variant=${variant}`, 'getVariantUrl()');
    const original = await download(file.getUrl(), await token());
    const small = await download(url, await token());
    equal([original.status, small.status], [200, 200], 'status of the file and its variant');
    expect(!original.body.equals(small.body), 'the variant has the bytes of the file');
  });
}

async function feeds(s) {
  const exp = s.user;
  await check('feed: a weather feed\'s getData() is an honest 422 naming the supported subtypes', async () => {
    const feed = await exp.createFeed({
      subtype: 'scala:feed:weather', searchValue: '16902', name: unique('js-weather'),
    });
    try {
      const error = await rejection(feed.getData(), 'getData()');
      equal(error.status, 422, 'status');
      expect(/scala:feed:(rss|json|atom)/.test(error.message), `message ${show(error.message)}`);
    } finally {
      await feed.delete();
    }
  });
  const source = await feedSource();
  const base = `http://127.0.0.1:${source.address().port}`;
  try {
    await check('feed: a JSON feed\'s getData() (source on 127.0.0.1)', async () => {
      const feed = await exp.createFeed({
        subtype: 'scala:feed:json', url: `${base}/feed.json`, name: unique('js-json'),
      });
      try {
        equal(await feed.getData(), { items: [{ title: 'first' }, { title: 'second' }] }, 'data');
      } finally {
        await feed.delete();
      }
    });
    await check('feed: a dynamic feed\'s getData({searchValue})', async () => {
      const feed = await exp.createFeed({
        subtype: 'scala:feed:json', url: `${base}/search/{searchValue}`, name: unique('js-dynamic'),
      });
      try {
        equal(await feed.getData({ searchValue: 'cat food' }), { searched: 'cat food' }, 'data');
      } finally {
        await feed.delete();
      }
    });
    await check('feed: an RSS feed\'s getData() (source on 127.0.0.1)', async () => {
      const feed = await exp.createFeed({
        subtype: 'scala:feed:rss', url: `${base}/feed.rss`, name: unique('js-rss'),
      });
      try {
        const got = await feed.getData();
        equal(got && got.title, 'Local news', 'title');
        equal(got && got.items && got.items.map((i) => i.title), ['Cats win'], 'item titles');
      } finally {
        await feed.delete();
      }
    });
  } finally {
    source.close();
  }
}

async function raw(s) {
  const exp = s.user;
  let created = null;
  await check('raw: exp.get(path, params)', async () => {
    const answer = await exp.get('/api/devices', { name: 'lobby' });
    expect(uuids(answer.results).includes(DEMO.deviceUuid), `results ${show(answer.results)}`);
    expect(answer.total >= 1, `total ${answer.total}`);
  });
  await check('raw: exp.post(path) with no body', async () => {
    const document = await exp.post('/api/experiences');
    expect(document && document.uuid, `no uuid in ${show(document)}`);
    equal(document.name, '', 'name');
    await exp.delete(`/api/experiences/${document.uuid}`);
  });
  await check('raw: exp.post(path, body)', async () => {
    created = await exp.post('/api/experiences', { name: 'raw' });
    expect(created && created.uuid, `no uuid in ${show(created)}`);
    equal(created.name, 'raw', 'name');
  });
  await check('raw: exp.patch(path, body)', async () => {
    need(created, 'exp.post(path, body)');
    const document = await exp.patch(`/api/experiences/${created.uuid}`, { name: 'patched' });
    equal(document && document.name, 'patched', 'name');
  });
  await check('raw: exp.patch(path) with no body changes nothing', async () => {
    need(created, 'exp.post(path, body)');
    const document = await exp.patch(`/api/experiences/${created.uuid}`);
    equal(document && document.uuid, created.uuid, 'uuid');
  });
  await check('raw: exp.put(path, body)', async () => {
    const group = unique('js-raw');
    const document = await exp.put(`/api/data/${group}/fluffy`, { eyes: 'blue' });
    equal(document, { group, key: 'fluffy', value: { eyes: 'blue' } }, 'item');
    await exp.delete(`/api/data/${group}/fluffy`);
  });
  await check('raw: exp.delete(path), then a 404 ApiError', async () => {
    need(created, 'exp.post(path, body)');
    const result = await exp.delete(`/api/experiences/${created.uuid}`);
    equal(result, undefined, 'result');
    const error = await rejection(exp.get(`/api/experiences/${created.uuid}`), 'the get');
    equal(error.status, 404, 'status');
    expect(error.code && error.message, 'no code or message');
  });
}

async function consumer(s) {
  const exp = s.consumer;
  await check('consumer app: reads work', async () => {
    const device = need(await exp.getDevice(DEMO.deviceUuid), 'the demo device');
    equal(device.document.secret, undefined, 'the device secret');
    const things = await exp.findThings();
    expect(uuids(things).includes(DEMO.thing), `things ${show(uuids(things))}`);
    need(await exp.getData('cats', 'fluffy'), 'cats/fluffy');
    expect((await exp.findContent()).length > 0, 'no content');
  });
  await check('consumer app: a write is refused with status 403', async () => {
    const error = await rejection(exp.createThing({ name: unique('js-refused') }), 'createThing');
    equal(error.status, 403, 'status');
    const again = await rejection(exp.createData(unique('js-refused'), 'k', 1), 'createData');
    equal(again.status, 403, 'status of createData');
  });
  await check('consumer app: a delete is refused (the SDK never reports DELETE errors)', async () => {
    await exp.deleteThing(DEMO.thing);
    need(await s.user.getThing(DEMO.thing), 'the demo thing after the refused delete');
  });
}

async function stopAll(s) {
  await check('EXP.stop() stops every instance', async () => {
    EXP.stop();
    equal([s.user.isConnected, s.device.isConnected, s.consumer.isConnected], [false, false, false],
      'isConnected');
    expect(s.user.events.offline.length >= 1, 'no offline event');
    const device = await s.user.getDevice(DEMO.deviceUuid);
    if (device) return 'REST calls of an instance still work after EXP.stop() (its README says they throw)';
  });
}

async function main() {
  process.on('unhandledRejection', (error) => {
    process.stderr.write(`unhandled rejection: ${describe(error)}\n`);
  });
  const s = { user: start(USER), device: start(DEVICE), consumer: start(CONSUMER) };
  await runtime(s);
  await pairing(s);
  await channels(s);
  await resources(s);
  await relations(s);
  await current(s);
  await data(s);
  await content(s);
  await feeds(s);
  await raw(s);
  await consumer(s);
  await stopAll(s);
  process.exit(failures ? 1 : 0);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(2);
});
