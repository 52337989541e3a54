"""Scheduler core: which node fits, spreading, pending reasons, and what the trail says is placed where."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import (
    EnclaveLaunched,
    EventType,
    Failed,
    Pushed,
    Scheduled,
    SchedulingPending,
    Submitted,
    WorkloadExited,
    WorkloadRunning,
)
from ccpipe.schemas.failure import FailureReason
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements, WorkloadSpec, tcb_satisfies
from ccpipe.stages.deploy.inventory import Capacity, NodeAnnouncement, unfit_reason
from ccpipe.stages.deploy.scheduler import (
    NoFit,
    Placement,
    PlacementView,
    choose_node,
    decision_payload,
    due_actions,
    gone_from,
    reserve_slot,
)

DIGEST = "sha256:" + "ab" * 32


def node(node_id: str, tee: str = "snp", *, emulated: bool = False, free: int = 2, total: int = 2,
         tcb: dict[str, int] | None = None) -> NodeAnnouncement:
    return NodeAnnouncement(
        node_id=node_id, tee=TeeType(tee), backend="emulated" if emulated else "configfs-tsm", emulated=emulated,
        tcb=tcb or {}, capacity=Capacity(total=total, free=free),
    )


def req(*types: str, allow_emulated: bool = True, min_tcb: dict[str, int] | None = None) -> TeeRequirements:
    return TeeRequirements(types=[TeeType(t) for t in types], allow_emulated=allow_emulated, min_tcb=min_tcb or {})


def test_snp_only_workload_never_lands_on_tdx_or_sgx() -> None:
    nodes = [node("a-tdx", "tdx", free=9, total=9), node("b-sgx", "sgx", free=9, total=9), node("c-snp", free=1)]
    got = choose_node(nodes, req("snp"), allow_emulated=True)
    assert isinstance(got, Placement) and got.node.node_id == "c-snp"
    assert isinstance(choose_node(nodes[:2], req("snp"), allow_emulated=True), NoFit)


def test_emulated_node_needs_both_the_workload_and_the_deployment_to_allow_it() -> None:
    nodes = [node("emu", emulated=True)]
    assert isinstance(choose_node(nodes, req("snp", allow_emulated=True), allow_emulated=True), Placement)
    refused_by_spec = choose_node(nodes, req("snp", allow_emulated=False), allow_emulated=True)
    refused_by_settings = choose_node(nodes, req("snp", allow_emulated=True), allow_emulated=False)
    for got in (refused_by_spec, refused_by_settings):
        assert isinstance(got, NoFit) and "emulated" in got.reason


def test_min_tcb_is_checked_per_component() -> None:
    assert tcb_satisfies({"snp": 22, "microcode": 213}, {"snp": 21, "microcode": 213}) is None
    assert tcb_satisfies({"snp": 20, "microcode": 999}, {"snp": 21}) == "TCB snp 20 < 21"
    assert "no microcode" in (tcb_satisfies({"snp": 22}, {"microcode": 1}) or "")
    old, new = node("old", tcb={"snp": 20}), node("new", tcb={"snp": 22})
    got = choose_node([old, new], req("snp", min_tcb={"snp": 21}), allow_emulated=True)
    assert isinstance(got, Placement) and got.node.node_id == "new" and "snp >= 21" in got.reason


def test_least_loaded_node_wins_so_replicas_spread() -> None:
    nodes = [node("n1", free=4, total=4), node("n2", free=4, total=4), node("n3", free=4, total=4)]
    load: dict[str, int] = {}
    for _ in range(6):
        got = choose_node(nodes, req("snp"), allow_emulated=True, load=load)
        assert isinstance(got, Placement)
        load[got.node.node_id] = load.get(got.node.node_id, 0) + 1
    assert load == {"n1": 2, "n2": 2, "n3": 2}


def test_short_workloads_take_turns_instead_of_going_to_the_first_node_by_name() -> None:
    # Each workload ends before the next is placed, so every node is idle at every choice;
    # 58 of 60 once went to the node whose name sorts first.
    nodes = [node("a", free=2, total=2), node("b", free=2, total=2), node("c", free=2, total=2)]
    view = PlacementView()
    for i in range(30):
        wl = f"w{i}"
        view.apply(submitted(wl, ["snp"]))
        got = choose_node(nodes, req("snp"), allow_emulated=True, load=view.load(), placed=view.placed())
        assert isinstance(got, Placement)
        view.apply(ev(wl, EventType.SCHEDULED, Scheduled(node_id=got.node.node_id, tee=TeeType.SNP, backend="b")))
        view.apply(ev(wl, EventType.WORKLOAD_RUNNING, WorkloadRunning(node_id=got.node.node_id, image_digest=DIGEST)))
        view.apply(ev(wl, EventType.FAILED, Failed(reason=FailureReason(stage="x", code="c", message="m"))))
    assert view.load() == {} and view.placed() == {"a": 10, "b": 10, "c": 10}


def test_load_outranks_history_and_history_counts_per_slot() -> None:
    small, big = node("small", free=1, total=1), node("big", free=4, total=4)
    # "big" was given more workloads so far, but per slot fewer: it takes the next one
    got = choose_node([small, big], req("snp"), allow_emulated=True, placed={"small": 2, "big": 5})
    assert isinstance(got, Placement) and got.node.node_id == "big"
    # a node given fewer workloads so far still loses to an idle one while it runs one now
    got = choose_node([small, big], req("snp"), allow_emulated=True, load={"big": 1}, placed={"small": 9})
    assert isinstance(got, Placement) and got.node.node_id == "small"


def test_a_decision_folded_twice_is_counted_once() -> None:
    view = PlacementView()
    view.apply(submitted("w", ["snp"]))
    decision = ev("w", EventType.SCHEDULED, Scheduled(node_id="n1", tee=TeeType.SNP, backend="b"))
    view.apply(decision)  # as the scheduler service does right after publishing it
    view.apply(decision, 7)  # and again when it reads the trail back
    assert view.placed() == {"n1": 1}


def test_placements_the_node_has_not_counted_use_up_its_slots() -> None:
    full = node("n1", free=2, total=2)  # the node still says 2 free, but 2 workloads were just placed
    got = choose_node([full], req("snp"), allow_emulated=True, load={"n1": 2})
    assert isinstance(got, NoFit) and "no free capacity" in got.reason
    busy = node("n1", free=0, total=4)  # the node counts 4 running; nothing placed by us
    assert isinstance(choose_node([busy], req("snp"), allow_emulated=True), NoFit)


def test_pending_reason_names_what_is_missing() -> None:
    none = choose_node([], req("snp", "tdx"), allow_emulated=True)
    assert isinstance(none, NoFit) and "no nodes are announced" in none.reason and "snp/tdx" in none.reason
    wrong = choose_node([node("s1", "sgx")], req("snp"), allow_emulated=False)
    assert isinstance(wrong, NoFit) and "s1: TEE sgx is not one of snp" in wrong.reason
    assert wrong.wanted == {"tee_types": ["snp"], "min_tcb": {}, "allow_emulated": False}
    _, payload = decision_payload(wrong, attempt=2)
    assert isinstance(payload, SchedulingPending) and payload.attempt == 2


def test_excluded_node_is_not_chosen_again() -> None:
    nodes = [node("dead"), node("alive", free=1)]
    got = choose_node(nodes, req("snp"), allow_emulated=True, exclude=frozenset({"dead"}))
    assert isinstance(got, Placement) and got.node.node_id == "alive"


def test_capacity_and_node_id_are_validated() -> None:
    with pytest.raises(ValueError, match="exceeds total"):
        Capacity(total=1, free=2)
    with pytest.raises(ValueError):
        node("Bad Id")
    with pytest.raises(InvalidInput, match="node announcement 'x' is malformed"):
        NodeAnnouncement.from_json(b'{"node_id": "x"}', key="x")


def test_stale_heartbeat_is_detected_by_its_own_ttl() -> None:
    now = datetime.now(UTC)
    fresh = node("n").model_copy(update={"heartbeat_at": now - timedelta(seconds=1), "ttl_s": 3.0})
    stale = node("n").model_copy(update={"heartbeat_at": now - timedelta(seconds=10), "ttl_s": 3.0})
    assert not fresh.stale(now) and stale.stale(now)
    assert NodeAnnouncement.from_json(fresh.to_json()) == fresh
    assert unfit_reason(fresh, req("snp"), allow_emulated=True) is None


# --- the view of the trail -------------------------------------------------------------------


def spec(types: list[str]) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {"workload": {"name": "hello"}, "tee": {"types": types, "allow_emulated": True}}
    )


def ev(wl: str, etype: EventType, payload: object) -> Event:
    return Event(type=etype, workload_id=wl, source=Source(component="test"), payload=payload)


def submitted(wl: str, types: list[str]) -> Event:
    return ev(wl, EventType.SUBMITTED, Submitted(
        repo="/r", ref="refs/heads/main", old_commit="0" * 40, new_commit="1" * 40, pusher="me", spec=spec(types)))


def test_view_tracks_load_and_frees_it_when_the_workload_ends() -> None:
    view = PlacementView()
    for i, wl in enumerate(["w1", "w2", "w3"]):
        view.apply(submitted(wl, ["snp"]), i * 3 + 1)
        view.apply(ev(wl, EventType.PUSHED, Pushed(registry="r", repository="x", image_digest=DIGEST,
                                                   reference="docker://r/x@" + DIGEST)), i * 3 + 2)
        view.apply(ev(wl, EventType.SCHEDULED, Scheduled(node_id="n1", tee=TeeType.SNP, backend="b")), i * 3 + 3)
    assert view.load() == {"n1": 3} and view.last_seq == 9
    view.apply(ev("w1", EventType.WORKLOAD_RUNNING, WorkloadRunning(node_id="n1", image_digest=DIGEST)))
    view.apply(ev("w2", EventType.FAILED, Failed(reason=FailureReason(stage="x", code="c", message="m"))))
    assert view.load() == {"n1": 2}
    # an event after the end does not bring the workload back
    view.apply(ev("w2", EventType.SCHEDULED, Scheduled(node_id="n1", tee=TeeType.SNP, backend="b")))
    assert view.load() == {"n1": 2}


def test_due_actions_place_waiting_work_and_move_work_off_a_lost_node() -> None:
    view = PlacementView()
    for wl in ("waits", "lost", "running", "fine"):
        view.apply(submitted(wl, ["snp"]))
    view.apply(ev("waits", EventType.SCHEDULING_PENDING, SchedulingPending(reason="none")))
    lost = ev("lost", EventType.SCHEDULED, Scheduled(node_id="gone", tee=TeeType.SNP, backend="b"))
    view.apply(lost)
    view.apply(ev("running", EventType.SCHEDULED, Scheduled(node_id="gone", tee=TeeType.SNP, backend="b")))
    view.apply(ev("running", EventType.WORKLOAD_RUNNING, WorkloadRunning(node_id="gone", image_digest=DIGEST)))
    view.apply(ev("fine", EventType.SCHEDULED, Scheduled(node_id="live", tee=TeeType.SNP, backend="b")))
    view.apply(submitted("launching", ["snp"]))
    view.apply(ev("launching", EventType.SCHEDULED, Scheduled(node_id="gone", tee=TeeType.SNP, backend="b")))
    view.apply(ev("launching", EventType.ENCLAVE_LAUNCHED,
                  EnclaveLaunched(node_id="gone", tee=TeeType.SNP, backend="b")))
    actions = {a.workload_id: a for a in due_actions(view, ["live"])}
    # a running workload is not moved; one whose node died while it was launching is
    assert set(actions) == {"waits", "lost", "launching"}
    assert actions["lost"].lost_node == "gone" and actions["lost"].attempt == 2
    assert actions["lost"].key == f"{lost.id}#lost"
    assert actions["waits"].lost_node is None and actions["waits"].key.endswith("#retry")


def test_reserve_slot_refuses_a_full_node_and_releases_only_known_gone_workloads() -> None:
    assert reserve_slot({}, "w1", 1, capacity=1, gone=set()) == {"w1": 1}
    assert reserve_slot({"w1": 1}, "w2", 1, capacity=1, gone=set()) is None  # full: the race's loser
    assert reserve_slot({"w1": 1}, "w2", 1, capacity=1, gone={"w1"}) == {"w2": 1}  # w1 ended or moved
    assert reserve_slot({"w1": 1}, "w1", 2, capacity=1, gone={"w1"}) == {"w1": 2}  # a retried decision keeps it


def test_gone_from_never_releases_a_workload_the_view_has_not_seen() -> None:
    view = PlacementView()
    for wl in ("ended", "elsewhere", "here", "waiting"):
        view.apply(submitted(wl, ["snp"]))
    view.apply(ev("ended", EventType.FAILED, Failed(reason=FailureReason(stage="x", code="c", message="m"))))
    view.apply(ev("elsewhere", EventType.SCHEDULED, Scheduled(node_id="n2", tee=TeeType.SNP, backend="b")))
    view.apply(ev("here", EventType.SCHEDULED, Scheduled(node_id="n1", tee=TeeType.SNP, backend="b")))
    view.apply(ev("waiting", EventType.SCHEDULING_PENDING, SchedulingPending(reason="r")))
    assert gone_from(view, "n1") == {"ended", "elsewhere", "waiting"}  # "unseen" and "here" keep their slots


def test_view_keeps_only_the_node_of_an_ended_workload() -> None:
    """A long run's view holds its workloads in flight, not every placement it ever made."""
    view = PlacementView()
    for i in range(300):
        wl = f"w{i}"
        view.apply(submitted(wl, ["snp"]))
        view.apply(ev(wl, EventType.SCHEDULED, Scheduled(node_id=f"n{i % 3}", tee=TeeType.SNP, backend="b")))
        exited = WorkloadExited(node_id=f"n{i % 3}", exit_code=0, duration_s=0.1, output_digest=DIGEST)
        view.apply(ev(wl, EventType.WORKLOAD_EXITED, exited))
    view.apply(submitted("live", ["snp"]))
    view.apply(ev("live", EventType.SCHEDULED, Scheduled(node_id="n0", tee=TeeType.SNP, backend="b")))
    assert list(view.workloads) == ["live"]
    assert view.placed() == {"n0": 101, "n1": 100, "n2": 100} and view.load() == {"n0": 1}
    # a late event of an ended workload brings nothing back, and its slot stays released
    view.apply(ev("w3", EventType.WORKLOAD_RUNNING, WorkloadRunning(node_id="n0", image_digest=DIGEST)))
    assert list(view.workloads) == ["live"] and "w3" in gone_from(view, "n0")
