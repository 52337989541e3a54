// ccpipe audit trail page: search, a workload's chain of custody, and in-browser proof checks.
// Plain JS, no framework, nothing loaded from elsewhere. Every text from the trail is put in the
// page with textContent, never as markup: event fields are written by whoever published them.
"use strict";

const API = "/api/v1";
const enc = new TextEncoder();

// ---- small DOM helper --------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function getJSON(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = body && body.error ? body.error : { message: `${path}: HTTP ${resp.status}`, hint: "" };
    throw new Error(err.hint ? `${err.message} (${err.hint})` : err.message);
  }
  return body;
}

// ---- bytes and hashes ---------------------------------------------------------------------
function b64decode(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function hexdecode(hex) {
  if (!/^([0-9a-f]{2})*$/.test(hex)) throw new Error("not lower-case hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}
const leafHash = (leaf) => sha256(concat(Uint8Array.of(0), leaf));
const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

// RFC 9162 section 2.1.3.2: the root an inclusion path leads to from a leaf hash.
async function rootFromInclusion(index, size, hash, path) {
  if (!(index >= 0 && index < size)) throw new Error(`leaf ${index} is outside a tree of ${size}`);
  if (hash.length !== 32 || path.some((p) => p.length !== 32)) throw new Error("a hash is not 32 bytes");
  let fn = index, sn = size - 1, r = hash;
  for (const p of path) {
    if (sn === 0) throw new Error("the inclusion path is longer than the tree is deep");
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("the inclusion path is shorter than the tree is deep");
  return r;
}

// RFC 9162 section 2.1.4.2: does the consistency proof show that the tree (size1, root1) is a
// prefix of (size2, root2)? Throws with the reason when it does not. Like the transparency-dev
// vectors, a proof from size 0 is refused.
async function verifyConsistency(size1, size2, proof, root1, root2) {
  if (!(size1 >= 1 && size1 <= size2)) throw new Error(`no consistency proof exists from ${size1} to ${size2}`);
  if (size1 === size2) {
    if (proof.length !== 0) throw new Error("equal sizes need an empty proof");
    if (!equal(root1, root2)) throw new Error("two different roots for the same tree size");
    return;
  }
  if (root1.length !== 32 || root2.length !== 32 || proof.some((p) => p.length !== 32)) {
    throw new Error("a hash is not 32 bytes");
  }
  const path = (size1 & (size1 - 1)) === 0 ? [root1, ...proof] : [...proof];
  if (path.length === 0) throw new Error("the consistency proof is empty");
  let fn = size1 - 1, sn = size2 - 1;
  while (fn % 2 === 1) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) throw new Error("the consistency proof is too long");
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("the consistency proof is too short");
  if (!equal(fr, root1)) throw new Error("the proof does not lead to the older root");
  if (!equal(sr, root2)) throw new Error("the proof does not lead to the newer root");
}

// ---- C2SP signed notes ---------------------------------------------------------------------
// A note is text (ending in a newline), a blank line, then "— <name> base64(keyhash ‖ sig)" lines.
function parseNote(note) {
  const split = note.indexOf("\n\n");
  if (split < 0) throw new Error("the note has no signature block");
  const sigs = note.slice(split + 2).split("\n").filter((l) => l !== "").map((line) => {
    if (!line.startsWith("\u2014 ")) throw new Error("a signature line does not start with an em dash");
    const [name, b64] = line.slice(2).split(" ");
    return { name, raw: b64decode(b64) };
  });
  return { text: note.slice(0, split + 1), sigs };
}

function parseCheckpoint(note) {
  const { text, sigs } = parseNote(note);
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("the checkpoint text is malformed");
  const root = b64decode(lines[2]);
  if (root.length !== 32) throw new Error("the checkpoint root is not 32 bytes");
  return { text, origin: lines[0], size: Number(lines[1]), root, sigs };
}

// Whether the note (as parseNote gives it) carries a valid signature by the verifier key
// vkey (name+hexkeyhash+base64(0x01 ‖ key)): true/false, or null when this browser has no
// Ed25519 in WebCrypto. Throws on a malformed key.
async function verifyNoteSignature(note, vkey) {
  const parts = vkey.split("+");
  if (parts.length < 3) throw new Error("the log key is not name+keyhash+key");
  const [name, hashHex] = parts;
  const typed = b64decode(parts.slice(2).join("+"));
  if (typed.length !== 33 || typed[0] !== 1) throw new Error("the log key is not an Ed25519 note key");
  const keyHash = hexdecode(hashHex);
  const want = (await sha256(concat(enc.encode(name + "\n"), typed))).slice(0, 4);
  if (!equal(keyHash, want)) throw new Error("the log key's hash does not match its key");
  const sig = note.sigs.find((s) => s.name === name && s.raw.length === 68 && equal(s.raw.slice(0, 4), keyHash));
  if (!sig) return false;
  let key;
  try {
    key = await crypto.subtle.importKey("raw", typed.slice(1), { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    return null;
  }
  return crypto.subtle.verify({ name: "Ed25519" }, key, sig.raw.slice(4), enc.encode(note.text));
}

// The log key the user pinned (kept in this browser); "" when none.
const PIN = "ccpipe.audit.logkey";
const pinnedKey = () => localStorage.getItem(PIN) || "";

// Checks one proof document; returns {ok, message}. Without a pinned key the checkpoint is
// checked against the key the server names, which shows consistency, not who signed.
async function checkProof(doc, expectedId) {
  try {
    const pinned = pinnedKey();
    if (pinned && doc.log_public_key !== pinned) throw new Error("the proof's log key is not the pinned log key");
    if (doc.event_id !== expectedId) throw new Error(`the proof is for event ${doc.event_id}`);
    const leaf = b64decode(doc.leaf);
    let logged;
    try { logged = JSON.parse(new TextDecoder().decode(leaf)); } catch (e) { logged = null; }
    if (!logged || logged.id !== expectedId) throw new Error("the logged leaf is not this event");
    const cp = parseCheckpoint(doc.checkpoint);
    if (cp.size !== doc.tree_size) throw new Error(`tree size ${doc.tree_size} is not the checkpoint's ${cp.size}`);
    const path = doc.inclusion_path.map(hexdecode);
    const root = await rootFromInclusion(doc.leaf_index, doc.tree_size, await leafHash(leaf), path);
    if (!equal(root, cp.root)) throw new Error("the recomputed root differs from the checkpoint's root");
    const signed = await verifyNoteSignature(cp, doc.log_public_key);
    if (signed === false) throw new Error("the checkpoint signature does not verify under the log key");
    const note = signed === null ? " (this browser cannot check Ed25519 signatures)"
      : pinned ? ", checkpoint signed by the pinned log key" : ", checkpoint signed by the log key the server names";
    return { ok: true, message: `proof verified: leaf ${doc.leaf_index} of ${doc.tree_size}${note}` };
  } catch (e) {
    return { ok: false, message: `proof FAILED: ${e.message}` };
  }
}

async function runProof(eventId, target) {
  target.textContent = "checking proof…";
  target.className = "proof";
  let result;
  try {
    result = await checkProof(await getJSON(`${API}/events/${encodeURIComponent(eventId)}/proof`), eventId);
  } catch (e) {
    result = { ok: false, message: `proof FAILED: ${e.message}` };
  }
  target.textContent = result.message;
  target.className = result.ok ? "proof verified" : "proof failed";
}

// ---- rendering -----------------------------------------------------------------------------
const results = () => document.getElementById("results");

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

function eventItem(e) {
  const proof = el("span", { class: "proof", "data-event-id": e.event_id }, "proof not checked");
  const sigClass = e.signature === "valid" ? "valid" : "bad";
  const li = el("li", { "data-event-id": e.event_id, "data-type": e.type },
    el("code", {}, e.type), " ", e.summary, " ",
    el("span", { class: `badge ${sigClass}`, title: "Ed25519 signature of the emitting component" },
      `event signature: ${e.signature}`), " ",
    el("small", {}, `${e.occurred_at} by ${e.component} · leaf ${e.leaf_index} · `),
    el("a", { href: e.links.event, class: "raw" }, "raw event"), " · ",
    el("a", { href: e.links.proof, class: "proof-link" }, "proof"), " · ", proof);
  return { li, check: () => runProof(e.event_id, proof) };
}

function digestList(digests) {
  const dl = el("dl", { class: "digests" });
  for (const [k, v] of Object.entries(digests)) dl.append(el("dt", {}, k), el("dd", { class: "mono" }, v));
  return dl;
}

function workloadLink(id) {
  return el("a", { href: `#/workload/${encodeURIComponent(id)}` }, id);
}

async function showJourney(workloadId) {
  const j = await getJSON(`${API}/workloads/${encodeURIComponent(workloadId)}/journey`);
  const byId = new Map(j.events.map((e) => [e.event_id, e]));
  const checks = [];
  const ol = el("ol", { class: "timeline", id: "timeline" });
  for (const s of j.stages) {
    const ul = el("ul", { class: "events" });
    for (const id of s.event_ids) {
      const item = eventItem(byId.get(id));
      ul.append(item.li);
      checks.push(item.check);
    }
    ol.append(el("li", { class: `stage ${s.status}`, "data-stage": s.stage, "data-status": s.status },
      el("h3", {}, s.title, el("span", { class: `badge ${s.status}` }, s.status),
        s.verdict ? el("span", { class: "verdict" }, `verdict: ${s.verdict}`) : null),
      Object.keys(s.digests).length ? digestList(s.digests) : null,
      s.event_ids.length ? ul : el("p", {}, "no event in the trail")));
  }
  const summary = el("p", { id: "proof-summary" }, "checking proofs…");
  results().replaceChildren(el("h2", {}, "Chain of custody of ", el("code", {}, j.workload_id)), summary, ol);
  // Stages share events (build and provenance): check each event's proof once per place shown.
  await Promise.all(checks.map((c) => c()));
  const failed = document.querySelectorAll("#timeline .proof.failed").length;
  summary.textContent = failed ? `${failed} proof(s) FAILED` : `all ${checks.length} proofs verified`;
  summary.className = failed ? "proof failed" : "proof verified";
}

function eventTable(events) {
  const checks = [];
  const ul = el("ul", { class: "events", id: "event-list" });
  for (const e of events) {
    const item = eventItem(e);
    item.li.prepend(workloadLink(e.workload_id), " ");
    ul.append(item.li);
    checks.push(item.check);
  }
  return { ul, checks };
}

async function showEvents(title, events, workloads) {
  const { ul, checks } = eventTable(events);
  const wl = el("ul", { id: "workload-list" });
  for (const w of workloads) wl.append(el("li", {}, workloadLink(w)));
  results().replaceChildren(el("h2", {}, title),
    el("h3", {}, `Workloads (${workloads.length})`), wl,
    el("h3", {}, `Events (${events.length})`), events.length ? ul : el("p", {}, "none"));
  await Promise.all(checks.map((c) => c()));
}

function detectKind(q) {
  if (/^sha(256|384|512):/.test(q)) return "image";
  if (/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(q)) return "commit";
  if (q.includes("/")) return "key";
  return "workload";
}

async function route() {
  showError("");
  const m = location.hash.match(/^#\/(workload|image|commit|key)\/(.+)$/);
  if (!m) return;
  const kind = m[1], value = decodeURIComponent(m[2]);
  document.getElementById("q").value = value;
  try {
    if (kind === "workload") {
      await showJourney(value);
    } else if (kind === "image") {
      const r = await getJSON(`${API}/images/${encodeURIComponent(value)}/runs`);
      await showEvents(`Everything that ran ${value}`, r.events, r.workloads);
    } else if (kind === "commit") {
      const r = await getJSON(`${API}/events?commit=${encodeURIComponent(value)}&limit=1000`);
      const wls = [...new Set(r.events.map((e) => e.workload_id))];
      await showEvents(`Built from commit ${value}`, r.events, wls);
    } else {
      const resource = value.replace(/^kbs:\/\/\/?/, "");
      const r = await getJSON(`${API}/keys/${resource.split("/").map(encodeURIComponent).join("/")}/recipients`);
      const wls = [...new Set(r.releases.map((e) => e.workload_id))];
      await showEvents(`Who got key ${resource}`, r.releases, wls);
    }
  } catch (e) {
    results().replaceChildren();
    showError(e.message);
  }
}

const SEEN = "ccpipe.audit.seen";
const toHex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

// The log must only grow: check the latest checkpoint against the one this browser saw last
// (kept in localStorage) with a consistency proof, and remember the newer one only if it holds.
async function checkGrowth(cp, target) {
  let seen = null;
  try { seen = JSON.parse(localStorage.getItem(SEEN) || "null"); } catch (e) { seen = null; }
  const remember = () => localStorage.setItem(SEEN, JSON.stringify({ origin: cp.origin, size: cp.size,
                                                                    root: toHex(cp.root) }));
  if (!seen || seen.origin !== cp.origin || seen.size === 0) {
    remember();
    target.textContent = `This browser now remembers checkpoint ${cp.size}; later visits check that the log only grew.`;
    target.className = "";
    return;
  }
  try {
    if (seen.size > cp.size) throw new Error(`the log shrank from ${seen.size} to ${cp.size} events`);
    let proof = [];
    if (seen.size < cp.size) {
      const doc = await getJSON(`${API}/consistency?from=${seen.size}&to=${cp.size}`);
      const pinned = pinnedKey();
      if (pinned && doc.log_public_key !== pinned) throw new Error("the log key is not the pinned log key");
      const newer = parseCheckpoint(doc.to_checkpoint || "");
      if (newer.size !== cp.size || !equal(newer.root, cp.root)) throw new Error("the API disagrees on the checkpoint");
      if (await verifyNoteSignature(newer, pinned || doc.log_public_key) === false) {
        throw new Error("the checkpoint signature does not verify under the log key");
      }
      proof = doc.proof.map(hexdecode);
    }
    await verifyConsistency(seen.size, cp.size, proof, hexdecode(seen.root), cp.root);
    remember();
    target.textContent = `log consistent: checkpoint ${cp.size} extends checkpoint ${seen.size} seen before`;
    target.className = "proof verified";
  } catch (e) {
    target.textContent = `LOG INCONSISTENT with checkpoint ${seen.size} seen before: ${e.message}`;
    target.className = "proof failed";
  }
}

async function showCheckpoint() {
  const target = document.getElementById("checkpoint");
  const growth = document.getElementById("consistency");
  try {
    const resp = await fetch(`${API}/checkpoint`);
    if (!resp.ok) throw new Error((await resp.json()).error.message);
    const cp = parseCheckpoint(await resp.text());
    target.replaceChildren("Latest checkpoint of ", el("code", {}, cp.origin), `: ${cp.size} events, root `,
      el("code", { id: "root" }, toHex(cp.root)), `, signed by ${cp.sigs.map((s) => s.name).join(", ")}.`);
    await checkGrowth(cp, growth);
  } catch (e) {
    target.textContent = `No checkpoint: ${e.message}`;
  }
}

async function suggest() {
  const q = document.getElementById("q").value.trim();
  if (detectKind(q) !== "workload" || q.length > 128) return;
  try {
    const r = await getJSON(`${API}/workloads?search=${encodeURIComponent(q)}&limit=20`);
    document.getElementById("workload-ids").replaceChildren(...r.workloads.map((w) => el("option", { value: w })));
  } catch (e) { /* suggestions are a convenience; the search itself reports errors */ }
}

function showPin() {
  const pinned = pinnedKey();
  document.getElementById("pinned-key").value = pinned;
  document.getElementById("pin-status").textContent = pinned
    ? `Proofs are checked against the pinned log key ${pinned.split("+")[0]}.`
    : "No log key pinned: checkpoints are checked against the key the server names.";
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("pin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = document.getElementById("pinned-key").value.trim();
    if (key) localStorage.setItem(PIN, key); else localStorage.removeItem(PIN);
    showPin();
    route();
  });
  showPin();
  document.getElementById("search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = document.getElementById("q").value.trim();
    if (!q) return;
    const chosen = document.getElementById("kind").value;
    const kind = chosen === "auto" ? detectKind(q) : chosen;
    const next = `#/${kind}/${encodeURIComponent(q)}`;
    if (location.hash === next) route(); else location.hash = next;
  });
  document.getElementById("q").addEventListener("input", suggest);
  window.addEventListener("hashchange", route);
  showCheckpoint();
  route();
});
