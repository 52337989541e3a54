// ccpipe audit trail: checking proofs in the browser, with no ccpipe code and nothing but
// WebCrypto. RFC 6962 / RFC 9162 hashing (leaf = SHA-256(0x00 ‖ bytes), node = SHA-256(0x01 ‖
// l ‖ r)), inclusion and consistency proofs, C2SP signed notes (Ed25519). Pure: no DOM, no
// fetch; app.js calls these.
"use strict";

const enc = new TextEncoder();

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

// Checks one proof document of event expectedId (for a logged message without an id: "" and
// its leaf index expectedLeaf); returns {ok, message}. Without a pinned log key ("" for none)
// the checkpoint is checked against the key the server names, which shows the answers are
// consistent, not who signed them.
async function checkProof(doc, expectedId, pinned, expectedLeaf) {
  try {
    if (pinned && doc.log_public_key !== pinned) throw new Error("the proof's log key is not the pinned log key");
    if ((doc.event_id || "") !== expectedId) throw new Error(`the proof is for event ${doc.event_id}`);
    const leaf = b64decode(doc.leaf);
    if (expectedId) {
      let logged;
      try { logged = JSON.parse(new TextDecoder().decode(leaf)); } catch (e) { logged = null; }
      if (!logged || logged.id !== expectedId) throw new Error("the logged leaf is not this event");
    } else if (doc.leaf_index !== expectedLeaf) {
      throw new Error(`the proof is for leaf ${doc.leaf_index}, not ${expectedLeaf}`);
    }
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
