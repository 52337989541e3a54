"""ccpipe's configuration, read from ``CCPIPE_*`` environment variables.

With nothing set, ccpipe runs the embedded default: it starts its own nats-server and
registry with state under ``data_dir``. Every URL that is set points ccpipe at a real service
instead, and then nothing is started for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ccpipe.schemas.settings_rules import ENV_PREFIX, default_data_dir, normal_nats_url


class Settings(BaseSettings):
    """All settings; each field is the environment variable ``CCPIPE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: Path = Field(
        default_factory=default_data_dir, description="Where state lives (servers, keys, logs)."
    )
    nats_url: str | None = Field(
        default=None,
        description="NATS server URL (several of one cluster: comma-separated); unset = start an embedded nats-server.",
    )
    nats_creds: Path | None = Field(
        default=None, description="NATS credentials file (.creds) for the component(s) this process runs."
    )
    nats_creds_dir: Path | None = Field(
        default=None, description="Directory of <component>.creds files; unset = <data dir>/creds."
    )
    nats_ca: Path | None = Field(default=None, description="CA bundle that signs the NATS servers' certificates.")
    nats_tls_cert: Path | None = Field(
        default=None, description="Certificate (PEM) the embedded nats-server presents; with nats_tls_key, enables TLS."
    )
    nats_tls_key: Path | None = Field(default=None, description="Private key (PEM) of nats_tls_cert.")
    nats_server_bin: str = Field(default="nats-server", description="nats-server binary for the embedded default.")
    registry: str | None = Field(
        default=None, description="OCI registry host[:port]; unset = embedded docker-registry."
    )
    registry_bin: str = Field(default="docker-registry", description="Registry binary for the embedded default.")
    registry_tls: bool = Field(default=False, description="Talk HTTPS to the registry.")
    registry_ca: Path | None = Field(default=None, description="CA bundle that signs the registry's certificate.")
    registry_username: str | None = Field(default=None, description="Registry user (Basic or token auth).")
    registry_password_file: Path | None = Field(
        default=None, description="File holding the registry password or identity token (kept out of the environment)."
    )
    kbs_url: str | None = Field(default=None, description="KBS base URL; unset = the embedded KBS.")
    nats_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Port of the embedded nats-server; unset = the one remembered in <data dir>/ports.json "
        "(chosen free at the first start).",
    )
    registry_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the embedded registry; unset = the remembered one.",
    )
    kbs_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the embedded KBS; unset = the remembered one.",
    )
    audit_api_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the audit API and web page; unset = the remembered one.",
    )
    listen_host: str = Field(
        default="127.0.0.1",
        description="Address the KBS and the audit API listen on: loopback unless set; 0.0.0.0 (or ::) serves "
        "every interface, for `ccpipe serve kbs|audit` reached from other hosts.",
    )
    admin_key: str | None = Field(
        default=None,
        description="The installation's admin public key (base64, as 'ccpipe admin init' prints it): only component "
        "keys it enrolled are trusted; pinned in the data directory on first use. Unset = the one pinned there.",
    )
    audit_db: str | None = Field(default=None, description="postgresql://… for the audit index; unset = SQLite.")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Serve /metrics, /healthz and /readyz on this port in every long-running process (up, runner, "
        "audit serve, kbs serve); 0 = a free port (logged); unset = only where a process already serves HTTP "
        "(the KBS and the audit API mount them on their own port).",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics_port listener binds.")
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL (spans go to <url>/v1/traces); unset = no tracing.",
    )
    audit_api_header_timeout_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="Seconds an audit API connection has to send a whole request head, from connecting or "
        "from its previous response; then it is closed.",
    )
    audit_api_body_timeout_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="Seconds the audit API waits, after answering, for the rest of a request body before it "
        "closes the connection.",
    )
    audit_api_heavy_queries: int = Field(
        default=8, ge=1, le=10_000,
        description="Heavy audit API queries (event lists, journeys, searches) admitted at once, running or "
        "waiting; more are answered 503 with Retry-After.",
    )
    max_deliver: int = Field(default=5, ge=1, le=100, description="Deliveries of one input before it fails.")
    ack_wait_s: float = Field(default=30.0, gt=0, description="Seconds before an unacked input is redelivered.")
    retry_attempts: int = Field(default=3, ge=1, le=20, description="In-process retries of a transient error.")
    allow_emulated: bool = Field(
        default=False,
        description="Accept emulated TEE evidence (development only; 'ccpipe up' turns it on where there is no TEE).",
    )
    sandbox_limits: Literal["required", "best-effort"] = Field(
        default="required",
        description="required: a runner that cannot bound a sandbox's processes and memory as a whole (a pids "
        "and a memory cgroup, v2 or v1; for pids an rlimit of the sandbox's own host uid also counts) refuses to "
        "start the workload; best-effort: it runs with the limits that can be set and says which.",
    )
    sandbox_cgroup: Path | None = Field(
        default=None,
        description="A cgroup v2 directory delegated to the runner for its sandboxes; unset = the runner's own cgroup.",
    )
    k8s_manifest_dir: Path | None = Field(
        default=None, description="Write a Kubernetes Pod manifest (<workload id>.json) here per scheduled workload."
    )
    retain_workloads: int = Field(
        default=0, ge=0,
        description="Keep the image layouts (<data_dir>/images/<workload>/plain, signed) of this many of the "
        "latest ended workloads, and their images in the embedded registry; 0 = remove them once a workload ends "
        "(a registry configured with CCPIPE_REGISTRY is never cleaned by ccpipe).",
    )
    retain_hours: float = Field(
        default=0.0, ge=0,
        description="Keep the image layouts (and embedded-registry image) of an ended workload this many hours; "
        "0 = remove them at once. A workload's layouts and image stay while either retention setting keeps them.",
    )

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, v: str | None) -> str | None:
        return normal_nats_url(v) if v else None

    @property
    def embedded_nats(self) -> bool:
        """True when ccpipe must start its own nats-server."""
        return self.nats_url is None

    @property
    def embedded_registry(self) -> bool:
        """True when ccpipe must start its own registry."""
        return self.registry is None
