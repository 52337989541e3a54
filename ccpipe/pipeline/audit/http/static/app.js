// ccpipe audit trail page: a live dashboard of recent workloads and refusals, search, a workload's
// chain of custody with each stage's duration, and in-browser proof checks
// (the checking itself is verify.js). Plain JS, no framework, nothing loaded from elsewhere.
// Every text from the trail is put in the page with textContent, never as markup: event
// fields are written by whoever published them.
"use strict";

const API = "/api/v1";

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

// The log key the user pinned (kept in this browser); "" when none.
const PIN = "ccpipe.audit.logkey";
const pinnedKey = () => localStorage.getItem(PIN) || "";

async function runProof(e, target) {
  target.textContent = "checking proof…";
  target.className = "proof";
  let result;
  try {
    const doc = await getJSON(e.links.proof);
    result = await checkProof(doc, e.event_id, pinnedKey(), e.leaf_index);
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
    e.links.event ? el("a", { href: e.links.event, class: "raw" }, "raw event") : "no event id", " · ",
    el("a", { href: e.links.proof, class: "proof-link" }, "proof"), " · ", proof);
  if (e.links.event) {
    const pre = el("pre", { class: "event-json", hidden: true });
    const toggle = el("button", { type: "button", class: "show-event" }, "show event");
    toggle.addEventListener("click", async () => {
      if (pre.hidden && !pre.textContent) {
        try {
          const detail = await getJSON(e.links.event);
          pre.textContent = JSON.stringify(detail.canonical, null, 2);
        } catch (err) {
          pre.textContent = err.message;
        }
      }
      pre.hidden = !pre.hidden;
      toggle.textContent = pre.hidden ? "show event" : "hide event";
    });
    li.append(" ", toggle, pre);
  }
  return { li, check: () => runProof(e, proof) };
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
  const spans = stageDurations(j.stages, byId);
  const total = spans.reduce((sum, d) => sum + (d || 0), 0);
  for (const [i, s] of j.stages.entries()) {
    const ul = el("ul", { class: "events" });
    for (const id of s.event_ids) {
      const item = eventItem(byId.get(id));
      ul.append(item.li);
      checks.push(item.check);
    }
    ol.append(el("li", { class: `stage ${s.status}`, "data-stage": s.stage, "data-status": s.status },
      el("h3", {}, s.title, el("span", { class: `badge ${s.status}` }, s.status),
        s.verdict ? el("span", { class: "verdict" }, `verdict: ${s.verdict}`) : null,
        s.flagged.length ? el("span", { class: "badge bad flagged" },
          `${s.flagged.length} event(s) not validly signed by their component`) : null),
      spans[i] === null ? null : el("p", { class: "duration", "data-seconds": String(spans[i]) },
        el("progress", { max: total || 1, value: spans[i], title: "share of the whole journey" }),
        ` ${seconds(spans[i])}`),
      Object.keys(s.digests).length ? digestList(s.digests) : null,
      s.event_ids.length ? ul : el("p", {}, "no event in the trail")));
  }
  // Logged messages of this workload that belong to no stage (not valid events) are listed too:
  // the trail records everything that was on the bus.
  const staged = new Set(j.stages.flatMap((s) => s.event_ids));
  const others = j.events.filter((e) => !e.event_id || !staged.has(e.event_id));
  const otherList = el("ul", { class: "events", id: "other-events" });
  for (const e of others) {
    const item = eventItem(e);
    otherList.append(item.li);
    checks.push(item.check);
  }
  const summary = el("p", { id: "proof-summary" }, "checking proofs…");
  const parts = [el("h2", {}, "Chain of custody of ", el("code", {}, j.workload_id)),
    el("p", { id: "journey-duration" }, `${seconds(total)} from the push to the last stage`), summary, ol];
  if (others.length) parts.push(el("h3", {}, `Other logged messages (${others.length})`), otherList);
  results().replaceChildren(...parts);
  // Stages share events (build and provenance): check each event's proof once per place shown.
  await Promise.all(checks.map((c) => c()));
  const failed = document.querySelectorAll("#results .proof.failed").length;
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

const seconds = (s) => (s < 120 ? `${s.toFixed(2)} s` : `${(s / 60).toFixed(1)} min`);

// Each stage's duration: from the end of the stage before it (its latest event) to its own
// latest event; null for a stage with no event. Stages that share events (build and provenance)
// overlap, so a stage never counts time before the previous one ended.
function stageDurations(stages, byId) {
  let previousEnd = null;
  return stages.map((s) => {
    const times = s.event_ids.map((id) => Date.parse(byId.get(id).occurred_at)).filter((t) => !Number.isNaN(t));
    if (!times.length) return null;
    const end = Math.max(...times);
    const start = previousEnd === null ? Math.min(...times) : previousEnd;
    previousEnd = Math.max(end, previousEnd === null ? end : previousEnd);
    return Math.max(0, end - start) / 1000;
  });
}

// ---- dashboard -----------------------------------------------------------------------------
const POLL_MS = 3000;
let lastOverview = "";
let polling = null;
let inFlight = false;

function overviewQuery() {
  const q = new URLSearchParams();
  for (const [id, name] of [["f-state", "state"], ["f-tee", "tee"], ["f-node", "node_id"]]) {
    const v = document.getElementById(id).value.trim();
    if (v) q.set(name, v);
  }
  const window_s = Number(document.getElementById("f-time").value);
  if (window_s) q.set("since", new Date(Date.now() - window_s * 1000).toISOString());
  q.set("limit", "50");
  return q.toString();
}

function workloadCard(w) {
  const where = [w.tee ? `TEE ${w.tee}` : "TEE ?", w.node_id ? `node ${w.node_id}` : "no node yet",
    seconds(w.duration_s), `last: ${w.last_event}`].join(" · ");
  return el("li", { class: `workload ${w.state}`, "data-workload-id": w.workload_id, "data-state": w.state },
    el("div", { class: "head" }, workloadLink(w.workload_id), el("span", { class: `badge state ${w.state}` },
      w.state.replace("_", " "))),
    el("div", { class: "meta" }, where),
    el("div", { class: "meta" }, el("time", { dateTime: w.last_at }, w.last_at.replace("T", " ").replace("Z", " UTC")),
      w.flagged ? " " : null, w.flagged ? el("span", { class: "badge bad" }, `${w.flagged} event(s) not validly signed`) : null),
    w.failure_reason ? el("div", { class: "reason" }, w.failure_reason) : null);
}

function refusalItem(e) {
  return el("li", { "data-event-id": e.event_id, "data-type": e.type }, workloadLink(e.workload_id), " ",
    e.summary, " ", el("small", {}, [e.occurred_at, e.fields.node_id, e.fields.tee].filter(Boolean).join(" · ")));
}

function fillList(id, items, render, empty) {
  const list = document.getElementById(id);
  list.replaceChildren(...(items.length ? items.map(render) : [el("li", { class: "none" }, empty)]));
}

async function refreshOverview() {
  if (inFlight) return;
  inFlight = true;
  const live = document.getElementById("live");
  try {
    const resp = await fetch(`${API}/overview?${overviewQuery()}`, { headers: { Accept: "application/json" } });
    const text = await resp.text();
    if (!resp.ok) throw new Error(JSON.parse(text).error.message);
    if (text !== lastOverview) {
      lastOverview = text;
      const o = JSON.parse(text);
      fillList("workloads", o.workloads, workloadCard, "no workload matches");
      fillList("denied-keys", o.denied_keys, refusalItem, "none");
      fillList("rejected-attestations", o.rejected_attestations, refusalItem, "none");
    }
    live.textContent = `Live: updated ${new Date().toLocaleTimeString()}, every ${POLL_MS / 1000} s.`;
    live.className = "sub";
  } catch (e) {
    live.textContent = `Could not update: ${e.message}; retrying every ${POLL_MS / 1000} s.`;
    live.className = "sub warn";
  } finally {
    inFlight = false;
  }
}

function showDashboard(on) {
  document.getElementById("dashboard").hidden = !on;
  if (on && polling === null) {
    refreshOverview();
    polling = setInterval(() => { if (document.visibilityState === "visible") refreshOverview(); }, POLL_MS);
  } else if (!on && polling !== null) {
    clearInterval(polling);
    polling = null;
  }
}

// The filters' choices come from the API's own document, so they cannot drift from what it accepts.
async function fillFilters() {
  try {
    const doc = await getJSON("/openapi.json");
    const byName = Object.fromEntries(doc.paths["/api/v1/overview"].get.parameters.map((p) => [p.name, p.schema]));
    for (const [id, name] of [["f-state", "state"], ["f-tee", "tee"]]) {
      const select = document.getElementById(id);
      for (const v of byName[name].enum) select.append(el("option", { value: v }, v.replace("_", " ")));
    }
  } catch (e) { /* the filters stay at "any"; the lists still show */ }
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
  showDashboard(!m);
  if (!m) {
    results().replaceChildren();
    return;
  }
  const kind = m[1], value = decodeURIComponent(m[2]);
  document.getElementById("q").value = value;
  // Clear the previous answer at once, so nothing stale is read as the new one.
  results().replaceChildren(el("p", { id: "loading" }, "loading…"));
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
  document.getElementById("filters").addEventListener("submit", (ev) => ev.preventDefault());
  document.getElementById("filters").addEventListener("change", () => { lastOverview = ""; refreshOverview(); });
  fillFilters();
  window.addEventListener("hashchange", route);
  showCheckpoint();
  route();
});
