"""A NATS identity per component: who may publish and subscribe to what, and its credentials.

ccpipe uses NATS decentralized authentication (see ``docs/design/nats-auth.md``): an operator
key signs one account, the account key signs one user JWT per identity, and each user JWT
carries that identity's permissions. The server trusts the operator and the account JWT; it
needs no list of users, so an identity issued later (a new runner node) connects without a
server reload.

The permissions are derived from two tables: :data:`ccpipe.schemas.emitters.EMITTERS` (which
component may emit which event type) and :data:`IDENTITY_RESOURCES` below (what else each
one reads and writes on the bus). Every identity is an allow-list; the :data:`NO_PIPELINE_ADMIN`
deny-list is added to every pipeline identity as well, so that no edit of an allow-list can
hand a pipeline credential the power to delete or purge the trail or change a stream or
bucket. Only :data:`ADMIN`, used by ``ccpipe up`` to provision, may do that.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from ccpipe.pipeline.store_names import ARTIFACTS as ARTIFACTS  # re-exported: this module lists every store
from ccpipe.pipeline.store_names import ENROLMENTS as ENROLMENTS
from ccpipe.schemas.config import Settings
from ccpipe.schemas.emitters import Component, emitted_by
from ccpipe.schemas.errors import ConfigurationError
from ccpipe.schemas.nodes import JOIN_SUBJECTS, NODE_ATTESTATIONS_BUCKET

ADMIN = "admin"
"""The provisioner: creates the stream and the buckets; used only by ``ccpipe up``."""
OBSERVER = "observer"
"""Read-only: ``ccpipe events``, ``status``, ``nodes``, ``audit verify``, the demo's follower."""
RUNNER_PREFIX = "runner-"
"""A runner node's identity is ``runner-<node id>`` (also the name of its durable consumer)."""

EVENTS = "CCPIPE_EVENTS"
AUDIT = "CCPIPE_AUDIT"
AUDIT_CHECKPOINTS = "ccpipe.audit.checkpoint"
AUDIT_STATUS = "ccpipe.audit.status"
AUDIT_LEASE = "CCPIPE_AUDIT_LEASE"
"""The audit log's writer lease (one writer at a time, others stand by)."""
AUDIT_DURABLE = "ccpipe-audit-log"
NODES = "CCPIPE_NODES"
PLACEMENTS = "CCPIPE_PLACEMENTS"
KBS_BUCKETS = ("CCPIPE_KBS_RESOURCES", "CCPIPE_KBS_NONCES")
SIGN_MARKERS = "CCPIPE_SIGN_MARKERS"
"""The sign stage's at-most-once markers (one key per workload)."""
RUN_CLAIMS = "CCPIPE_RUN_CLAIMS"
"""The runners' claims on a workload's start (one key per workload; any node may claim any)."""
KBS_SUBJECTS = tuple(f"ccpipe.kbs.{op}" for op in ("auth", "attest", "resource"))
"""The KBS's RCAR-over-NATS request subjects (queue group ``ccpipe-kbs``)."""
KBS_SERVED = (*KBS_SUBJECTS, *JOIN_SUBJECTS)
"""Everything the KBS process answers: RCAR, and runner nodes' admission (``ccpipe.nodes.*``)."""
BUS_STREAMS = (EVENTS, AUDIT, *(f"KV_{bucket}" for bucket in (AUDIT_LEASE, NODES, PLACEMENTS, *KBS_BUCKETS,
                                                                SIGN_MARKERS, RUN_CLAIMS, NODE_ATTESTATIONS_BUCKET,
                                                                ENROLMENTS)), f"OBJ_{ARTIFACTS}")
"""Every stream the admin provisions (a KV bucket as ``KV_<bucket>``)."""
ARTIFACT_PURGE = f"$JS.API.STREAM.PURGE.OBJ_{ARTIFACTS}"
"""The one purge a pipeline identity may ask for: an artifact it consumed (by subject)."""
ARTIFACT_CONSUMER_DENY = (
    *(f"$JS.API.STREAM.{op}.>" for op in ("CREATE", "UPDATE", "DELETE")),
    *(f"$JS.API.STREAM.{op}.{stream}" for op in ("PURGE", "MSG.DELETE") for stream in (EVENTS, AUDIT)),
)
"""The deny-list of an identity that may purge consumed artifacts: a wildcard cannot leave one stream
out, so the trail and the audit stream are named (no allow-list grants a purge of any other stream;
every stream named would push the user JWT past the server's 4 KiB control line)."""
STAGE_DURABLES = ("build", "attest", "sign", "push", "schedule")
"""The stages' durable consumers on ``CCPIPE_EVENTS`` (a stage's durable is its component name)."""

NO_PIPELINE_ADMIN = tuple(f"$JS.API.STREAM.{op}.>" for op in ("CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE"))
"""Denied to every pipeline identity: the trail and the buckets are changed only by :data:`ADMIN`.

The consumers of the artifact store purge an object once they have used it (:data:`ARTIFACT_PURGE`),
so hand-offs do not pile up on disk: for them :data:`ARTIFACT_CONSUMER_DENY` replaces this list.

(The rest of the JetStream API — snapshots, restores, peers, account and server requests — is
in no pipeline allow-list; the deny-list names what the trail's integrity rests on.)"""


@dataclass(frozen=True)
class BusPermissions:
    """What one identity may do on the bus (NATS user permissions)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()
    deny_subscribe: tuple[str, ...] = ()
    responds: bool = False
    """May answer requests (one reply per request, to whatever inbox asked) without publish rights to inboxes."""

    def claims(self) -> dict[str, object]:
        """The permission fields of a NATS user JWT."""
        out: dict[str, object] = {
            "pub": {"allow": list(self.publish), "deny": list(self.deny_publish)},
            "sub": {"allow": list(self.subscribe), "deny": list(self.deny_subscribe)},
        }
        if self.responds:
            out["resp"] = {"max": 1, "ttl": 0}
        return out


@dataclass(frozen=True)
class Resources:
    """What an identity touches besides the events it emits."""

    durables: tuple[str, ...] = ()
    """Its durable consumers on ``CCPIPE_EVENTS``."""
    reads_trail: bool = False
    """Reads the trail through ephemeral consumers (other than by direct get)."""
    kv_read: tuple[str, ...] = ()
    """Buckets it reads key by key."""
    kv_watch: tuple[str, ...] = ()
    """Buckets it lists (every key's current value through an ephemeral consumer of the bucket's stream)."""
    kv_write: tuple[tuple[str, str], ...] = ()
    """(bucket, key pattern) it may write."""
    serves_kbs: bool = False
    asks_kbs: bool = False
    audit_log: bool = False
    """Owns the audit stream (publishes checkpoints and its status, deletes and recreates its durable)."""
    reads_audit: bool = False
    stores_artifacts: bool = False
    """Puts sources or layouts into the artifact store (objects are named by digest, so none replaces another)."""
    fetches_artifacts: bool = False
    """Reads sources or layouts from the artifact store (by sequence, no consumer), and purges what it used."""


IDENTITY_RESOURCES: dict[str, Resources] = {
    # the pushed source goes to the build stage sealed, by digest (ccpipe.pipeline.source_bundles)
    Component.SUBMIT: Resources(stores_artifacts=True),
    Component.BUILD: Resources(durables=("build",), stores_artifacts=True, fetches_artifacts=True),
    Component.ATTEST: Resources(durables=("attest",)),
    Component.SIGN: Resources(durables=("sign",), kv_write=((SIGN_MARKERS, ">"),), stores_artifacts=True,
                              fetches_artifacts=True),
    Component.PUSH: Resources(durables=("push",), reads_trail=True, fetches_artifacts=True),
    # the scheduler reads the attestation of each heartbeating node by key (a watch's permissions
    # would push its JWT past the server's control-line limit)
    Component.SCHEDULE: Resources(durables=("schedule",), reads_trail=True, kv_watch=(NODES,),
                                  kv_read=(NODE_ATTESTATIONS_BUCKET,), kv_write=((PLACEMENTS, ">"),)),
    Component.KBS: Resources(kv_read=KBS_BUCKETS, serves_kbs=True,
                             kv_write=tuple((b, ">") for b in (*KBS_BUCKETS, NODE_ATTESTATIONS_BUCKET))),
    Component.AUDIT: Resources(durables=(AUDIT_DURABLE,), reads_trail=True, kv_write=((AUDIT_LEASE, ">"),),
                               audit_log=True, reads_audit=True),
    OBSERVER: Resources(reads_trail=True, kv_read=(PLACEMENTS,), kv_watch=(NODES,), reads_audit=True),
}
"""Everything but the runners, whose entry depends on the node id (:func:`runner_resources`)."""


def provisioned_streams(identity: str) -> tuple[str, ...]:
    """The streams (a KV bucket as ``KV_<bucket>``) ``identity`` uses, all of which the admin provisions.

    Every one of them the identity may inspect (stream info is in its allow-list), so a component
    can check that they exist before it starts.
    """
    res = resources_of(identity)
    buckets = (ENROLMENTS, *res.kv_read, *res.kv_watch, *(b for b, _ in res.kv_write))
    streams = [EVENTS, *(f"KV_{bucket}" for bucket in buckets)]
    if res.audit_log or res.reads_audit:
        streams.append(AUDIT)
    if res.stores_artifacts or res.fetches_artifacts:
        streams.append(f"OBJ_{ARTIFACTS}")
    return tuple(dict.fromkeys(streams))


def resources_of(identity: str) -> Resources:
    """What ``identity`` (a component, ``runner-<node id>`` or ``observer``) touches; raises for an unknown one."""
    if identity.startswith(RUNNER_PREFIX):
        return runner_resources(identity.removeprefix(RUNNER_PREFIX))
    if identity in IDENTITY_RESOURCES:
        return IDENTITY_RESOURCES[identity]
    raise ConfigurationError(f"there is no NATS identity {identity!r}", code="bus.identity.unknown")


def runner_identity(node_id: str) -> str:
    """The identity (and durable consumer) of a runner node."""
    return f"{RUNNER_PREFIX}{node_id}"


def runner_resources(node_id: str) -> Resources:
    """A runner node: its own durable, its own ``CCPIPE_NODES`` key, any workload's run claim, the
    slot reservations (read: what it was placed, after a restart), and the KBS as a client (RCAR, joining)."""
    return Resources(durables=(runner_identity(node_id),), kv_write=((NODES, node_id), (RUN_CLAIMS, ">")),
                     kv_read=(PLACEMENTS,), asks_kbs=True)


def inbox_prefix(identity: str) -> str:
    """The identity's private inbox prefix: replies to it cannot be read by another identity."""
    return f"_INBOX.{identity}"


def _durable(stream: str, name: str, *, delete: bool) -> list[str]:
    # nats-py creates a durable (no consumer name) on DURABLE.CREATE; the named CREATE form,
    # which could also rewrite the consumer, is not granted.
    api = "$JS.API.CONSUMER"
    subjects = [f"{api}.DURABLE.CREATE.{stream}.{name}", f"{api}.INFO.{stream}.{name}",
                f"{api}.MSG.NEXT.{stream}.{name}", f"$JS.ACK.{stream}.{name}.>"]
    return [*subjects, f"{api}.DELETE.{stream}.{name}"] if delete else subjects


def _stream_reader(stream: str) -> list[str]:
    # MSG.GET: a get by subject or sequence; DIRECT.GET.<stream>.<subject>: a KV get on a bucket with direct get
    return [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>"]


def _ephemeral_reader(stream: str) -> list[str]:
    # Unnamed consumer creation only (ccpipe.pipeline.reader creates its readers so): a *named*
    # create could rewrite another part's durable. The server names ephemerals at random, so
    # fetching, inspecting and removing one needs `*`; the fixed durables of the stages and the
    # audit log are denied by :func:`_others_durables` (a runner's, named after its node, is not).
    api = "$JS.API.CONSUMER"
    return [*_stream_reader(stream), f"{api}.CREATE.{stream}", f"{api}.MSG.NEXT.{stream}.*",
            f"{api}.INFO.{stream}.*", f"{api}.DELETE.{stream}.*", f"$JS.FC.{stream}.>"]


def _others_durables(own: Iterable[str]) -> list[str]:
    mine = set(own)
    # `*` in the operation's place: INFO and DELETE of another part's durable
    return [subject for name in (*STAGE_DURABLES, AUDIT_DURABLE) if name not in mine
            for subject in (f"$JS.API.CONSUMER.*.{EVENTS}.{name}", f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS}.{name}",
                            f"$JS.ACK.{EVENTS}.{name}.>")]


def permissions_for(identity: str) -> BusPermissions:
    """The bus permissions of ``identity`` (a component, ``runner-<node id>``, ``observer`` or ``admin``).

    Raises :class:`ConfigurationError` for an unknown identity.
    """
    if identity == ADMIN:
        # the JetStream API, and the one bucket only the admin writes: the enrolments of component keys
        return BusPermissions(publish=("$JS.API.>", f"$KV.{ENROLMENTS}.>"), subscribe=(f"{inbox_prefix(ADMIN)}.>",))
    res = resources_of(identity)
    component = Component.RUNNER if identity.startswith(RUNNER_PREFIX) else \
        None if identity == OBSERVER else Component(identity)
    # every identity reads the enrolments (by sequence: no consumer), and none but the admin writes them
    pub = [*_stream_reader(EVENTS), f"$JS.API.STREAM.INFO.KV_{ENROLMENTS}", f"$JS.API.STREAM.MSG.GET.KV_{ENROLMENTS}"]
    if component is not None:
        pub += [f"ccpipe.evt.*.{etype.value}" for etype in sorted(emitted_by(component))]
    for name in res.durables:
        pub += _durable(EVENTS, name, delete=res.audit_log)
    deny_pub = list(ARTIFACT_CONSUMER_DENY if res.fetches_artifacts else NO_PIPELINE_ADMIN)
    if res.reads_trail:
        pub += _ephemeral_reader(EVENTS)
        deny_pub += _others_durables(res.durables)
    for bucket in res.kv_read:
        pub += _stream_reader(f"KV_{bucket}")
    for bucket in res.kv_watch:
        pub += _ephemeral_reader(f"KV_{bucket}")
    for bucket, key in res.kv_write:
        # a writer opens its bucket (stream info) and reads its keys back (compare-and-set)
        pub += [f"$KV.{bucket}.{key}", *_stream_reader(f"KV_{bucket}")]
    if res.stores_artifacts or res.fetches_artifacts:
        # objects are read message by message (ccpipe.pipeline.artifacts.read_stored): no consumer
        pub += _stream_reader(f"OBJ_{ARTIFACTS}")
    if res.stores_artifacts:
        pub += [f"$O.{ARTIFACTS}.C.>", f"$O.{ARTIFACTS}.M.>"]
    if res.fetches_artifacts:
        pub.append(ARTIFACT_PURGE)
    if res.audit_log:
        pub += [AUDIT_CHECKPOINTS, AUDIT_STATUS]
    if res.audit_log or res.reads_audit:
        pub += _ephemeral_reader(AUDIT)
    if res.asks_kbs:
        pub += list(KBS_SERVED)
    sub = [f"{inbox_prefix(identity)}.>"]
    if res.serves_kbs:
        sub += list(KBS_SERVED)
    return BusPermissions(publish=tuple(dict.fromkeys(pub)), subscribe=tuple(sub), deny_publish=tuple(deny_pub),
                          # nobody but the KBS may listen on (or join the queue group of) its subjects
                          deny_subscribe=() if res.serves_kbs else ("ccpipe.kbs.>", "ccpipe.nodes.>"),
                          responds=res.serves_kbs)


def pipeline_identities(node_ids: Iterable[str] = ()) -> list[str]:
    """Every identity an installation issues: the components, the observer, each runner node and the admin."""
    return [*IDENTITY_RESOURCES, *(runner_identity(n) for n in node_ids), ADMIN]


# --- NKeys and JWTs -------------------------------------------------------------------------------

_PREFIXES = {"operator": "PREFIX_BYTE_OPERATOR", "account": "PREFIX_BYTE_ACCOUNT",
             "system": "PREFIX_BYTE_ACCOUNT", "user": "PREFIX_BYTE_USER"}
"""The nkeys prefix constant of each kind of key."""


def _nkeys() -> ModuleType:
    # Imported when keys are made or signed with (``ccpipe up``, ``ccpipe runner``), not at import:
    # nkeys loads PyNaCl, which commands that only connect (``ccpipe submit``, run on every push) never use.
    import nkeys

    module: ModuleType = nkeys
    return module


def new_seed(kind: str) -> bytes:
    """A fresh NKey seed of ``kind`` (operator, account or user)."""
    nkeys = _nkeys()
    return bytes(nkeys.encode_seed(os.urandom(32), getattr(nkeys, _PREFIXES[kind])))


def public_key(seed: bytes) -> str:
    """The public NKey (``O…``, ``A…``, ``U…``) of a seed."""
    return str(_nkeys().from_seed(bytearray(seed)).public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(issuer_seed: bytes, subject: str, name: str, nats_claims: dict[str, object]) -> str:
    """A NATS JWT (``ed25519-nkey``) for ``subject``, signed by ``issuer_seed``.

    The claim layout is NATS's v2 JWT format: ``jti`` is the base32 SHA-256 of the claims
    without it, ``nats`` holds the type-specific claims.
    """
    claims: dict[str, object] = {"iat": int(time.time()), "iss": public_key(issuer_seed), "name": name,
                                 "sub": subject, "nats": nats_claims}
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _nkeys().from_seed(bytearray(issuer_seed)).sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(bytes(signature))}"


_UNLIMITED_ACCOUNT = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                      "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def creds_text(user_jwt: str, user_seed: bytes) -> str:
    """A ``.creds`` file: the user JWT and its seed, in the layout NATS clients read."""
    return (f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)  # an existing file keeps its mode through O_CREAT
    tmp.replace(path)


@dataclass
class Installation:
    """The operator and account keys of one installation, kept in ``<dir>`` (0700, seeds 0600).

    The keys are made once and reused, so credentials handed out earlier stay valid across
    restarts; the account JWT and every creds file are re-issued from them at each start.
    """

    root: Path
    _seeds: dict[str, bytes] = field(default_factory=dict)

    def seed(self, kind: str) -> bytes:
        """The installation's ``operator``, ``account`` or ``system`` (account) seed, made on first use."""
        if kind not in self._seeds:
            path = self.root / f"{kind}.nk"
            if not path.exists():
                _write_private(path, new_seed(kind).decode() + "\n")
            self._seeds[kind] = path.read_text().strip().encode()
        return self._seeds[kind]

    def server_config(self) -> str:
        """The nats-server configuration block: trust this operator, know its two accounts.

        Besides the pipeline's account the server needs a system account of its own (JetStream
        refuses to start without one); no user of it is ever issued.
        """
        operator, account, system = self.seed("operator"), self.seed("account"), self.seed("system")
        op_jwt = encode_jwt(operator, public_key(operator), "ccpipe",
                            {"type": "operator", "version": 2, "system_account": public_key(system)})
        acct_jwt = encode_jwt(operator, public_key(account), "ccpipe",
                              {"type": "account", "version": 2, "limits": _UNLIMITED_ACCOUNT})
        sys_jwt = encode_jwt(operator, public_key(system), "SYS", {"type": "account", "version": 2})
        return (f"operator: {op_jwt}\nsystem_account: {public_key(system)}\nresolver: MEMORY\n"
                f"resolver_preload: {{\n  {public_key(account)}: {acct_jwt}\n  {public_key(system)}: {sys_jwt}\n}}\n")

    def issue(self, identity: str, creds_dir: Path) -> Path:
        """Write ``<creds_dir>/<identity>.creds`` (0600) for a fresh user key with the identity's permissions."""
        user_seed = new_seed("user")
        claims: dict[str, object] = {"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1,
                                     **permissions_for(identity).claims()}
        user_jwt = encode_jwt(self.seed("account"), public_key(user_seed), identity, claims)
        path = creds_dir / f"{identity}.creds"
        _write_private(path, creds_text(user_jwt, user_seed))
        return path


def auth_dir(settings: Settings) -> Path:
    """Where the embedded default keeps its operator and account seeds."""
    return settings.data_dir / "nats-auth"


def creds_dir(settings: Settings) -> Path:
    """Where components find their creds files (``<data dir>/creds`` unless configured)."""
    return settings.nats_creds_dir or settings.data_dir / "creds"


def issue_embedded_identities(settings: Settings, node_ids: Iterable[str]) -> str:
    """Issue every identity of the embedded default into :func:`creds_dir`; returns the server's auth block."""
    installation = Installation(auth_dir(settings))
    for identity in pipeline_identities(node_ids):
        installation.issue(identity, creds_dir(settings))
    return installation.server_config()


def issue_embedded_identity(settings: Settings, identity: str) -> Path | None:
    """Issue ``identity`` from the embedded default's installation if it has none yet; None if there is none.

    For a runner node started beside ``ccpipe up`` (``ccpipe runner``) by the user who owns the
    data directory, who can read the account seed anyway. Elsewhere an administrator issues
    credentials and nothing is issued here.
    """
    existing = creds_dir(settings) / f"{identity}.creds"
    if settings.nats_creds is not None or existing.exists() or not (auth_dir(settings) / "account.nk").exists():
        return None
    return Installation(auth_dir(settings)).issue(identity, creds_dir(settings))


def creds_for(settings: Settings, identity: str) -> str | None:
    """The creds file ``identity`` connects with, or None for a server without authentication.

    ``CCPIPE_NATS_CREDS`` wins (a process that runs one component); otherwise
    ``<creds dir>/<identity>.creds`` if it exists. Raises :class:`ConfigurationError`, naming
    the file and the identity, when the configured file cannot be read.
    """
    path = settings.nats_creds or creds_dir(settings) / f"{identity}.creds"
    if settings.nats_creds is None and not path.exists():
        return None
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ConfigurationError(
            f"the NATS credentials {path} of {identity} cannot be read: {exc.strerror or exc}",
            hint="check the path (CCPIPE_NATS_CREDS) and that the file belongs to the user running ccpipe",
            code="bus.creds.unreadable",
        ) from exc
    return str(path)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A client TLS context that trusts ``CCPIPE_NATS_CA`` only, or None when it is not set."""
    if settings.nats_ca is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(settings.nats_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"the NATS CA bundle {settings.nats_ca} cannot be used: {exc}",
                                 hint="set CCPIPE_NATS_CA to a PEM file of the CA that signed the server's certificate",
                                 code="bus.tls.ca") from exc


def embedded_tls(settings: Settings) -> tuple[Path, Path] | None:
    """(certificate, key) for the embedded nats-server, or None; raises if only one of them is set."""
    cert, key = settings.nats_tls_cert, settings.nats_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigurationError("CCPIPE_NATS_TLS_CERT and CCPIPE_NATS_TLS_KEY must be set together",
                                 hint="set both (and CCPIPE_NATS_CA for the clients), or neither",
                                 code="bus.tls.incomplete")
    return cert, key
