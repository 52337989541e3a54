"""``/metrics``, ``/healthz`` and ``/readyz`` of every ``ccpipe serve COMPONENT`` process, and their
counters moving while one workload goes from push to exit.

``ccpipe up --only nats,registry`` runs the infrastructure; each component runs in its own
process with its own ``CCPIPE_METRICS_PORT``; each process's exposition is parsed with
prometheus_client's text parser before and after the workload.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccpipe.pipeline.cli.demo_repository import make_demo_repository
from ccpipe.pipeline.servers import free_port
from ccpipe.schemas.config import Settings
from tests.integration.test_serve_cluster import Processes, serve_env, submit, wait_endpoints, wait_exited

pytestmark = pytest.mark.integration
COMPONENTS = ("kbs", "audit", "build", "attest", "sign", "push", "schedule", "runner")
STAGES = ("build", "attest", "sign", "push", "schedule")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


def get(url: str) -> tuple[int, str, str]:
    """(status, Content-Type, body) of a GET; an HTTP error status is an answer too."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def scrape(base: str) -> Samples:
    status, content_type, text = get(f"{base}/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (base, status, content_type)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def test_every_served_component_exposes_metrics_that_move_and_answers_health(
        tmp_path: Path, processes: Processes) -> None:
    data = tmp_path / "data"
    up = processes.start("up", ["up", "--only", "nats,registry"], {"CCPIPE_DATA_DIR": str(data)})
    eps = wait_endpoints(data, up)
    url = str(eps["nats_url"])
    env = serve_env(data, url, eps)
    ports = {component: free_port() for component in COMPONENTS}
    for component in COMPONENTS:
        processes.start(component, ["serve", component], {**env, "CCPIPE_METRICS_PORT": str(ports[component])})
    processes.wait_ready(("ccpipe serves ", "runner node "), timeout=120)
    base = {component: f"http://127.0.0.1:{port}" for component, port in ports.items()}
    for i, component in enumerate(COMPONENTS, start=1):  # each process says where its listener is
        assert f"{base[component]}/metrics" in processes.log(i) or component == "runner", processes.log(i)[-2000:]

    for component in COMPONENTS:
        assert get(f"{base[component]}/healthz")[::2] == (200, json.dumps({"status": "ok"})), component
        status, _, body = get(f"{base[component]}/readyz")
        assert (status, json.loads(body)["status"]) == (200, "ready"), (component, body)
    before = {component: scrape(base[component]) for component in COMPONENTS}

    _, work = make_demo_repository(tmp_path / "demo", data)
    workload = submit(work, env)
    seen = (await wait_exited(Settings(data_dir=data, nats_url=url), url, [workload], timeout=180))[workload]
    assert "workload.exited" in seen, f"{seen}\n" + "\n".join(
        processes.log(i)[-1500:] for i in range(len(processes.procs)))
    after = {component: scrape(base[component]) for component in COMPONENTS}

    def moved(process: str, name: str, /, **labels: str) -> bool:
        return total(after[process], name, **labels) > total(before[process], name, **labels)

    # each stage counted and timed its delivery in its own process (and only there)
    for stage in STAGES:
        assert moved(stage, "ccpipe_stage_handled_total", stage=stage, outcome="ok"), stage
        assert moved(stage, "ccpipe_stage_handler_duration_seconds_count", stage=stage), stage
        for other in set(STAGES) - {stage}:
            assert total(after[other], "ccpipe_stage_handled_total", stage=stage) == 0, (stage, other)
    assert moved("build", "ccpipe_events_published_total", component="build", type="built")
    runner_stages = {dict(ls)["stage"] for (n, ls) in after["runner"] if n == "ccpipe_stage_handled_total"}
    assert len(runner_stages) == 1 and next(iter(runner_stages)).startswith("runner-"), runner_stages
    assert moved("runner", "ccpipe_stage_handled_total", outcome="ok")
    # the KBS: Trustee's names for attestations, ccpipe's for releases by verdict
    assert moved("kbs", "kbs_attestation_requests_total")
    assert moved("kbs", "kbs_attestation_successes_total")
    assert moved("kbs", "ccpipe_kbs_key_requests_total", verdict="released")
    # the audit log: what it indexed, and its lag behind the stream
    assert moved("audit", "ccpipe_audit_indexed_seq")
    assert ("ccpipe_audit_ingest_lag_events", frozenset()) in after["audit"]
