"""``ccpipe submit`` of valid pushes without the models, the settings model or telemetry.

The git hook runs ``ccpipe submit`` on every push. Through the models (pydantic, the settings
of pydantic-settings, every payload type) a submit cost ~0.4 s of CPU, most of it imports;
this path builds the same ``submitted`` events from plain values (:mod:`ccpipe.schemas.spec_rules`,
:mod:`ccpipe.schemas.cloudevent_wire`), signs and publishes them. It talks to NATS through
:mod:`ccpipe.pipeline.light_nats` (a blocking client of a few hundred lines) rather than nats-py,
whose import with asyncio was most of what remained; where components are enrolled it packs and
seals the pushed source as :func:`~ccpipe.pipeline.source_bundles.store_source` does, with the
JWE written without joserfc (:func:`ccpipe.crypto.jose.encrypt_general_ec`).

It takes only the common case and declines (returns ``None``, before publishing anything)
whenever the full path could behave differently: a ``CCPIPE_*`` setting it does not read
(telemetry included), a TLS or WebSocket server, services that are not found, a push whose spec
or event it is unsure of, a connection or a stream that is not as expected. The full path then
runs from the start and gives its own output, errors and exit codes. Once the first event is
published there is no going back: a failed publish is the same :class:`TransientError` the
publisher raises.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ccpipe.pipeline.event_signature import SIGNATURE_HEADER, signature_header
from ccpipe.pipeline.light_nats import LightNats, LightNatsError
from ccpipe.pipeline.locks import pid_alive
from ccpipe.pipeline.signing import component_key, enrolled_mode
from ccpipe.pipeline.trigger import SPEC_FILE, Push, _git_bytes, new_workload_id, uuid7_text
from ccpipe.schemas.canonical import canonical_json
from ccpipe.schemas.cloudevent_wire import STRUCTURED_CONTENT_TYPE, submitted_cloudevent
from ccpipe.schemas.errors import CcpipeError, TransientError
from ccpipe.schemas.settings_rules import ENV_PREFIX, default_data_dir, nats_servers, normal_nats_url
from ccpipe.schemas.spec_rules import plain_spec

SETTINGS_FIELDS = frozenset({
    "data_dir", "nats_url", "nats_creds", "nats_creds_dir", "nats_ca", "nats_tls_cert", "nats_tls_key",
    "nats_server_bin", "registry", "registry_bin", "registry_tls", "registry_ca", "registry_username",
    "registry_password_file", "kbs_url", "nats_port", "registry_port", "kbs_port", "audit_api_port", "audit_db",
    "listen_host", "metrics_port", "metrics_host", "otlp_endpoint", "audit_api_header_timeout_s",
    "audit_api_body_timeout_s", "audit_api_heavy_queries", "max_deliver", "ack_wait_s", "retry_attempts",
    "allow_emulated", "sandbox_limits", "sandbox_cgroup", "k8s_manifest_dir", "retain_workloads", "retain_hours",
    "admin_key",
})  # fmt: skip
"""Every field of :class:`ccpipe.schemas.config.Settings` (a test keeps the two equal)."""
READ_FIELDS = frozenset({"data_dir", "nats_url", "nats_creds", "nats_creds_dir", "admin_key"})
"""The fields this path reads itself; any other field set in the environment sends a submit down the full path."""
UNUSED_FIELDS: frozenset[str] = frozenset()
"""Fields a submit never uses: set or not, the quick path may run."""
SUBMIT_IDENTITY = "submit"
"""``Component.SUBMIT``: the NATS identity, and the component whose key signs ``submitted``."""
EVENTS_STREAM = "CCPIPE_EVENTS"
"""``ccpipe.pipeline.bus.EVENTS_STREAM`` (a test keeps them equal)."""


@dataclass(frozen=True)
class SubmitSettings:
    """What a submit reads of the ``CCPIPE_*`` settings, by the rules of :class:`~ccpipe.schemas.config.Settings`."""

    data_dir: Path
    nats_url: str | None
    nats_creds: Path | None
    nats_creds_dir: Path | None
    admin_key: str | None = None
    """``CCPIPE_ADMIN_KEY``: where set, this path runs only when the data directory pins that key already."""


def read_submit_settings(environ: Mapping[str, str]) -> SubmitSettings | None:
    """The settings a submit needs, as ``Settings`` reads them from ``environ``; None when unsure.

    Variables are matched case-insensitively, as pydantic-settings does; an empty value, a value
    seen twice or a variable of a field this path does not read is left to the model.
    """
    values: dict[str, str] = {}
    for name, value in environ.items():
        lowered = name.lower()
        if not lowered.startswith(ENV_PREFIX.lower()):
            continue
        field = lowered[len(ENV_PREFIX):]
        if field not in SETTINGS_FIELDS or field in UNUSED_FIELDS:
            continue  # not a setting (extra="ignore"), or one a submit does not use
        if field not in READ_FIELDS or field in values or not value:
            return None
        values[field] = value
    nats_url = values.get("nats_url")
    if nats_url is not None:
        try:
            nats_url = normal_nats_url(nats_url)
        except ValueError:
            return None
    return SubmitSettings(
        data_dir=Path(values["data_dir"]) if "data_dir" in values else default_data_dir(),
        nats_url=nats_url,
        nats_creds=Path(v) if (v := values.get("nats_creds")) else None,
        nats_creds_dir=Path(v) if (v := values.get("nats_creds_dir")) else None,
        admin_key=values.get("admin_key"),
    )


def nats_url_of(settings: SubmitSettings) -> str | None:
    """The NATS URL as ``find_endpoints`` gives it (set, or from a live ``ccpipe up``), or None."""
    if settings.nats_url:
        return settings.nats_url
    try:
        endpoints = json.loads((settings.data_dir / "endpoints.json").read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(endpoints, dict) or type(endpoints.get("nats_url")) is not str:
        return None
    pid = endpoints.get("pid")
    return endpoints["nats_url"] if type(pid) is int and pid_alive(pid) else None


def creds_file(settings: SubmitSettings) -> str | bool | None:
    """The creds file of the submit identity, None without one, False when the model must say why it fails."""
    path = settings.nats_creds or (settings.nats_creds_dir or settings.data_dir / "creds") / f"{SUBMIT_IDENTITY}.creds"
    if settings.nats_creds is None and not path.exists():
        return None
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError:
        return False
    return str(path)


@dataclass(frozen=True)
class PlainSubmission:
    """A ``submitted`` event built without the models: its canonical bytes and what is printed of it."""

    event_id: str
    workload_id: str
    ref: str
    new_commit: str
    data: bytes
    push: Push
    payload: dict[str, Any]
    occurred_at: datetime

    @property
    def nats_subject(self) -> str:
        """``ccpipe.evt.<workload_id>.submitted``."""
        return f"ccpipe.evt.{self.workload_id}.submitted"

    def with_repo(self, repo: str) -> PlainSubmission | None:
        """The same event naming ``repo`` (the stored source) instead of the local repository; None when unsure."""
        payload = {**self.payload, "repo": repo}
        document = submitted_cloudevent(event_id=self.event_id, workload_id=self.workload_id,
                                        occurred_at=self.occurred_at, pusher=self.push.pusher, payload=payload)
        if document is None:
            return None
        return replace(self, data=canonical_json(document), payload=payload)


def plain_submission(push: Push) -> PlainSubmission | None:
    """The ``submitted`` event of ``push`` as ``make_submission`` builds it, or None when unsure."""
    try:
        raw = _git_bytes(push.repo, "show", f"{push.new}:{SPEC_FILE}")
        data = tomllib.loads(raw.decode("utf-8")) if len(raw) <= 1 << 20 else None
    except (CcpipeError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None
    spec = plain_spec(data)
    if spec is None:
        return None
    event_id, workload_id = uuid7_text(), new_workload_id(spec["workload"]["name"])
    payload = {"repo": str(push.repo), "ref": push.ref, "old_commit": push.old, "new_commit": push.new,
               "pusher": push.pusher, "spec": spec}
    occurred_at = datetime.now(UTC)
    document = submitted_cloudevent(event_id=event_id, workload_id=workload_id, occurred_at=occurred_at,
                                    pusher=push.pusher, payload=payload)
    if document is None:
        return None
    return PlainSubmission(event_id, workload_id, push.ref, push.new, canonical_json(document), push, payload,
                           occurred_at)


def _stream_as_provisioned(config: Mapping[str, Any]) -> bool:
    """Whether the stream's configuration (the JSON of ``STREAM.INFO``) is the one ``provision_stream``
    checks for (else it has to report)."""
    window = config.get("duplicate_window")  # nanoseconds on the wire
    return (config.get("subjects") == ["ccpipe.evt.>"] and config.get("retention") == "limits"
            and config.get("storage") == "file" and config.get("deny_delete") is True
            and config.get("deny_purge") is True and config.get("allow_rollup_hdrs") is False
            and type(window) is int and abs(window / 1e9 - 1200.0) < 1e-3)


def import_nats_client(url: str) -> None:
    """Import the NATS client, leaving out its WebSocket transport unless ``url`` names a ws:// server.

    nats-py imports aiohttp at module level for that transport alone, and aiohttp is about a
    third of the CPU a short command costs (``ccpipe submit`` runs on every push). Hiding it
    while nats-py loads makes that import fail, which nats-py handles by turning WebSocket URLs
    off in this process. Nothing to do once the client is loaded: then it is too late, or, in a
    long-running process that loaded it before, there is nothing to save.
    """
    if "nats.aio.transport" in sys.modules or "aiohttp" in sys.modules:
        return
    if any(server.startswith(("ws://", "wss://")) for server in nats_servers(url)):
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # None makes ``import aiohttp`` raise ImportError
    try:
        import nats.aio.transport  # noqa: F401
    finally:
        del sys.modules["aiohttp"]


def _with_sources(conn: LightNats, data_dir: Path, events: list[PlainSubmission]) -> list[PlainSubmission] | None:
    """``events`` naming each pushed commit stored sealed to the build stage (see
    :mod:`ccpipe.pipeline.source_bundles`, whose :func:`~ccpipe.pipeline.source_bundles.store_source`
    this is over the light client); None (for the full path to report) when one cannot be stored.

    Raises what packing, sealing and the client raise; the caller declines on any of it."""
    from ccpipe.pipeline.artifacts import CHUNK_BYTES, artifact_ref, sealing_recipients
    from ccpipe.pipeline.source_bundles import CONSUMER, SOURCE_KIND, seal_source
    from ccpipe.pipeline.store_names import ARTIFACTS, ENROLMENTS

    recipients = sealing_recipients(data_dir, CONSUMER, conn.read_kv(ENROLMENTS))
    out = []
    for event in events:
        sealed = seal_source(event.push.repo, event.new_commit, recipients)
        ref = artifact_ref(event.workload_id, SOURCE_KIND, sealed)
        conn.put_object(ARTIFACTS, ref.name, sealed, CHUNK_BYTES)
        named = event.with_repo(str(ref))
        if named is None:
            return None
        out.append(named)
    return out


def _server_version(info: Mapping[str, Any]) -> tuple[int, int]:
    try:
        major, minor = str(info.get("version", "")).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def _publish(url: str, creds: str | None, events: list[PlainSubmission], signing_key: Any,
             sources_in: Path | None = None) -> bool:
    """Publish ``events`` as the submit identity; False (nothing published) if the connection or stream is off.

    ``sources_in``: the (enrolled) data directory, when each pushed commit travels as a stored source.
    Over :mod:`ccpipe.pipeline.light_nats`, which sends what nats-py would, without loading it."""
    try:
        # One attempt: a refusal or an unreachable server is the full path's to report.
        conn = LightNats.connect(url, name="ccpipe-submit", creds=creds, inbox_prefix=f"_INBOX.{SUBMIT_IDENTITY}",
                                 timeout=5)
    except Exception:
        return False
    try:
        try:
            if _server_version(conn.info) < (2, 10):
                return False
            if not _stream_as_provisioned(conn.stream_info(EVENTS_STREAM)["config"]):
                return False  # absent or changed: provision_stream creates it or names the field
            if sources_in is not None:
                # a source that cannot be stored (no build key enrolled, a commit that does not pack): the
                # full path reports it; what was stored before expires with the bucket's max age
                stored = _with_sources(conn, sources_in, events)
                if stored is None:
                    return False
                events = stored
        except Exception:
            return False
        for event in events:
            headers = {"Nats-Msg-Id": event.event_id, "Ccpipe-Event-Id": event.event_id,
                       "Content-Type": STRUCTURED_CONTENT_TYPE,
                       SIGNATURE_HEADER: signature_header(signing_key, event.data)}
            try:
                conn.publish(event.nats_subject, event.data, headers, stream=EVENTS_STREAM, timeout=10.0)
            except (LightNatsError, OSError, ValueError) as exc:
                raise TransientError(f"storing submitted for {event.workload_id} failed: {exc!r}",
                                     code="bus.publish") from exc
    finally:
        conn.close()
    return True


def _pins(data_dir: Path, admin_key: str) -> bool:
    """Whether ``data_dir`` pins ``admin_key`` already (so the full path would change nothing)."""
    from ccpipe.pipeline.enrolment import decode_public, pinned_admin_public

    try:
        return pinned_admin_public(data_dir) == decode_public(admin_key, "CCPIPE_ADMIN_KEY")
    except CcpipeError:
        return False


def quick_submit(paths: list[Push] | None, environ: Mapping[str, str], *, as_json: bool,
                 quiet_prefix: str = "") -> int | None:
    """Submit ``paths`` (valid pushes) the light way and print what ``ccpipe submit`` prints; None to decline.

    ``paths`` None (nothing to submit that way) declines at once.
    """
    settings = read_submit_settings(environ)
    if settings is None or not paths:
        return None
    url = nats_url_of(settings)
    creds = creds_file(settings)
    plain_tcp = all(u.startswith("nats://") for u in url.split(",")) if url else False  # TLS, WebSocket: full path
    if url is None or isinstance(creds, bool) or not plain_tcp:
        return None
    events = [plain_submission(push) for push in paths]
    if any(event is None for event in events):
        return None
    submitted = [event for event in events if event is not None]
    enrolled = enrolled_mode(settings.data_dir)
    if settings.admin_key is not None and not (enrolled and _pins(settings.data_dir, settings.admin_key)):
        return None  # the full path pins CCPIPE_ADMIN_KEY, or says why it cannot
    key = component_key(settings.data_dir, SUBMIT_IDENTITY)
    if not _publish(url, creds, submitted, key, settings.data_dir if enrolled else None):
        return None
    for event in submitted:
        if as_json:
            document = {"workload_id": event.workload_id, "type": "submitted", "event_id": event.event_id,
                        "error": None}
            print(json.dumps(document, indent=2, default=str))
        else:
            print(f"{quiet_prefix}submitted workload {event.workload_id} ({event.ref} @ {event.new_commit[:12]}); "
                  f"follow it with: ccpipe status {event.workload_id}", flush=True)
    return 0
