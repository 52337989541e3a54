"""The build stage's pure core: a commit and its recipe in, a reproducible OCI image and its
provenance out. No NATS, no FastStream; the handler and the CLI call :func:`build_from_repo`
(or :func:`build_image` for a tree that is already on disk).

Reproducibility: the image's bytes depend only on the tree, the recipe, the base image, the
SOURCE_DATE_EPOCH (the commit's committer time) and :class:`~ccpipe.stages.build.layer.Compression`
(pinned); not on paths, the clock, the umask, the user or the number of CPUs. Building the
same commit twice, anywhere, gives the same manifest digest.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ccpipe.oci.documents import ANNOTATION_BASE_DIGEST, ANNOTATION_CREATED, ANNOTATION_REVISION, Descriptor
from ccpipe.oci.layout import OciLayout
from ccpipe.schemas.provenance import Statement
from ccpipe.schemas.workload import MAX_SPEC_BYTES, BuildRecipe, WorkloadSpec, parse_workload_spec_bytes
from ccpipe.stages.build._fs import read_file_beneath
from ccpipe.stages.build.base.resolve import BaseImage, BaseSources, resolve_base
from ccpipe.stages.build.checkout import Checkout, checkout_commit, remove_checkout
from ccpipe.stages.build.errors import RecipeInvalid
from ccpipe.stages.build.image import make_config, plan_copies
from ccpipe.stages.build.image_defaults import rfc3339
from ccpipe.stages.build.layer import DEFAULT_COMPRESSION, Compression, LayerResult, write_layer
from ccpipe.stages.build.provenance import BUILDER_ID_LOCAL, make_provenance, provenance_digest, report_data

DEFAULT_RECIPE_PATH = "ccpipe.toml"


@dataclass(frozen=True)
class ImageBuild:
    """An image written into an OCI layout by :func:`build_image`."""

    layout: Path
    """The OCI image layout directory."""
    tag: str
    """Its ``org.opencontainers.image.ref.name`` in index.json."""
    manifest: Descriptor
    """The manifest descriptor as tagged; ``manifest.digest`` is the image digest."""
    config_digest: str
    layers: tuple[Descriptor, ...]
    """All layers, base first."""
    diff_ids: tuple[str, ...]
    """Their uncompressed digests, as in the config's rootfs."""
    new_layers: tuple[LayerResult, ...]
    """The layers this build wrote (none when the recipe copies nothing)."""
    base: BaseImage
    source_date_epoch: int

    @property
    def digest(self) -> str:
        """The image (manifest) digest, ``sha256:<hex>``."""
        return self.manifest.digest


def build_image(
    context: Path,
    recipe: BuildRecipe,
    layout_dir: Path,
    *,
    source_date_epoch: int,
    tag: str = "latest",
    bases: BaseSources | None = None,
    compression: Compression = DEFAULT_COMPRESSION,
    revision: str | None = None,
) -> ImageBuild:
    """Build the image ``recipe`` describes from the tree at ``context`` into ``layout_dir``.

    ``layout_dir`` is created if absent or empty, or added to if it is a layout already (the
    tag then moves to the new image). ``source_date_epoch`` clamps every mtime and dates the
    config and history. ``revision`` (the commit id) goes into the manifest annotations.

    Raises :class:`~ccpipe.stages.build.errors.BuildError` leaves (``RecipeInvalid``,
    ``UnsafeContent`` and its leaves, ``BaseImageError`` and its leaves),
    :class:`~ccpipe.oci.errors.OciLayoutError` for an unusable output directory, and lets
    a ``TransientError`` from ``bases.fetch_blob`` through.
    """
    sources = bases or BaseSources()
    layout = OciLayout.open_or_create(layout_dir)
    base = resolve_base(recipe.base, layout, context=context, sources=sources)

    entries = plan_copies(context, recipe.copy_, base.fs, source_date_epoch)
    created = rfc3339(source_date_epoch)
    new_layers: list[LayerResult] = []
    history: list[dict[str, Any]] = []
    if entries:
        new_layers.append(write_layer(layout, entries, source_date_epoch=source_date_epoch, compression=compression))
        copies = "; ".join(f"{c.src} -> {c.dst}" for c in recipe.copy_)
        history.append({"created": created, "created_by": f"ccpipe copy {copies}", "comment": "ccpipe"})
    else:
        history.append({"created": created, "created_by": "ccpipe config", "comment": "ccpipe", "empty_layer": True})

    config = make_config(
        base, recipe, diff_ids=[r.diff_id for r in new_layers], created=source_date_epoch, history=history
    )
    layers = [*base.layers, *(r.descriptor for r in new_layers)]
    annotations = {ANNOTATION_CREATED: created}
    if revision:
        annotations[ANNOTATION_REVISION] = revision
    if base.manifest_digest:
        annotations[ANNOTATION_BASE_DIGEST] = base.manifest_digest
    manifest = layout.write_image(config, layers, tag=tag, annotations=annotations)
    return ImageBuild(
        layout=Path(layout_dir),
        tag=tag,
        manifest=manifest,
        config_digest=layout.read_manifest(manifest).config.digest,
        layers=tuple(layers),
        diff_ids=tuple(config["rootfs"]["diff_ids"]),
        new_layers=tuple(new_layers),
        base=base,
        source_date_epoch=source_date_epoch,
    )


@dataclass(frozen=True)
class BuildResult:
    """Everything one build of a commit produced."""

    image: ImageBuild
    """The image in its layout (digest, tag, layers, base)."""
    spec: WorkloadSpec
    """The workload spec read from the commit."""
    repository: str
    ref: str
    commit: str
    """The commit ``ref`` resolved to."""
    source_date_epoch: int
    """The commit's committer time, which dates everything in the image."""
    provenance: Statement
    """in-toto Statement v1 with an SLSA Provenance v1 predicate; subject = the image digest."""
    provenance_digest: bytes
    """SHA-384 of the canonical provenance (48 bytes)."""
    report_data: bytes
    """``provenance_digest`` zero-padded to the 64 bytes of TEE report_data."""
    started_on: datetime
    finished_on: datetime

    @property
    def image_digest(self) -> str:
        """The manifest digest, ``sha256:<hex>``."""
        return self.image.digest

    @property
    def layout(self) -> Path:
        """The OCI layout directory holding the image."""
        return self.image.layout

    @property
    def provenance_digest_str(self) -> str:
        """``sha384:<hex>`` of the provenance, as the ``built`` event carries it."""
        return "sha384:" + self.provenance_digest.hex()


def read_spec(checkout: Path, recipe_path: str = DEFAULT_RECIPE_PATH) -> WorkloadSpec:
    """Parse the workload spec at ``recipe_path`` in a checked-out tree (no symlink followed).

    Raises :class:`RecipeInvalid` if it is missing or not a regular file, and the spec
    parser's :class:`~ccpipe.schemas.errors.InvalidInput` if it is malformed.
    """
    try:
        raw = read_file_beneath(checkout, recipe_path, "workload spec", max_size=MAX_SPEC_BYTES)
    except FileNotFoundError:
        raise RecipeInvalid(
            f"the commit has no {recipe_path}",
            hint=f"add a {recipe_path} with [workload] and [build] tables to the repository",
            code="build.recipe.missing",
        ) from None
    except OSError as exc:
        raise RecipeInvalid(f"{recipe_path} cannot be read: {exc.strerror} (is it a symlink?)") from exc
    return parse_workload_spec_bytes(raw, source=recipe_path)


def build_from_repo(
    repo_path: Path | str,
    ref: str,
    out_dir: Path | str,
    *,
    commit: str | None = None,
    tag: str | None = None,
    recipe_path: str = DEFAULT_RECIPE_PATH,
    workload_id: str | None = None,
    builder_id: str = BUILDER_ID_LOCAL,
    bases: BaseSources | None = None,
    compression: Compression = DEFAULT_COMPRESSION,
    work_root: Path | None = None,
    prepare_base: Callable[[str], object] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    repository: str | None = None,
) -> BuildResult:
    """Check out ``ref`` of the repository, build its image into ``out_dir``, describe it.

    The commit is written into a fresh private directory under ``work_root`` (the system's
    temporary directory by default), removed again when the build ends. The recipe is the
    ``[build]`` table of ``recipe_path`` in that commit; the image is tagged ``tag`` (default:
    the spec's workload name). ``commit``, when given, is the commit built (a push names the
    commit it moved ``ref`` to; the ref may have moved again since), and ``ref`` is recorded
    as the ref it was pushed to. ``workload_id`` becomes the provenance's invocation id (a fresh
    UUID when not given); ``builder_id`` its ``builder.id``. ``prepare_base`` is called with
    the recipe's ``base`` before it is read (to make a base on demand, e.g. the demo base).
    ``repository``, when given, is what the provenance names as the source instead of
    ``repo_path`` (the stored source a temporary repository was unpacked from).

    Raises :class:`~ccpipe.stages.build.errors.CheckoutFailed` (code ``build.checkout``) naming the
    repository or ref that cannot be read, and whatever :func:`build_image` raises.
    """
    started = clock()
    checkout: Checkout = checkout_commit(Path(repo_path), commit or ref, work_root=work_root)
    try:
        spec = read_spec(checkout.path, recipe_path)
        if prepare_base is not None:
            prepare_base(spec.build.base)
        image_tag = tag or spec.workload.name
        image = build_image(
            checkout.path,
            spec.build,
            Path(out_dir),
            source_date_epoch=checkout.commit_time,
            tag=image_tag,
            bases=bases,
            compression=compression,
            revision=checkout.commit,
        )
    finally:
        remove_checkout(checkout)
    finished = clock()
    statement = make_provenance(
        image_name=image_tag,
        image_digest=image.digest,
        repository=repository or str(repo_path),
        ref=ref,
        commit=checkout.commit,
        recipe_path=recipe_path,
        tag=image_tag,
        base_uri=image.base.uri,
        base_digest=image.base.manifest_digest,
        builder_id=builder_id,
        invocation_id=workload_id or str(uuid.uuid4()),
        started_on=started,
        finished_on=finished,
        internal_parameters={
            "sourceDateEpoch": checkout.commit_time,
            "compression": compression.describe(),
        },
    )
    return BuildResult(
        image=image,
        spec=spec,
        repository=repository or str(repo_path),
        ref=ref,
        commit=checkout.commit,
        source_date_epoch=checkout.commit_time,
        provenance=statement,
        provenance_digest=provenance_digest(statement),
        report_data=report_data(statement),
        started_on=started,
        finished_on=finished,
    )
