// The EXP web console: a person's face on the local EXP server.  It uses the
// public REST API with the signed-in user's token (kept in sessionStorage, so
// it ends with the tab) and the real-time network (network.js) for what is
// live.  No framework: each screen is a function that builds its DOM.

import { Network, channelId } from "./network.js";

const STORE = "exp.console.auth";
const view = document.getElementById("view");
const errorBox = document.getElementById("error");
const bannerBox = document.getElementById("banner");

let auth = loadAuth();
let network = null;
let refreshTimer = null;
let cleanups = [];
const listeners = new Set(); // broadcast handlers of the screen on show
const monitor = { id: null, label: "", log: [] }; // kept across screens

// -- small DOM helpers ---------------------------------------------------------

// h("p", {class: "x"}, "text", child...): an element.  Attributes starting
// with "on" are event handlers; text is always text, never HTML.
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let uniqueId = 0;
// A labelled form control: [label, control] with the label tied to it.
function field(labelText, control, hint) {
  if (!control.id) control.id = "f" + ++uniqueId;
  const label = h("label", { for: control.id }, labelText);
  const parts = [label, control];
  if (hint) {
    const hintId = control.id + "-hint";
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "hint" }, hint));
  }
  return h("div", { class: control.type === "checkbox" ? "field check" : "field" }, parts);
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

function show(...nodes) {
  view.replaceChildren(...nodes);
}

function time(date) {
  return date.toLocaleTimeString([], { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

// -- messages --------------------------------------------------------------------

function showError(error) {
  const message = error instanceof ApiError || error instanceof InputError
    ? error.message
    : `The server cannot be reached (${error && error.message ? error.message : error}).`;
  errorBox.textContent = message;
  errorBox.hidden = false;
  if (!(error instanceof ApiError || error instanceof InputError)) console.error(error);
}

function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

function banner(text) {
  bannerBox.textContent = text || "";
  bannerBox.hidden = !text;
}

// Run an action of a form or button: errors are shown, never thrown away.
async function attempt(action) {
  clearError();
  try {
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

// -- the REST API ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

class InputError extends Error {}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InputError(`${what} is not valid JSON: ${e.message}`);
  }
}

function query(params) {
  const pairs = Object.entries(params || {}).filter(([, v]) => v !== undefined && v !== null);
  return pairs.length ? "?" + new URLSearchParams(pairs).toString() : "";
}

async function api(method, path, { body, params, token } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token || (auth && auth.token);
  if (bearer) headers.Authorization = "Bearer " + bearer;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path + query(params), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const message = data && typeof data.message === "string" && data.message
      ? data.message
      : `${response.status} ${response.statusText}`;
    const error = new ApiError(response.status, data && data.code, message);
    if (response.status === 401 && auth && !token && path !== "/api/auth/login") {
      signOut("Your session has ended: " + message + ". Sign in again.");
    }
    throw error;
  }
  return data;
}

const segment = (text) => encodeURIComponent(text);

function deliveryUrl(item, variant) {
  const path = String(item.path || "").replace(/^\/+/, "");
  const app = item.subtype === "scala:content:app" ? "/index.html" : "";
  const params = { _rt: auth.restrictedToken };
  if (variant) params.variant = variant;
  return "/api/delivery/" + path.split("/").map(segment).join("/") + app + query(params);
}

// -- signing in and out ----------------------------------------------------------

function loadAuth() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORE) || "null");
    return stored && stored.token && stored.expiration > Date.now() ? stored : null;
  } catch (e) {
    return null;
  }
}

function saveAuth(payload) {
  auth = payload;
  sessionStorage.setItem(STORE, JSON.stringify(payload));
  scheduleRefresh();
}

// Tokens are refreshed at half their remaining lifetime, as the SDKs do.
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!auth) return;
  const delay = Math.max(1000, (auth.expiration - Date.now()) / 2);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.min(delay, 2 ** 31 - 1));
}

async function refresh() {
  const payload = await api("POST", "/api/auth/token");
  saveAuth(payload);
  return payload.token;
}

async function currentToken() {
  if (!auth) return null;
  if (auth.expiration - Date.now() < 10000) return refresh();
  return auth.token;
}

function signedIn() {
  const identity = auth.identity;
  document.getElementById("identity").textContent =
    `${identity.username || identity.uuid} · ${identity.organization}`;
  document.getElementById("who").hidden = false;
  document.getElementById("nav").hidden = false;
  startNetwork();
}

function signOut(message) {
  auth = null;
  sessionStorage.removeItem(STORE);
  clearTimeout(refreshTimer);
  if (network) network.stop();
  network = null;
  banner(null);
  monitor.id = null;
  monitor.log = [];
  document.getElementById("who").hidden = true;
  document.getElementById("nav").hidden = true;
  if (location.hash !== "#/signin") history.replaceState(null, "", "#/signin");
  route().then(() => message && showError(new InputError(message)));
}

function signInScreen() {
  const username = h("input", { type: "email", name: "username", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const organization = h("input", { type: "text", name: "organization", autocomplete: "organization", required: true });
  const form = h("form", { class: "card narrow", "aria-labelledby": "signin-title" },
    h("h2", { id: "signin-title" }, "Sign in"),
    field("Username", username),
    field("Password", password),
    field("Organization", organization),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      const payload = await api("POST", "/api/auth/login", {
        body: { type: "user", username: username.value, password: password.value, organization: organization.value },
      });
      saveAuth(payload);
      signedIn();
      location.hash = "#/devices";
    });
  });
  show(form);
  username.focus();
}

// -- the network -----------------------------------------------------------------

let wasOffline = false;

function startNetwork() {
  if (network) return;
  wasOffline = false;
  network = new Network(location.origin, currentToken, {
    broadcast(body) {
      if (body.channel === monitor.id) {
        monitor.log.unshift({ at: new Date(), name: body.name, payload: body.payload });
        monitor.log.length = Math.min(monitor.log.length, 200);
      }
      for (const listener of listeners) listener(body);
    },
    state(state) {
      if (state === "online") {
        banner(null);
        // What was announced meanwhile is lost: screens read their state again.
        if (wasOffline) for (const listener of listeners) listener({ reconnected: true });
        wasOffline = false;
      } else if (state === "offline") {
        wasOffline = true;
        banner("The connection to the server was lost. Reconnecting…");
      }
      document.body.dataset.network = state;
    },
    refused(message) {
      console.warn("exp network:", message);
    },
  });
  network.start();
}

// Call handler(body) for each broadcast while the current screen shows.
function onBroadcast(handler) {
  listeners.add(handler);
  cleanups.push(() => listeners.delete(handler));
}

const systemChannel = (name) => channelId(auth.identity.organization, name, true, false);

// -- a list of documents with a JSON editor (devices, things, experiences) ------

function resourceScreen({ title, path, columns = [], live = null }) {
  const tbody = h("tbody");
  const editorSlot = h("div", { class: "editor-slot" });
  const heading = h("h2", {}, title);
  const table = h("table", { class: "list" },
    h("caption", { class: "sr-only" }, title),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "UUID"),
      h("th", { scope: "col" }, "Type"), columns.map((c) => h("th", { scope: "col" }, c.title)),
      h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
    tbody);
  const newButton = h("button", { type: "button", onclick: () => edit(null) }, `New ${title.toLowerCase().replace(/s$/, "")}`);
  const reloadButton = h("button", { type: "button", class: "secondary", onclick: () => attempt(load) }, "Reload");
  show(h("section", { class: "screen" }, h("div", { class: "heading" }, heading, h("div", { class: "actions" }, newButton, reloadButton)),
    h("div", { class: "split" }, h("div", { class: "scroll" }, table), editorSlot)));

  async function load() {
    const found = await api("GET", path, { params: { limit: 1000 } });
    tbody.replaceChildren(...found.results.map((doc) =>
      h("tr", { "data-uuid": doc.uuid },
        h("td", { "data-label": "Name" }, doc.name || h("em", {}, "(no name)")),
        h("td", { "data-label": "UUID", class: "mono" }, doc.uuid),
        h("td", { "data-label": "Type", class: "mono" }, doc.subtype || ""),
        columns.map((c) => h("td", { "data-label": c.title }, c.cell(doc))),
        h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => edit(doc),
          "aria-label": `Edit ${doc.name || doc.uuid}` }, "Edit")))));
    if (!found.results.length) tbody.append(h("tr", {}, h("td", { colspan: 4 + columns.length }, "None yet.")));
    if (live) await live(found.results, load);
  }

  function edit(doc) {
    const text = h("textarea", { rows: 16, spellcheck: "false", class: "mono" });
    text.value = pretty(doc || { name: "" });
    const save = h("button", { type: "submit" }, doc ? "Save" : "Create");
    const remove = doc && h("button", { type: "button", class: "danger", onclick: () => attempt(async () => {
      if (!confirm(`Delete ${doc.name || doc.uuid}?`)) return;
      await api("DELETE", `${path}/${segment(doc.uuid)}`);
      editorSlot.replaceChildren();
      await load();
    }) }, "Delete");
    const close = h("button", { type: "button", class: "secondary", onclick: () => editorSlot.replaceChildren() }, "Close");
    const status = h("p", { class: "saved", role: "status" });
    const form = h("form", { class: "card editor", "aria-label": doc ? `Edit ${doc.name || doc.uuid}` : `New ${title}` },
      h("h3", {}, doc ? doc.name || doc.uuid : `New ${title.toLowerCase().replace(/s$/, "")}`),
      field("Document (JSON)", text), status, h("div", { class: "actions" }, save, remove, close));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      attempt(async () => {
        const body = parseJson(text.value, "The document");
        if (typeof body !== "object" || body === null || Array.isArray(body)) {
          throw new InputError("The document must be a JSON object.");
        }
        const stored = doc
          ? await api("PATCH", `${path}/${segment(doc.uuid)}`, { body })
          : await api("POST", path, { body });
        await load();
        edit(stored);
        editorSlot.querySelector(".saved").textContent = `Saved at ${time(new Date())}.`;
      });
    });
    editorSlot.replaceChildren(form);
    text.focus();
  }

  return attempt(load);
}

// -- devices: live online/offline ------------------------------------------------

function statusBadge(uuid) {
  return h("span", { class: "badge unknown", "data-status": uuid }, "…");
}

function setStatus(uuid, online) {
  for (const badge of view.querySelectorAll("[data-status]")) {
    if (badge.dataset.status !== uuid) continue;
    badge.textContent = online ? "online" : "offline";
    badge.className = "badge " + (online ? "online" : "offline");
  }
}

async function fetchStatus(uuid) {
  try {
    const status = await api("GET", `/api/devices/${segment(uuid)}/status`);
    setStatus(uuid, status.online);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) showError(error);
  }
}

function devicesScreen() {
  let watched = new Map(); // channel id -> device uuid
  let reloading = null;
  onBroadcast((body) => {
    if (body.reconnected && reloading) {
      reloading().catch(showError);
      return;
    }
    const uuid = watched.get(body.channel);
    if (uuid === undefined) return;
    // The payload says it; the server's answer is the truth if announcements crossed.
    if (body.name === "status") {
      setStatus(uuid, Boolean(body.payload && body.payload.online));
      fetchStatus(uuid);
    } else if (["update", "delete"].includes(body.name) && reloading) {
      reloading().catch(showError);
    }
  });
  // A device paired or created elsewhere: its channel is not watched yet.
  const poll = setInterval(() => reloading && document.visibilityState === "visible" && reloading().catch(() => {}), 30000);
  cleanups.push(() => clearInterval(poll));
  return resourceScreen({
    title: "Devices",
    path: "/api/devices",
    columns: [{ title: "Status", cell: (doc) => statusBadge(doc.uuid) }],
    live: async (devices, load) => {
      reloading = load;
      watched = new Map(devices.map((d) => [systemChannel(d.uuid), d.uuid]));
      if (network) await Promise.all([...watched.keys()].map((id) => network.subscribe(id)));
      await Promise.all(devices.map((d) => fetchStatus(d.uuid)));
    },
  });
}

// -- pairing ---------------------------------------------------------------------

function pairScreen() {
  const code = h("input", { type: "text", name: "pairingCode", autocomplete: "off", autocapitalize: "characters", required: true, maxlength: 32, class: "mono" });
  const name = h("input", { type: "text", name: "name", autocomplete: "off" });
  const result = h("div", { role: "status", class: "result" });
  const form = h("form", { class: "card narrow", "aria-labelledby": "pair-title" },
    h("h2", { id: "pair-title" }, "Pair a device"),
    h("p", {}, "A device started in pairing mode shows a code. Type it here, with a name for the device: the device receives its credentials and carries on as that device."),
    field("Pairing code", code), field("Device name", name),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Pair")), result);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      result.replaceChildren();
      const body = { pairingCode: code.value.trim() };
      if (name.value.trim()) body.name = name.value.trim();
      const device = await api("POST", "/api/devices/pair", { body });
      result.replaceChildren(h("p", {}, "Paired ", h("strong", {}, device.name || "(no name)"), " as device ",
        h("code", {}, device.uuid), ". ", h("a", { href: "#/devices" }, "See the devices.")));
      code.value = "";
      name.value = "";
    });
  });
  show(form);
  code.focus();
}

// -- channel monitor -------------------------------------------------------------

function monitorScreen() {
  const name = h("input", { type: "text", name: "channel", required: true, autocomplete: "off" });
  const system = h("input", { type: "checkbox", name: "system" });
  const consumer = h("input", { type: "checkbox", name: "consumer" });
  const listening = h("p", { role: "status", class: "listening" });
  const choose = h("form", { class: "card", "aria-labelledby": "channel-title" },
    h("h2", { id: "channel-title" }, "Channel"),
    h("div", { class: "row" }, field("Channel name", name), field("System", system), field("Consumer", consumer)),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Listen")), listening);

  const event = h("input", { type: "text", name: "event", required: true, autocomplete: "off" });
  const payload = h("textarea", { rows: 4, spellcheck: "false", class: "mono", name: "payload" });
  const timeout = h("input", { type: "number", name: "timeout", min: 0, max: 60, step: "any", value: 1 });
  const responses = h("div", { class: "responses", role: "status" });
  const send = h("form", { class: "card", "aria-labelledby": "send-title" },
    h("h2", { id: "send-title" }, "Send a broadcast"),
    h("div", { class: "row" }, field("Event name", event), field("Timeout (seconds)", timeout)),
    field("Payload (JSON)", payload, "Empty means null."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Send")), responses);

  const logBody = h("tbody");
  const log = h("section", { class: "card", "aria-labelledby": "log-title" },
    h("h2", { id: "log-title" }, "Broadcasts"),
    h("div", { class: "scroll" }, h("table", { class: "list log" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Time"), h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Payload"))),
      logBody)));

  function renderLog() {
    logBody.replaceChildren(...monitor.log.map((entry) => h("tr", {},
      h("td", { "data-label": "Time", class: "mono" }, time(entry.at)),
      h("td", { "data-label": "Name" }, entry.name),
      h("td", { "data-label": "Payload" }, h("pre", {}, pretty(entry.payload))))));
    if (!monitor.log.length) {
      logBody.append(h("tr", {}, h("td", { colspan: 3 }, monitor.id ? "Nothing yet." : "Choose a channel to listen on.")));
    }
  }

  function showListening() {
    listening.textContent = monitor.id ? `Listening on ${monitor.label}.` : "";
  }

  if (monitor.id) {
    name.value = monitor.name;
    system.checked = monitor.system;
    consumer.checked = monitor.consumer;
  }
  choose.addEventListener("submit", (e) => {
    e.preventDefault();
    attempt(async () => {
      const id = channelId(auth.identity.organization, name.value, system.checked, consumer.checked);
      Object.assign(monitor, { id, name: name.value, system: system.checked, consumer: consumer.checked, log: [] });
      monitor.label = `${name.value}${system.checked ? " (system)" : ""}${consumer.checked ? " (consumer)" : ""}`;
      listening.textContent = `Subscribing to ${monitor.label}…`;
      renderLog();
      await network.subscribe(id);
      showListening();
    });
  });
  send.addEventListener("submit", (e) => {
    e.preventDefault();
    attempt(async () => {
      if (!monitor.id) throw new InputError("Choose a channel first: the broadcast is sent on it.");
      const value = payload.value.trim() ? parseJson(payload.value, "The payload") : null;
      const seconds = Number(timeout.value || 0);
      if (!(seconds >= 0)) throw new InputError("The timeout is a number of seconds.");
      responses.replaceChildren(h("p", {}, "Sent; collecting responses…"));
      const answers = await api("POST", "/api/networks/current/broadcasts", {
        params: { timeout: Math.round(seconds * 1000) },
        body: { channel: monitor.id, name: event.value, payload: value },
      });
      responses.replaceChildren(h("h3", {}, `${answers.length} response${answers.length === 1 ? "" : "s"}`),
        h("ol", { class: "answers" }, answers.map((answer) => h("li", {}, h("pre", {}, pretty(answer))))));
      return true;
    }).then((done) => done === undefined && responses.replaceChildren());
  });
  onBroadcast((body) => {
    if (body.channel === monitor.id) renderLog();
  });
  show(h("section", { class: "screen monitor" }, h("div", { class: "grid" }, h("div", {}, choose, send), log)));
  renderLog();
  showListening();
}

// -- data ------------------------------------------------------------------------

function dataScreen() {
  const list = h("div", { class: "groups" });
  const editorSlot = h("div", { class: "editor-slot" });
  const group = h("input", { type: "text", name: "group", required: true, autocomplete: "off" });
  const key = h("input", { type: "text", name: "key", required: true, autocomplete: "off" });
  const value = h("textarea", { rows: 4, spellcheck: "false", class: "mono", name: "value" });
  value.value = "{}";
  const create = h("form", { class: "card", "aria-labelledby": "new-data-title" },
    h("h3", { id: "new-data-title" }, "New item"),
    h("div", { class: "row" }, field("Group", group), field("Key", key)),
    field("Value (JSON)", value),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create")));
  create.addEventListener("submit", (e) => {
    e.preventDefault();
    attempt(async () => {
      const parsed = parseJson(value.value, "The value");
      const item = await api("PUT", `/api/data/${segment(group.value)}/${segment(key.value)}`, { body: parsed });
      await load();
      edit(item);
    });
  });
  show(h("section", { class: "screen" }, h("div", { class: "heading" }, h("h2", {}, "Data"),
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => attempt(load) }, "Reload"))),
    h("div", { class: "split" }, h("div", {}, list, create), editorSlot)));

  async function load() {
    const found = await api("GET", "/api/data", { params: { limit: 1000, sort: "key" } });
    const groups = new Map();
    for (const item of found.results) {
      if (!groups.has(item.group)) groups.set(item.group, []);
      groups.get(item.group).push(item);
    }
    list.replaceChildren(...[...groups.keys()].sort().map((name) => h("section", { class: "card group" },
      h("h3", {}, name),
      h("ul", { class: "keys" }, groups.get(name).map((item) => h("li", {},
        h("button", { type: "button", class: "link", onclick: () => edit(item), "aria-label": `Open ${item.group} / ${item.key}` }, item.key)))))));
    if (!groups.size) list.append(h("p", {}, "No data yet."));
  }

  function edit(item) {
    const text = h("textarea", { rows: 12, spellcheck: "false", class: "mono", name: "item-value" });
    text.value = pretty(item.value);
    const status = h("p", { class: "saved", role: "status" });
    const form = h("form", { class: "card editor", "aria-label": `Data item ${item.group} / ${item.key}` },
      h("h3", {}, `${item.group} / ${item.key}`),
      field("Value (JSON)", text), status,
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Save"),
        h("button", { type: "button", class: "danger", onclick: () => attempt(async () => {
          if (!confirm(`Delete ${item.group} / ${item.key}?`)) return;
          await api("DELETE", `/api/data/${segment(item.group)}/${segment(item.key)}`);
          editorSlot.replaceChildren();
          await load();
        }) }, "Delete"),
        h("button", { type: "button", class: "secondary", onclick: () => editorSlot.replaceChildren() }, "Close")));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      attempt(async () => {
        const parsed = parseJson(text.value, "The value");
        await api("PUT", `/api/data/${segment(item.group)}/${segment(item.key)}`, { body: parsed });
        text.value = pretty(parsed);
        status.textContent = `Saved at ${time(new Date())}.`;
        item.value = parsed;
      });
    });
    editorSlot.replaceChildren(form);
    text.focus();
  }

  return attempt(load);
}

// -- content ---------------------------------------------------------------------

function contentScreen() {
  const tree = h("ul", { class: "tree", role: "list" });
  show(h("section", { class: "screen" }, h("h2", {}, "Content"), h("div", { class: "card" }, tree)));
  return attempt(() => children("root", tree));
}

async function children(parent, into) {
  const found = await api("GET", "/api/content", { params: { parent, limit: 1000, sort: "name" } });
  into.replaceChildren(...found.results.map(contentItem));
  if (!found.results.length) into.append(h("li", {}, h("em", {}, "Empty folder")));
}

function contentItem(item) {
  const kind = (item.subtype || "").split(":").pop();
  if (kind === "folder") {
    const inner = h("ul", { class: "tree", role: "list" });
    const details = h("details", {}, h("summary", {}, h("span", { class: "kind" }, "folder"), item.name), inner);
    let loaded = false;
    details.addEventListener("toggle", () => {
      if (details.open && !loaded) {
        loaded = true;
        attempt(() => children(item.uuid, inner));
      }
    });
    return h("li", { "data-uuid": item.uuid }, details);
  }
  const parts = [h("span", { class: "kind" }, kind || "item"), h("strong", {}, item.name)];
  if (kind === "url") {
    // Only web addresses are links: a javascript: URL in a .url file would run here.
    const web = /^https?:\/\//i.test(String(item.url || ""));
    parts.push(" ", web ? h("a", { href: item.url, target: "_blank", rel: "noopener noreferrer" }, item.url)
      : h("code", {}, String(item.url || "")));
  } else if (kind === "app") {
    parts.push(" ", h("a", { href: deliveryUrl(item), target: "_blank", rel: "noopener noreferrer" }, "Open the app"));
  } else {
    parts.push(" ", h("a", { href: deliveryUrl(item), target: "_blank", rel: "noopener noreferrer" }, "Open"));
    if (item.mimeType) parts.push(h("span", { class: "meta" }, ` ${item.mimeType}${item.size !== undefined ? ", " + item.size + " bytes" : ""}`));
  }
  const figures = [];
  if (String(item.mimeType || "").startsWith("image/")) {
    figures.push(h("figure", {}, h("img", { src: deliveryUrl(item), alt: `Preview of ${item.name}`, loading: "lazy" }),
      h("figcaption", {}, "original")));
    for (const variant of item.variants || []) {
      figures.push(h("figure", {}, h("img", { src: deliveryUrl(item, variant.name), alt: `Preview of ${item.name}, variant ${variant.name}`, loading: "lazy" }),
        h("figcaption", {}, `variant ${variant.name}`)));
    }
  } else if ((item.variants || []).length) {
    parts.push(h("span", { class: "meta" }, " variants: "),
      (item.variants || []).map((v) => h("a", { href: deliveryUrl(item, v.name), target: "_blank", rel: "noopener noreferrer" }, v.name + " ")));
  }
  return h("li", { "data-uuid": item.uuid }, h("div", { class: "item" }, parts),
    figures.length ? h("div", { class: "previews" }, figures) : null);
}

// -- locations -------------------------------------------------------------------

function locationsScreen() {
  const list = h("ul", { class: "plain" });
  const detail = h("div", { class: "editor-slot" });
  show(h("section", { class: "screen" }, h("h2", {}, "Locations"), h("div", { class: "split" }, h("div", { class: "card" }, list), detail)));

  async function open(location) {
    const zones = location.zones || [];
    const layout = h("img", { src: `/api/locations/${segment(location.uuid)}/layout${query({ _rt: auth.restrictedToken })}`,
      alt: `Layout of ${location.name || location.uuid}`, class: "layout" });
    const missing = h("p", { class: "meta", hidden: true }, "This location has no layout image.");
    layout.addEventListener("error", () => {
      layout.hidden = true;
      missing.hidden = false;
    });
    const zoneList = h("div", { class: "zones" });
    detail.replaceChildren(h("article", { class: "card", "aria-label": `Location ${location.name || location.uuid}` },
      h("h3", {}, location.name || location.uuid),
      h("figure", { class: "layout-figure" }, layout, missing,
        h("figcaption", {}, zones.length ? `Zones: ${zones.map((z) => z.name || z.key).join(", ")}` : "No zones")),
      zoneList));
    const parts = await Promise.all(zones.map(async (zone) => {
      const params = { "location.uuid": location.uuid, "location.zones.key": zone.key, limit: 1000 };
      const [devices, things] = await Promise.all([api("GET", "/api/devices", { params }), api("GET", "/api/things", { params })]);
      const names = (docs, kind) => docs.results.length
        ? h("ul", {}, docs.results.map((d) => h("li", {}, h("span", { class: "kind" }, kind), d.name || d.uuid)))
        : h("p", { class: "meta" }, `No ${kind}s`);
      return h("section", { class: "zone", "data-zone": zone.key }, h("h4", {}, `${zone.name || zone.key} `, h("code", {}, zone.key)),
        names(devices, "device"), names(things, "thing"));
    }));
    zoneList.replaceChildren(...parts);
  }

  return attempt(async () => {
    const found = await api("GET", "/api/locations", { params: { limit: 1000 } });
    list.replaceChildren(...found.results.map((loc) => h("li", {},
      h("button", { type: "button", class: "link", onclick: () => attempt(() => open(loc)) }, loc.name || loc.uuid))));
    if (!found.results.length) list.append(h("li", {}, "No locations."));
    else await open(found.results[0]);
  });
}

// -- routing ---------------------------------------------------------------------

const screens = {
  devices: devicesScreen,
  pair: pairScreen,
  monitor: monitorScreen,
  data: dataScreen,
  content: contentScreen,
  locations: locationsScreen,
  things: () => resourceScreen({ title: "Things", path: "/api/things" }),
  experiences: () => resourceScreen({ title: "Experiences", path: "/api/experiences" }),
};

async function route() {
  clearError();
  for (const cleanup of cleanups) cleanup();
  cleanups = [];
  if (!auth) {
    signInScreen();
    return;
  }
  const name = location.hash.replace(/^#\/?/, "").split("/")[0];
  const screen = screens[name];
  if (!screen) {
    history.replaceState(null, "", "#/devices");
    return route();
  }
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === "#/" + name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · EXP console`;
  await screen();
  document.body.dataset.screen = name;
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => route());
window.addEventListener("unhandledrejection", (event) => showError(event.reason));

if (auth) {
  scheduleRefresh();
  signedIn();
}
route();
