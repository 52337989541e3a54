"""The audit web page in a real headless Chromium (Debian's), driven by Playwright.

The trail is real (events signed by their components, logged and indexed by the audit
store, checkpoint signed by the log key); the page is served by ``serve_audit_api``; the
proof checks run in the browser with WebCrypto (SHA-256 for RFC 6962, Ed25519 for the note).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from ccpipe.pipeline.audit.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from ccpipe.pipeline.audit.http.service import serve_audit_api
from ccpipe.pipeline.audit.ingest import Ingestor, KeyringFile, StreamMessage
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.services import Endpoints
from ccpipe.pipeline.signing import keyring_path
from ccpipe.schemas import events as ev
from tests.audit_journeys import Names, journey
from tests.conftest import vector
from tests.unit.pipeline.audit.http.audit_http_trail import (
    DENIED,
    FAILED_WL,
    HOSTILE_PUSHER,
    RUNNER_EVIDENCE,
    SIGNATURE_KEY,
    Trail,
    build_trail,
    demo_names,
)

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
STAGES = ["commit", "build", "provenance", "signature", "push", "placement", "attestation", "key_release", "run"]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture
def trail(tmp_path: Path) -> Trail:
    return build_trail(tmp_path / "data")


@pytest.fixture
async def site(trail: Trail) -> AsyncIterator[str]:
    async with serve_audit_api(trail.settings, Endpoints(nats_url="nats://127.0.0.1:4222")) as eps:
        assert eps.audit_api_url is not None
        yield eps.audit_api_url


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    p = await context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    await context.close()
    assert errors == [], f"the page raised: {errors}"


async def search(page: Page, site: str, text: str) -> None:
    await page.goto(site + "/")
    await page.fill("#q", text)
    await page.click("#go")


async def journey_shown(page: Page) -> str:
    """Wait until every proof of the timeline was checked; returns the summary line."""
    summary = page.locator("#proof-summary.proof.verified, #proof-summary.proof.failed")
    await summary.wait_for(timeout=20_000)
    return await summary.inner_text()


def payload(trail: Trail, workload: str, etype: ev.EventType) -> Any:
    return next(e.payload for e in trail.events[workload] if e.type is etype)


async def stage_text(page: Page, stage: str) -> str:
    return await page.locator(f'li.stage[data-stage="{stage}"]').inner_text()


async def test_demo_workload_shows_every_stage_with_its_digests_and_verified_proofs(
        page: Page, site: str, trail: Trail) -> None:
    wl = demo_names().workload_id
    await search(page, site, wl)
    assert await journey_shown(page) == "all 13 proofs verified"
    # Every stage is there, in flow order, and done.
    stages = page.locator("li.stage")
    assert await stages.evaluate_all("els => els.map(e => e.dataset.stage)") == STAGES
    assert await stages.evaluate_all("els => els.map(e => e.dataset.status)") == ["done"] * len(STAGES)
    sub = payload(trail, wl, ev.EventType.SUBMITTED)
    built = payload(trail, wl, ev.EventType.BUILT)
    signed = payload(trail, wl, ev.EventType.SIGNED)
    pushed = payload(trail, wl, ev.EventType.PUSHED)
    sched = payload(trail, wl, ev.EventType.SCHEDULED)
    att: Any = [e.payload for e in trail.events[wl] if e.type is ev.EventType.ATTESTATION_VERIFIED][-1]  # enclave's
    rel = payload(trail, wl, ev.EventType.KEY_RELEASED)
    done = payload(trail, wl, ev.EventType.WORKLOAD_EXITED)
    expected = {
        "commit": [sub.new_commit],
        "build": [built.image_digest],
        "provenance": [built.provenance_digest, RUNNER_EVIDENCE, "verdict: warning"],
        "signature": [signed.image_digest, signed.signature_digest, signed.source_image_digest],
        "push": [pushed.reference],
        "placement": [sched.node_id, sched.tee.value],
        "attestation": [att.evidence_digest, "verdict: affirming"],
        "key_release": [rel.resource, SIGNATURE_KEY, rel.recipient_key_digest, "verdict: released"],
        "run": [done.output_digest, "verdict: exit 0"],
    }
    for stage, values in expected.items():
        text = await stage_text(page, stage)
        for value in values:
            assert value in text, f"{stage} does not show {value}"
    # Each event: its component's signature verdict, links to its raw bytes and its proof,
    # and an in-browser proof check that also verified the checkpoint's Ed25519 signature.
    items = page.locator("#timeline li[data-event-id]")
    assert await items.count() == 13
    for text in await items.all_inner_texts():
        assert "event signature: valid" in text and "raw event" in text
    for text in await page.locator("#timeline .proof").all_inner_texts():
        assert text.startswith("proof verified: leaf ") and "cannot check" not in text
    raw_link = await page.locator('li.stage[data-stage="key_release"] a.raw').first.get_attribute("href")
    resp = await page.request.get(site + str(raw_link))
    assert (await resp.json())["canonical"]["data"]["resource"] == rel.resource


async def test_a_leaf_altered_in_the_store_fails_its_proof_in_the_browser(
        page: Page, site: str, trail: Trail) -> None:
    wl = demo_names().workload_id
    released = next(e for e in trail.events[wl] if e.type is ev.EventType.KEY_RELEASED)
    # A rogue admin rewrites who got the key; the tree and the checkpoint are untouched.
    trail.tamper_leaf(released.id, b'"node_id":"node-001"', b'"node_id":"node-666"')
    await search(page, site, wl)
    assert await journey_shown(page) == "1 proof(s) FAILED"
    bad = page.locator(f'.proof[data-event-id="{released.id}"]')
    assert await bad.inner_text() == "proof FAILED: the recomputed root differs from the checkpoint's root"
    others = page.locator(f'#timeline .proof:not([data-event-id="{released.id}"])')
    assert all(t.startswith("proof verified") for t in await others.all_inner_texts())


async def _tamper_route(page: Page, change: Any) -> None:
    async def handle(route: Route) -> None:
        response = await route.fetch()
        doc = await response.json()
        await route.fulfill(response=response, body=json.dumps(change(doc)))

    await page.route("**/api/v1/events/*/proof", handle)


def _flip_hex(h: str) -> str:
    return ("1" if h[0] == "0" else "0") + h[1:]


def _bad_signature(doc: dict[str, Any]) -> dict[str, Any]:
    # Re-sign nothing: change the signed size line's neighbour (the root stays), so only the
    # signature can catch it — the note now claims another origin.
    note = doc["checkpoint"]
    return {**doc, "checkpoint": "rogue-log" + note[note.index("\n"):]}


@pytest.mark.parametrize(("change", "reason"), [
    pytest.param(lambda d: {**d, "inclusion_path": [_flip_hex(d["inclusion_path"][0]), *d["inclusion_path"][1:]]},
                 "the recomputed root differs from the checkpoint's root", id="altered-path-hash"),
    pytest.param(lambda d: {**d, "inclusion_path": d["inclusion_path"][:-1]},
                 "the inclusion path is shorter than the tree is deep", id="truncated-path"),
    pytest.param(lambda d: {**d, "leaf_index": d["leaf_index"] ^ 1},
                 "the recomputed root differs from the checkpoint's root", id="other-leaf-index"),
    pytest.param(lambda d: {**d, "tree_size": d["tree_size"] + 1},
                 "is not the checkpoint's", id="tree-size-not-the-checkpoint"),
    pytest.param(_bad_signature, "the checkpoint signature does not verify under the log key",
                 id="checkpoint-not-signed-by-log-key"),
])
async def test_a_tampered_proof_document_is_reported_failed(
        page: Page, site: str, change: Any, reason: str) -> None:
    await _tamper_route(page, change)
    await search(page, site, demo_names().workload_id)
    assert await journey_shown(page) == "13 proof(s) FAILED"
    for text in await page.locator("#timeline .proof").all_inner_texts():
        assert text.startswith("proof FAILED: ") and reason in text


async def test_a_proof_of_another_event_is_refused(page: Page, site: str, trail: Trail) -> None:
    other = trail.events[Names(DENIED).workload_id][0]

    async def handle(route: Route) -> None:
        response = await page.request.get(f"{site}/api/v1/events/{other.id}/proof")
        doc = await response.json()
        wanted = route.request.url.split("/")[-2]
        await route.fulfill(response=response, body=json.dumps({**doc, "event_id": wanted}))

    await page.route("**/api/v1/events/*/proof", handle)
    await search(page, site, demo_names().workload_id)
    assert await journey_shown(page) == "13 proof(s) FAILED"
    for text in await page.locator("#timeline .proof").all_inner_texts():
        assert text == "proof FAILED: the logged leaf is not this event"


async def test_denied_workload_shows_the_refusals(page: Page, site: str) -> None:
    await search(page, site, Names(DENIED).workload_id)
    assert await journey_shown(page) == "all 8 proofs verified"
    statuses = await page.locator("li.stage").evaluate_all(
        "els => Object.fromEntries(els.map(e => [e.dataset.stage, e.dataset.status]))")
    assert statuses == {**dict.fromkeys(STAGES[:6], "done"), "attestation": "failed", "key_release": "failed",
                        "run": "missing"}
    assert "verdict: rejected" in await stage_text(page, "attestation")
    assert "verdict: denied" in await stage_text(page, "key_release")


async def test_event_text_is_shown_as_text_never_run(page: Page, site: str) -> None:
    await page.goto(f"{site}/#/workload/{FAILED_WL}")
    await journey_shown(page)
    assert HOSTILE_PUSHER in await stage_text(page, "commit")
    assert await page.locator("#results img").count() == 0
    assert await page.evaluate("window.__pwned") is None
    # The build failed: its stage says so with the reason; nothing after it happened.
    assert await page.locator('li.stage[data-stage="build"]').get_attribute("data-status") == "failed"
    assert "build.copy.missing" in await stage_text(page, "build")


@pytest.mark.parametrize("kind", ["image", "commit", "key"])
async def test_search_by_image_commit_or_key_finds_the_workload(page: Page, site: str, kind: str) -> None:
    n = demo_names()
    text = {"image": n.image, "commit": n.commit, "key": f"kbs:///{n.key}"}[kind]
    await search(page, site, text)
    await page.locator("#workload-list a").first.wait_for(timeout=10_000)
    assert await page.locator("#workload-list a").all_inner_texts() == [n.workload_id]
    await page.locator("#event-list .proof.verified, #event-list .proof.failed").last.wait_for(timeout=10_000)
    assert await page.locator("#event-list .proof.failed").count() == 0
    await page.locator("#workload-list a").first.click()
    assert await journey_shown(page) == "all 13 proofs verified"


async def test_unknown_workload_and_bad_digest_are_explained(page: Page, site: str) -> None:
    await search(page, site, "no-such-workload")
    error = page.locator("#error")
    await error.wait_for(state="visible")
    assert "workload no-such-workload has no events in the trail" in await error.inner_text()
    await page.fill("#q", "sha256:abc")
    await page.click("#go")
    # expect() polls from Playwright's own script world: the page's CSP forbids eval, which a
    # string predicate given to wait_for_function needs whenever it has to poll.
    await expect(page.locator("#error")).to_contain_text("is not a digest")


async def test_checkpoint_panel_shows_the_signed_size_and_root(page: Page, site: str, trail: Trail) -> None:
    store = trail.store()
    try:
        root, size = store.root().hex(), store.size()
    finally:
        store.close()
    await page.goto(site + "/")
    await page.locator("#root").wait_for()
    assert await page.locator("#root").inner_text() == root
    assert f": {size} events" in await page.locator("#checkpoint").inner_text()


def _inclusion_vectors() -> list[dict[str, Any]]:
    folder = vector("merkle/transparency-dev-merkle", "inclusion")
    return [{"name": str(p.relative_to(folder)), **json.loads(p.read_text())} for p in sorted(folder.rglob("*.json"))]


async def test_page_inclusion_check_agrees_with_the_rfc6962_vectors(page: Page, site: str) -> None:
    """The page's RFC 9162 §2.1.3.2 code, run in Chromium, on every transparency-dev inclusion vector."""
    vectors = _inclusion_vectors()
    assert len(vectors) > 90 and any(v["wantErr"] for v in vectors) and not all(v["wantErr"] for v in vectors)
    await page.goto(site + "/")
    verdicts = await page.evaluate("""async (vectors) => {
        const out = {};
        for (const v of vectors) {
          try {
            const root = b64decode(v.root || "");
            const got = await rootFromInclusion(v.leafIdx, v.treeSize, b64decode(v.leafHash || ""),
                                                (v.proof || []).map(b64decode));
            out[v.name] = root.length === 32 && equal(got, root);
          } catch (e) { out[v.name] = false; }
        }
        return out;
    }""", vectors)
    wrong = [v["name"] for v in vectors if verdicts[v["name"]] == v["wantErr"]]
    assert wrong == []


async def test_page_note_signature_check_on_the_c2sp_example(page: Page, site: str) -> None:
    note = vector("merkle/c2sp-signed-note", "example.note").read_text()
    vkey = vector("merkle/c2sp-signed-note", "example.vkey").read_text().strip()
    other = NoteSigner.generate("example.com/foo").verifier.vkey  # same name, another key
    await page.goto(site + "/")
    got = await page.evaluate("""async ([note, vkey, other]) => [
        await verifyNoteSignature(parseNote(note), vkey),
        await verifyNoteSignature(parseNote(note.replace("example", "exampel")), vkey),
        await verifyNoteSignature(parseNote(note), other),
    ]""", [note, vkey, other])
    assert got == [True, False, False]


async def test_a_pinned_log_key_catches_a_server_that_signs_with_its_own_key(
        page: Page, site: str, trail: Trail) -> None:
    rogue = NoteSigner.generate("ccpipe-audit")

    def resign(doc: dict[str, Any]) -> dict[str, Any]:
        text = doc["checkpoint"][: doc["checkpoint"].index("\n\n") + 1]
        note = sign_checkpoint(Checkpoint.from_text(text), rogue).decode()
        return {**doc, "checkpoint": note, "log_public_key": rogue.verifier.vkey}

    await _tamper_route(page, resign)
    wl = demo_names().workload_id
    # Unpinned, the page can only say the server's story is consistent, and says whose key it used.
    await search(page, site, wl)
    assert await journey_shown(page) == "all 13 proofs verified"
    assert all(t.endswith("checkpoint signed by the log key the server names")
               for t in await page.locator("#timeline .proof").all_inner_texts())
    # Pinned to the real log key, the same answers fail.
    await page.fill("#pinned-key", trail.signer.verifier.vkey)
    await page.click("#pin-save")
    assert "pinned log key ccpipe-audit" in await page.locator("#pin-status").inner_text()
    assert await journey_shown(page) == "13 proof(s) FAILED"
    assert set(await page.locator("#timeline .proof").all_inner_texts()) == {
        "proof FAILED: the proof's log key is not the pinned log key"}


async def test_pinned_real_log_key_verifies_the_real_proofs(page: Page, site: str, trail: Trail) -> None:
    await page.goto(site + "/")
    await page.fill("#pinned-key", trail.signer.verifier.vkey)
    await page.click("#pin-save")
    await search(page, site, demo_names().workload_id)
    assert await journey_shown(page) == "all 13 proofs verified"
    assert all(t.endswith("checkpoint signed by the pinned log key")
               for t in await page.locator("#timeline .proof").all_inner_texts())


async def test_page_consistency_check_agrees_with_the_rfc6962_vectors(page: Page, site: str) -> None:
    folder = vector("merkle/transparency-dev-merkle", "consistency")
    vectors = [{"name": str(p.relative_to(folder)), **json.loads(p.read_text())}
               for p in sorted(folder.rglob("*.json"))]
    assert len(vectors) > 90 and any(v["wantErr"] for v in vectors) and not all(v["wantErr"] for v in vectors)
    await page.goto(site + "/")
    verdicts = await page.evaluate("""async (vectors) => {
        const out = {};
        for (const v of vectors) {
          try {
            await verifyConsistency(v.size1, v.size2, (v.proof || []).map(b64decode),
                                    b64decode(v.root1 || ""), b64decode(v.root2 || ""));
            out[v.name] = true;
          } catch (e) { out[v.name] = false; }
        }
        return out;
    }""", vectors)
    assert [v["name"] for v in vectors if verdicts[v["name"]] == v["wantErr"]] == []


async def _seen(page: Page) -> Any:
    return await page.evaluate("JSON.parse(localStorage.getItem('ccpipe.audit.seen'))")


async def test_the_page_checks_that_the_log_only_grew_since_its_last_visit(
        page: Page, site: str, trail: Trail) -> None:
    await page.goto(site + "/")
    growth = page.locator("#consistency")
    await expect(growth).to_contain_text("now remembers checkpoint 21")
    first = await _seen(page)
    assert first["size"] == 21
    # The log grows and signs a new checkpoint; the next visit proves the old tree is a prefix.
    store = trail.store()
    try:
        ingest = Ingestor(store, KeyringFile(keyring_path(trail.settings.data_dir)))
        ingest.ingest([StreamMessage(22 + i, e.canonical_bytes(), None) for i, e in enumerate(journey(5))])
        publish_checkpoint(store, trail.signer)
    finally:
        store.close()
    await page.reload()
    await page.locator("#consistency.proof").wait_for()
    assert await growth.inner_text() == "log consistent: checkpoint 31 extends checkpoint 21 seen before"
    assert (await _seen(page))["size"] == 31


@pytest.mark.parametrize(("seen", "reason"), [
    pytest.param({"size": 10, "root": "ab" * 32}, "the proof does not lead to the older root", id="forked-history"),
    pytest.param({"size": 21, "root": "ab" * 32}, "two different roots for the same tree size",
                 id="same-size-other-root"),
    pytest.param({"size": 50, "root": "ab" * 32}, "the log shrank from 50 to 21 events", id="shrunk"),
])
async def test_a_log_that_rewrote_history_is_flagged(page: Page, site: str, seen: dict[str, Any], reason: str) -> None:
    # The browser saw another history of this log before (as a witness would have).
    await page.goto(site + "/")
    await page.evaluate("s => localStorage.setItem('ccpipe.audit.seen', JSON.stringify(s))",
                        {"origin": "ccpipe-audit", **seen})
    await page.reload()
    await page.locator("#consistency.proof").wait_for()
    text = await page.locator("#consistency").inner_text()
    assert text == f"LOG INCONSISTENT with checkpoint {seen['size']} seen before: {reason}"
    assert (await _seen(page))["size"] == seen["size"]  # the evidence is kept, not overwritten


async def test_a_forged_event_is_shown_flagged_and_still_provably_logged(
        page: Page, site: str, trail: Trail) -> None:
    wl = demo_names().workload_id
    released = next(e for e in trail.events[wl] if e.type is ev.EventType.KEY_RELEASED)
    # Someone publishes a key release naming another node, replaying the real one's signature.
    forged = released.model_copy(update={
        "id": "01a203cc-0000-7000-8000-00000000f00d",
        "payload": released.payload.model_copy(update={"node_id": "node-666"})})
    store = trail.store()
    try:
        signature = next(r.signature for r in store.leaves() if r.event_id == released.id)
        Ingestor(store, KeyringFile(keyring_path(trail.settings.data_dir))).ingest(
            [StreamMessage(store.size() + 1, forged.canonical_bytes(), signature)])
        publish_checkpoint(store, trail.signer)
    finally:
        store.close()
    await search(page, site, wl)
    assert await journey_shown(page) == "all 14 proofs verified"  # the log holds what was on the bus…
    stage = page.locator('li.stage[data-stage="key_release"]')
    assert await stage.locator(".flagged").inner_text() == "1 event(s) not validly signed by their component"
    item = stage.locator(f'li[data-event-id="{forged.id}"]')
    assert "event signature: bad_signature" in await item.inner_text()  # …and says no one vouches for it
    assert await page.locator(".flagged").count() == 1


async def test_a_logged_message_that_is_no_event_is_listed_with_its_proof(
        page: Page, site: str, trail: Trail) -> None:
    wl = demo_names().workload_id
    store = trail.store()
    try:
        junk = json.dumps({"workload_id": wl, "type": "key.released", "payload": {}}).encode()
        Ingestor(store, KeyringFile(keyring_path(trail.settings.data_dir))).ingest(
            [StreamMessage(store.size() + 1, junk, None)])
        publish_checkpoint(store, trail.signer)
    finally:
        store.close()
    await search(page, site, wl)
    assert await journey_shown(page) == "all 14 proofs verified"
    other = page.locator("#other-events li")
    assert await other.count() == 1
    text = await other.inner_text()
    assert "invalid" in text and "no event id" in text and "proof verified: leaf 21 of 22" in text
    assert "null" not in await page.locator("#results").inner_text()


async def test_an_event_can_be_read_in_the_page(page: Page, site: str, trail: Trail) -> None:
    wl = demo_names().workload_id
    submitted = trail.events[wl][0]
    await search(page, site, wl)
    await journey_shown(page)
    item = page.locator(f'#timeline li[data-event-id="{submitted.id}"]')
    await item.locator("button.show-event").click()
    shown = item.locator("pre.event-json")
    await shown.wait_for()
    assert json.loads(await shown.inner_text()) == json.loads(submitted.canonical_bytes())
    await item.locator("button.show-event").click()
    assert await shown.is_hidden()


async def _no_horizontal_overflow(page: Page, shot: Path) -> None:
    await page.screenshot(path=str(shot), full_page=True)
    width = await page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{shot.name}: the page is {width[0]} px wide in a {width[1]} px window"


async def test_landing_page_is_a_live_dashboard_readable_from_phone_to_desktop(
        page: Page, site: str, trail: Trail, tmp_path: Path) -> None:
    """Three workloads, one failing and one denied its key: the landing page lists all three with their
    states, and the refusals, without a search; new events appear without a reload; 420 to 1366 px wide."""
    denied = Names(DENIED).workload_id
    await page.goto(site + "/")
    cards = page.locator("#workloads li.workload")
    await expect(cards).to_have_count(3)
    states = await cards.evaluate_all(
        "els => Object.fromEntries(els.map(e => [e.dataset.workloadId, e.dataset.state]))")
    assert states == {demo_names().workload_id: "succeeded", denied: "denied", FAILED_WL: "failed"}
    assert "build: app/ does not exist at the commit" in await page.locator(
        f'li.workload[data-workload-id="{FAILED_WL}"]').inner_text()
    denied_card = await page.locator(f'li.workload[data-workload-id="{denied}"]').inner_text()
    assert "TEE tdx" in denied_card and "node node-009" in denied_card and "launch measurement differs" in denied_card
    assert denied in await page.locator("#denied-keys").inner_text()
    assert denied in await page.locator("#rejected-attestations").inner_text()
    # Filters narrow the lists (their choices come from the OpenAPI document).
    await page.select_option("#f-state", "denied")
    await expect(cards).to_have_count(1)
    await page.select_option("#f-state", "")
    await page.fill("#f-node", "node-001")
    await page.press("#f-node", "Enter")
    await page.locator("#f-node").blur()
    await expect(cards).to_have_count(1)
    assert await cards.first.get_attribute("data-workload-id") == demo_names().workload_id
    await page.fill("#f-node", "")
    await page.locator("#f-node").blur()
    await expect(cards).to_have_count(3)
    # A new workload logged meanwhile shows up on the open page.
    store = trail.store()
    try:
        ingest = Ingestor(store, KeyringFile(keyring_path(trail.settings.data_dir)))
        ingest.ingest([StreamMessage(store.size() + 1 + i, e.canonical_bytes(), None)
                       for i, e in enumerate(journey(5)[:3])])
    finally:
        store.close()
    await expect(cards).to_have_count(4, timeout=10_000)
    assert await cards.first.get_attribute("data-workload-id") == Names(5).workload_id
    for width, height in ((420, 900), (1366, 900)):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(site + "/")
        await expect(cards).to_have_count(4)
        await _no_horizontal_overflow(page, tmp_path / f"dashboard-{width}.png")
        await page.goto(f"{site}/#/workload/{demo_names().workload_id}")
        await journey_shown(page)
        await _no_horizontal_overflow(page, tmp_path / f"journey-{width}.png")


async def test_a_workloads_page_shows_each_stages_duration(page: Page, site: str) -> None:
    await page.goto(f"{site}/#/workload/{demo_names().workload_id}")
    await journey_shown(page)
    durations = await page.locator("li.stage").evaluate_all(
        "els => Object.fromEntries(els.map(e => [e.dataset.stage, e.querySelector('.duration')?.dataset.seconds]))")
    # Synthetic journey: push 0 s, build +1.5 s, the runner's attestation +0.2 s, signed at +2 s, pushed +2.5 s,
    # placed +2.6 s, attested +3 s, keys +3.1/+3.2 s, exit at +5.25 s.
    assert {k: float(v) for k, v in durations.items()} == pytest.approx(
        {"commit": 0, "build": 1.5, "provenance": 0.2, "signature": 0.3, "push": 0.5, "placement": 0.1,
         "attestation": 0.4, "key_release": 0.2, "run": 2.05})
    assert await page.locator("#journey-duration").inner_text() == "5.25 s from the push to the last stage"
