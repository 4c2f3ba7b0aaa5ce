#!/usr/bin/env node
// An EXP network made of the unmodified socket.io 2.x server from npm, driven by
// tests/test_interop_socketio_server.py to prove the SDK's own Socket.IO client.
//
//   node server.js [--port N] [--token TOKEN]...
//
// It listens on 127.0.0.1:N (0, the default, picks a free port) and accepts only
// connections whose query carries one of the given tokens (others are refused by
// a middleware: the client gets a Socket.IO error packet "unauthorized").
// A `subscribe` event (an array of channel ids) joins those rooms and is answered
// with `subscribed` echoing the ids.
//
// Commands, one JSON object per line on stdin (or POSTed to /broadcast):
//   {"channel": ID, "name": NAME, "payload": ANY}   emit a `broadcast` event
//       {id, channel, name, payload} to the subscribers of the channel.
//
// It prints one JSON object per line on stdout, {"event": NAME, ...}:
//   listening {port}, refused {token}, connection {id, token, transport},
//   subscribe {id, channels}, broadcast {id, channel, name, subscribers},
//   disconnect {id, reason}, error {error}.
// It exits when stdin closes.

'use strict';

const http = require('http');
const readline = require('readline');
const socketio = require('socket.io');

function parseArgs(argv) {
  const options = { port: 0, tokens: new Set() };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    switch (name) {
      case '--port': options.port = Number(value); break;
      case '--token': options.tokens.add(value); break;
      default: throw new Error(`unknown option ${name}`);
    }
  }
  return options;
}

function print(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields)) + '\n');
}

let counter = 0;

function broadcast(io, command) {
  if (!command || typeof command.channel !== 'string' || typeof command.name !== 'string') {
    throw new Error('a broadcast needs a channel and a name');
  }
  counter += 1;
  const message = { id: `node-${process.pid}-${counter}`, channel: command.channel,
                    name: command.name, payload: command.payload === undefined
                      ? null : command.payload };
  const room = io.sockets.adapter.rooms[command.channel];
  io.to(command.channel).emit('broadcast', message);
  print('broadcast', { id: message.id, channel: message.channel, name: message.name,
                       subscribers: room ? room.length : 0 });
  return message;
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  let io = null;

  const server = http.createServer((request, response) => {
    if (request.method !== 'POST' || request.url !== '/broadcast') {
      response.writeHead(404);
      response.end();
      return;
    }
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      try {
        const message = broadcast(io, JSON.parse(body));
        response.writeHead(200, { 'Content-Type': 'application/json' });
        response.end(JSON.stringify(message));
      } catch (error) {
        response.writeHead(400, { 'Content-Type': 'application/json' });
        response.end(JSON.stringify({ error: String(error) }));
      }
    });
  });

  io = socketio(server, { serveClient: false });

  io.use((socket, next) => {
    const token = socket.handshake.query.token;
    if (options.tokens.has(token)) return next();
    print('refused', { token: token === undefined ? null : token });
    return next(new Error('unauthorized'));
  });

  io.on('connection', (socket) => {
    print('connection', { id: socket.id, token: socket.handshake.query.token,
                          transport: socket.conn.transport.name });
    socket.on('subscribe', (channels) => {
      const ids = Array.isArray(channels)
        ? channels.filter((id) => typeof id === 'string') : [];
      for (const id of ids) socket.join(id);
      print('subscribe', { id: socket.id, channels: ids });
      socket.emit('subscribed', ids);
    });
    socket.on('disconnect', (reason) => print('disconnect', { id: socket.id, reason }));
  });

  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    try {
      broadcast(io, JSON.parse(line));
    } catch (error) {
      print('error', { error: String(error) });
    }
  });
  lines.on('close', () => process.exit(0));

  server.listen(options.port, '127.0.0.1', () => {
    print('listening', { port: server.address().port });
  });
}

try {
  main();
} catch (error) {
  print('error', { error: String(error) });
  process.exit(1);
}
