"""From a build recipe to an image: the copy layer's entries, the config and the manifest.

Copy semantics (``[[build.copy]]``):

* ``src`` is relative to the repository root; ``dst`` is absolute in the image.
* A file goes to ``dst``, or into it (keeping its name) when ``dst`` ends in '/'.
* ``src`` ending in '/' copies a directory's *contents* into ``dst``; without it the directory
  itself goes to ``dst`` (or into it, when ``dst`` ends in '/').
* Symlinks are copied as symlinks, never followed, wherever they point. A ``src`` whose own
  last component is a symlink is copied as that symlink too, unless it ends in '/' (then it
  must lead to a directory inside the repository). Symlinks in the directories *above* ``src``
  may be followed, but never out of the repository.
* Device nodes, FIFOs and sockets are refused with :class:`SpecialFileRefused`.
* Modes: with ``mode`` set, files get exactly it and directories get it plus 'x' wherever it
  has 'r' (0644 gives 0755 directories); without, files are 0755 if anyone may execute them,
  else 0644, and directories 0755. Owners: ``owner`` or 0:0, numeric, no names.
* All copies form one layer. Directories above ``dst`` are added (0755, 0:0) only when the base
  lacks them; a base directory's metadata is never replaced except by a copy that targets that
  very directory, and a base symlink is never replaced by a directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccpipe.schemas.workload import BuildRecipe, CopySpec
from ccpipe.stages.build._fs import image_path, resolve_beneath, split_absolute, split_relative
from ccpipe.stages.build.base.fs_index import BaseFilesystem
from ccpipe.stages.build.base.resolve import BaseImage
from ccpipe.stages.build.errors import RecipeInvalid, SpecialFileRefused, UnsupportedName
from ccpipe.stages.build.image_defaults import DEFAULT_PATH, rfc3339
from ccpipe.stages.build.layer import EntryType, LayerEntry

_CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal")


@dataclass(frozen=True, slots=True)
class _Owner:
    uid: int
    gid: int


def _parse_owner(spec: CopySpec) -> _Owner:
    if spec.owner is None:
        return _Owner(0, 0)
    uid, _, gid = spec.owner.partition(":")
    return _Owner(int(uid), int(gid))


def _file_mode(spec_mode: int | None, disk_mode: int) -> int:
    if spec_mode is not None:
        return spec_mode
    return 0o755 if disk_mode & 0o111 else 0o644


def _dir_mode(spec_mode: int | None) -> int:
    if spec_mode is None:
        return 0o755
    return spec_mode | ((spec_mode & 0o444) >> 2)


def _name(raw: str, where: Path) -> str:
    """``raw`` if it is UTF-8; ``where`` is the repository-relative directory it is in."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        shown = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise UnsupportedName(f"{where / shown} in the repository has a name that is not UTF-8") from None
    return raw


class CopyPlanner:
    """Collects the entries of the copy layer, one copy spec after the other."""

    def __init__(self, context: Path, base_fs: BaseFilesystem, source_date_epoch: int) -> None:
        self.context = context.resolve()
        self.base_fs = base_fs
        self.sde = source_date_epoch
        self.entries: dict[tuple[str, ...], LayerEntry] = {}
        self._origin: dict[tuple[str, ...], int] = {}

    def add(self, index: int, spec: CopySpec) -> None:
        """Plan ``build.copy[index]``."""
        what = f"build.copy[{index}]"
        src_parts = split_relative(spec.src, f"{what}.src")
        dst_parts = split_absolute(spec.dst, f"{what}.dst")
        contents = spec.src.endswith("/")
        into = spec.dst.endswith("/")
        mode = int(spec.mode, 8) if spec.mode is not None else None
        owner = _parse_owner(spec)

        src = resolve_beneath(self.context, "/".join(src_parts), f"{what}.src", follow_last=contents)
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            raise RecipeInvalid(f"{what}.src: {spec.src!r} does not exist in the repository") from None
        if contents and not stat.S_ISDIR(st.st_mode):
            raise RecipeInvalid(f"{what}.src: {spec.src!r} ends in '/' but is not a directory")

        if contents:
            target = dst_parts
            self._parents(target, index)
            self._dir(target, mode, owner, index)
            self._tree(src, target, mode, owner, index)
            return
        name = src_parts[-1] if src_parts else ""
        target = [*dst_parts, name] if into and name else dst_parts
        if not target:
            raise RecipeInvalid(f"{what}.dst: cannot replace the image root with {spec.src!r}")
        self._parents(target, index)
        if stat.S_ISDIR(st.st_mode):
            self._dir(target, mode, owner, index)
            self._tree(src, target, mode, owner, index)
        else:
            self._leaf(src, st, target, mode, owner, index)

    def _rel(self, path: Path) -> Path:
        return path.relative_to(self.context) if path.is_relative_to(self.context) else path

    # -- entries -----------------------------------------------------------------------------

    def _put(self, entry: LayerEntry, index: int) -> None:
        key = tuple(entry.path.split("/"))
        old = self.entries.get(key)
        if old is not None and old.type is not entry.type and EntryType.DIR in (old.type, entry.type):
            raise RecipeInvalid(
                f"build.copy[{self._origin[key]}] and build.copy[{index}] both write /{entry.path}, "
                f"one as a directory and one as a {'file' if EntryType.FILE in (old.type, entry.type) else 'symlink'}"
            )
        self.entries[key] = entry
        self._origin[key] = index

    def _parents(self, target: list[str], index: int) -> None:
        for i in range(1, len(target)):
            parts = target[:i]
            key = tuple(parts)
            if key in self.entries:
                if self.entries[key].type is not EntryType.DIR:
                    raise RecipeInvalid(
                        f"build.copy[{index}] writes below /{image_path(parts)}, which build.copy"
                        f"[{self._origin[key]}] made a {self.entries[key].type.value}"
                    )
                continue
            if self.base_fs.lookup(parts) is None:
                self._put(LayerEntry(image_path(parts), EntryType.DIR, 0o755, mtime=self.sde), index)

    def _dir(self, parts: list[str], mode: int | None, owner: _Owner, index: int) -> None:
        if not parts:
            return  # the image root is never an entry
        if self.base_fs.lookup(parts) == "symlink" and self.base_fs.lookup(parts, follow_last=True) == "dir":
            return  # keep the base's symlink; what is copied lands where it points
        entry = LayerEntry(image_path(parts), EntryType.DIR, _dir_mode(mode), owner.uid, owner.gid, self.sde)
        self._put(entry, index)

    def _leaf(
        self, src: Path, st: os.stat_result, target: list[str], mode: int | None, owner: _Owner, idx: int
    ) -> None:
        path = image_path(target)
        if stat.S_ISREG(st.st_mode):
            entry = LayerEntry(
                path, EntryType.FILE, _file_mode(mode, st.st_mode), owner.uid, owner.gid,
                int(st.st_mtime), st.st_size, source=src,
            )  # fmt: skip
        elif stat.S_ISLNK(st.st_mode):
            link = os.readlink(src)
            _name(link, self._rel(src.parent))
            entry = LayerEntry(path, EntryType.SYMLINK, 0o777, owner.uid, owner.gid, int(st.st_mtime), linkname=link)
        elif stat.S_ISDIR(st.st_mode):
            raise AssertionError("directories are planned by _tree")
        else:
            kind = (
                "FIFO" if stat.S_ISFIFO(st.st_mode)
                else "socket" if stat.S_ISSOCK(st.st_mode)
                else "character device" if stat.S_ISCHR(st.st_mode)
                else "block device" if stat.S_ISBLK(st.st_mode)
                else "special file"
            )  # fmt: skip
            raise SpecialFileRefused(f"{self._rel(src)} in the repository is a {kind}, which cannot go into an image")
        self._put(entry, idx)

    def _tree(self, src: Path, target: list[str], mode: int | None, owner: _Owner, index: int) -> None:
        stack = [(src, target)]
        while stack:
            directory, dparts = stack.pop()
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
            for child in children:
                name = _name(child.name, self._rel(directory))
                cparts = [*dparts, name]
                cst = child.stat(follow_symlinks=False)
                if stat.S_ISDIR(cst.st_mode):
                    self._dir(cparts, mode, owner, index)
                    stack.append((Path(child.path), cparts))
                else:
                    self._leaf(Path(child.path), cst, cparts, mode, owner, index)


def plan_copies(
    context: Path, copies: Sequence[CopySpec], base_fs: BaseFilesystem, source_date_epoch: int
) -> list[LayerEntry]:
    """The entries of the copy layer for ``copies`` (unsorted; the layer writer sorts).

    Raises :class:`RecipeInvalid`, :class:`SpecialFileRefused`, :class:`SymlinkEscape`,
    :class:`PathEscape` or :class:`UnsupportedName` naming the copy entry or file.
    """
    planner = CopyPlanner(context, base_fs, source_date_epoch)
    for i, spec in enumerate(copies):
        planner.add(i, spec)
    return list(planner.entries.values())


def make_config(
    base: BaseImage,
    recipe: BuildRecipe,
    *,
    diff_ids: Sequence[str],
    created: int,
    history: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The image config: the base's, with the recipe's settings applied.

    Only fields the recipe sets explicitly override the base (so a base's ``WorkingDir`` or
    ``User`` survives a recipe that does not mention them). Env merges by name; labels merge.
    A new entrypoint without a cmd clears the base's cmd, as Docker does.
    """
    set_fields = recipe.model_fields_set
    old = base.config.get("config") or {}
    cfg: dict[str, Any] = {k: old[k] for k in _CONFIG_KEYS if old.get(k) not in (None, [], {}, "")}

    env: list[str] = list(cfg.get("Env") or ([] if base.layers else [DEFAULT_PATH]))
    names = [e.partition("=")[0] for e in env]
    for key in sorted(recipe.env):
        item = f"{key}={recipe.env[key]}"
        if key in names:
            env[names.index(key)] = item
        else:
            env.append(item)
            names.append(key)
    if env:
        cfg["Env"] = env
    if "entrypoint" in set_fields:
        cfg["Entrypoint"] = list(recipe.entrypoint)
        if "cmd" not in set_fields:
            cfg.pop("Cmd", None)
    if "cmd" in set_fields:
        cfg["Cmd"] = list(recipe.cmd)
    for key, field_name in (("WorkingDir", "workdir"), ("User", "user")):
        if field_name in set_fields or key not in cfg:
            cfg[key] = getattr(recipe, field_name)
    labels = {**(cfg.get("Labels") or {}), **recipe.labels}
    if labels:
        cfg["Labels"] = labels
    for key in ("Entrypoint", "Cmd"):
        if not cfg.get(key):
            cfg.pop(key, None)

    config: dict[str, Any] = {
        "created": rfc3339(created),
        "architecture": base.config.get("architecture", "amd64"),
        "os": base.config.get("os", "linux"),
    }
    for key in ("os.version", "os.features", "variant"):
        if base.config.get(key):
            config[key] = base.config[key]
    config["config"] = cfg
    config["rootfs"] = {"type": "layers", "diff_ids": [*base.diff_ids, *diff_ids]}
    config["history"] = [*(base.config.get("history") or []), *history]
    return config
