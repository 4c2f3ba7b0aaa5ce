#!/usr/bin/env node
// An EXP network client made of the unmodified socket.io-client 2.x from npm,
// driven by tests/test_interop_socketio_client.py.
//
//   node client.js --url URL --token TOKEN [--channel ID]... [--transports polling,websocket]
//                  [--broadcasts N] [--lifetime MS]
//
// It connects to URL (the login's auth.network.host) with query {token} and the
// given transports (default: socket.io-client's own, polling then upgrade to
// websocket), emits `subscribe` with the channel ids once connected, and answers
// every broadcast by POSTing {id, channel, payload: {echo, transport}} to
// <URL>/api/networks/current/responses with the Bearer token.
//
// It prints one JSON object per line on stdout, {"event": NAME, ...}:
//   connect {transport}, upgrade {transport}, subscribed {channels},
//   broadcast {message, transport}, responded {id, status}, error {error},
//   connect_error {error}, disconnect {reason}, exit {reason}.
// It exits by itself: after answering N broadcasts (--broadcasts, default 1),
// on connect_error, on disconnect, or after --lifetime ms (default 30000).

'use strict';

const io = require('socket.io-client');

function parseArgs(argv) {
  const options = { channels: [], transports: null, broadcasts: 1, lifetime: 30000 };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    switch (name) {
      case '--url': options.url = value.replace(/\/+$/, ''); break;
      case '--token': options.token = value; break;
      case '--channel': options.channels.push(value); break;
      case '--transports': options.transports = value.split(','); break;
      case '--broadcasts': options.broadcasts = Number(value); break;
      case '--lifetime': options.lifetime = Number(value); break;
      default: throw new Error(`unknown option ${name}`);
    }
  }
  if (!options.url || options.token === undefined) throw new Error('--url and --token are required');
  return options;
}

function print(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields)) + '\n');
}

function describe(error) {
  if (error instanceof Error) {
    const description = { message: error.message };
    if (error.type !== undefined) description.type = error.type;
    if (error.description !== undefined) description.description = String(error.description);
    return description;
  }
  return error;
}

let finished = false;
function finish(reason, code) {
  if (finished) return;
  finished = true;
  print('exit', { reason });
  // Let stdout drain before leaving.
  process.stdout.write('', () => process.exit(code));
}

async function respond(options, message, transport) {
  const body = { id: message.id, channel: message.channel,
                 payload: { echo: message.payload, transport } };
  const answer = await fetch(`${options.url}/api/networks/current/responses`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${options.token}` },
    body: JSON.stringify(body),
  });
  await answer.text();
  print('responded', { id: message.id, status: answer.status });
  return answer.ok;
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  const ioOptions = { query: { token: options.token }, reconnection: false, forceNew: true };
  if (options.transports) ioOptions.transports = options.transports;

  const timer = setTimeout(() => finish('lifetime', 2), options.lifetime);
  timer.unref();

  const socket = io(options.url, ioOptions);
  const transportName = () => (socket.io.engine && socket.io.engine.transport
    ? socket.io.engine.transport.name : null);

  socket.io.engine.on('upgrade', (transport) => print('upgrade', { transport: transport.name }));

  socket.on('connect', () => {
    print('connect', { transport: transportName() });
    socket.emit('subscribe', options.channels);
  });
  socket.on('subscribed', (channels) => print('subscribed', { channels }));
  socket.on('error', (error) => print('error', { error: describe(error) }));
  socket.on('connect_error', (error) => {
    print('connect_error', { error: describe(error) });
    finish('connect_error', 0);
  });
  socket.on('disconnect', (reason) => {
    print('disconnect', { reason });
    finish('disconnect', 0);
  });

  let answered = 0;
  socket.on('broadcast', (message) => {
    const transport = transportName();
    print('broadcast', { message, transport });
    respond(options, message, transport).then((ok) => {
      if (!ok) return finish('response refused', 1);
      answered += 1;
      if (answered >= options.broadcasts) {
        finish('done', 0);
        socket.close();
      }
    }, (error) => {
      print('error', { error: describe(error) });
      finish('response failed', 1);
    });
  });
}

try {
  main();
} catch (error) {
  print('error', { error: describe(error) });
  finish('crashed', 1);
}
