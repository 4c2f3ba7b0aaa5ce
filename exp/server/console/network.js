// The real-time network of EXP (PROTOCOL.md A5): a small Socket.IO 2 client
// over Engine.IO protocol 3, on a WebSocket only (no long-polling), written
// for this console.  It keeps one session, pings as Engine.IO 3 clients do,
// reconnects with backoff after any loss, and subscribes again to every
// channel it was asked for.

// Engine.IO packet types, and Socket.IO's inside a message (4).
const OPEN = "0", CLOSE = "1", PING = "2", PONG = "3", MESSAGE = "4", NOOP = "6";
const SIO_CONNECT = "0", SIO_DISCONNECT = "1", SIO_EVENT = "2", SIO_ERROR = "4";

// Seconds before attempt n of a connection: 0.5, 1, 2, 4, then 8 at most.
const backoff = (attempt) => Math.min(0.5 * 2 ** attempt, 8);

// The id of a channel on the wire (PROTOCOL.md A3): base64 of the compact JSON
// array, with every character past ASCII escaped as Python's json.dumps does.
export function channelId(organization, name, system = false, consumer = false) {
  const json = JSON.stringify([organization, name, system ? 1 : 0, consumer ? 1 : 0])
    .replace(/[\u0080-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  return btoa(json);
}

export class Network {
  // url: the page's origin (http or https); token(): the current token, or a
  // promise of a fresh one; handlers: broadcast(body), state("online" |
  // "offline" | "connecting"), refused(message).
  constructor(url, token, handlers) {
    this.url = url.replace(/^http/, "ws") + "/socket.io/?EIO=3&transport=websocket";
    this.token = token;
    this.handlers = handlers;
    this.channels = new Set();
    this.subscribed = new Set();
    this.waiting = [];
    this.socket = null;
    this.attempt = 0;
    this.state = "connecting";
    this.stopped = false;
    this.timers = {};
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.clearTimers();
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.onclose = socket.onmessage = socket.onerror = null;
      socket.close();
    }
  }

  // Listen on a channel; resolves once the server confirms the subscription.
  subscribe(id) {
    this.channels.add(id);
    if (this.subscribed.has(id)) return Promise.resolve(true);
    const confirmed = new Promise((resolve) => this.waiting.push({ id, resolve }));
    if (this.state === "online") this.send(MESSAGE + SIO_EVENT + JSON.stringify(["subscribe", [id]]));
    return confirmed;
  }

  async connect() {
    if (this.stopped) return;
    this.setState("connecting");
    let token;
    try {
      token = await this.token();
    } catch (e) {
      this.retry();
      return;
    }
    if (this.stopped || !token) return;
    const socket = new WebSocket(this.url + "&token=" + encodeURIComponent(token));
    this.socket = socket;
    socket.onmessage = (event) => this.receive(String(event.data));
    socket.onclose = () => this.lost(socket);
    socket.onerror = () => {};
  }

  send(text) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(text);
  }

  receive(text) {
    const type = text[0], data = text.slice(1);
    if (type === OPEN) {
      const handshake = JSON.parse(data);
      this.pingInterval = handshake.pingInterval;
      this.pingTimeout = handshake.pingTimeout;
      this.schedulePing();
    } else if (type === PONG) {
      clearTimeout(this.timers.pong);
    } else if (type === MESSAGE) {
      this.receiveSocketIO(data);
    } else if (type === CLOSE) {
      this.socket && this.socket.close();
    } else if (type !== NOOP && type !== PING) {
      console.warn("exp network: unknown packet", text.slice(0, 40));
    }
  }

  receiveSocketIO(data) {
    const type = data[0], rest = data.slice(1);
    if (type === SIO_CONNECT) {
      this.attempt = 0;
      this.subscribed.clear();
      this.setState("online");
      if (this.channels.size) this.send(MESSAGE + SIO_EVENT + JSON.stringify(["subscribe", [...this.channels]]));
    } else if (type === SIO_EVENT) {
      const [name, body] = JSON.parse(rest);
      if (name === "broadcast") {
        this.handlers.broadcast(body);
      } else if (name === "subscribed") {
        for (const id of body) this.subscribed.add(id);
        this.waiting = this.waiting.filter((w) => {
          if (!this.subscribed.has(w.id)) return true;
          w.resolve(true);
          return false;
        });
      }
    } else if (type === SIO_ERROR) {
      this.handlers.refused && this.handlers.refused(JSON.parse(rest || '""'));
    } else if (type === SIO_DISCONNECT) {
      this.socket && this.socket.close();
    }
  }

  schedulePing() {
    clearTimeout(this.timers.ping);
    this.timers.ping = setTimeout(() => {
      this.send(PING);
      clearTimeout(this.timers.pong);
      // No pong in time: the path is dead, whatever the socket says.
      this.timers.pong = setTimeout(() => this.socket && this.socket.close(), this.pingTimeout);
      this.schedulePing();
    }, this.pingInterval);
  }

  lost(socket) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.clearTimers();
    this.subscribed.clear();
    if (this.stopped) return;
    this.setState("offline");
    this.retry();
  }

  retry() {
    const delay = backoff(this.attempt++);
    this.timers.retry = setTimeout(() => this.connect(), delay * 1000);
  }

  clearTimers() {
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    this.timers = {};
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.handlers.state(state);
  }
}
