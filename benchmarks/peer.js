#!/usr/bin/env node
// The peer of benchmarks/peers.py: a minimal EXP network on the unmodified
// socket.io 2.x server that tests/interop pins (what EXP's own network ran on,
// and what a user would pick instead of our server).
//
//   node benchmarks/peer.js --port N --token TOKEN
//
// It listens on 127.0.0.1:N and has just what the benchmarks use, in the same
// JSON shapes as our server:
//
//   POST /api/auth/login     any credentials: a fixed auth payload, whose token
//                            is TOKEN and whose api and network hosts are this
//                            server (from the request's Host, as ours does);
//   /socket.io/              Socket.IO 2 over Engine.IO 3, the token in the
//                            query (any other is refused); `subscribe` (an array
//                            of channel ids) joins those rooms and is answered
//                            with `subscribed` and the ids;
//   POST /api/networks/current/broadcasts?timeout=MS
//                            with `Authorization: Bearer TOKEN` and a JSON body
//                            {channel, name, payload}: emits `broadcast`
//                            {id, channel, name, payload} to the channel's room
//                            and answers [] (it collects no responses; after
//                            the timeout when there is one).
//
// Compression is off on both transports, as our server has none.  It logs
// nothing and runs until it is killed.

'use strict';

const crypto = require('crypto');
const http = require('http');
const socketio = require('../tests/interop/node_modules/socket.io');

const USER = { type: 'user', uuid: 'a46b2ea3-8a35-4b2c-a8a1-5f4a3e0c6c1d',
               organization: 'scala', username: 'test@goexp.io' };
const LIFETIME = 3600 * 1000;

function options(argv) {
  const out = { port: 0, token: null };
  for (let i = 0; i < argv.length; i += 2) {
    if (argv[i] === '--port') out.port = Number(argv[i + 1]);
    else if (argv[i] === '--token') out.token = argv[i + 1];
    else throw new Error(`unknown option ${argv[i]}`);
  }
  if (!out.token) throw new Error('--token is needed');
  return out;
}

function answer(response, status, document) {
  const body = JSON.stringify(document);
  response.writeHead(status, { 'Content-Type': 'application/json',
                               'Content-Length': Buffer.byteLength(body) });
  response.end(body);
}

function readJson(request, then) {
  const chunks = [];
  request.on('data', (chunk) => chunks.push(chunk));
  request.on('end', () => {
    let document;
    try {
      document = JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
    } catch (error) {
      document = undefined;
    }
    then(document);
  });
}

function main() {
  const { port, token } = options(process.argv.slice(2));
  let io = null;

  function login(request, response) {
    readJson(request, () => {
      const host = `http://${request.headers.host}`;
      answer(response, 200, {
        token, restrictedToken: token, expiration: Date.now() + LIFETIME, identity: USER,
        api: { host }, network: { host },
      });
    });
  }

  function broadcast(request, response, query) {
    if (request.headers.authorization !== `Bearer ${token}`) {
      answer(response, 401, { code: 'auth.unauthorized', message: 'not authenticated' });
      return;
    }
    readJson(request, (body) => {
      if (!body || typeof body.channel !== 'string' || typeof body.name !== 'string' ||
          !body.name) {
        answer(response, 400, { code: 'broadcast.invalid',
                                 message: 'a broadcast needs a channel and a name' });
        return;
      }
      io.to(body.channel).emit('broadcast', {
        id: crypto.randomUUID(), channel: body.channel, name: body.name,
        payload: body.payload === undefined ? null : body.payload,
      });
      const timeout = Number(query.get('timeout')) || 0;
      if (timeout > 0) setTimeout(() => answer(response, 200, []), timeout);
      else answer(response, 200, []);
    });
  }

  const server = http.createServer((request, response) => {
    const url = new URL(request.url, 'http://peer');
    if (request.method === 'POST' && url.pathname === '/api/auth/login') {
      login(request, response);
    } else if (request.method === 'POST' &&
               url.pathname === '/api/networks/current/broadcasts') {
      broadcast(request, response, url.searchParams);
    } else {
      answer(response, 404, { code: 'notFound', message: 'no such resource' });
    }
  });

  io = socketio(server, { serveClient: false, cookie: false, perMessageDeflate: false,
                          httpCompression: false });
  io.use((socket, next) => (socket.handshake.query.token === token
    ? next() : next(new Error('unauthorized'))));
  io.on('connection', (socket) => {
    socket.on('subscribe', (channels) => {
      const ids = Array.isArray(channels) ? channels.filter((id) => typeof id === 'string') : [];
      socket.join(ids, () => socket.emit('subscribed', ids));
    });
  });

  server.listen(port, '127.0.0.1');
}

main();
