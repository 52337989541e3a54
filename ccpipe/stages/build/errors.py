"""Errors of the build stage, with stable codes.

Every class here is final (not retried): a bad repository, recipe, base image or tree does not
get better by building it again. A :class:`ccpipe.schemas.errors.TransientError` raised by a callable
the caller passed in (a registry client's ``fetch_blob``) passes through unchanged.

Errors of the OCI layout the build writes are :mod:`ccpipe.oci.errors`.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError


class BuildError(CcpipeError):
    """Something about the build's inputs makes the image impossible to build."""

    code = "build.error"


class CheckoutFailed(BuildError):
    """The repository, the ref or one of the commit's objects cannot be read."""

    code = "build.checkout"
    default_hint = "check that the repository path is a git repository and that the ref exists in it"


class RecipeInvalid(BuildError):
    """The build recipe cannot be carried out on this tree (missing source, conflicting copies)."""

    code = "build.recipe"
    default_hint = "fix the [build] table of ccpipe.toml"


class UnsafeContent(BuildError):
    """The repository tree holds something the builder refuses to put in an image."""

    code = "build.content.unsafe"
    default_hint = "remove it from the repository or from the copy entries of ccpipe.toml"


class SpecialFileRefused(UnsafeContent):
    """A device node, FIFO or socket is in a copied tree."""

    code = "build.content.special"
    default_hint = "images are built from regular files, directories and symlinks only: remove the special file"


class SymlinkEscape(UnsafeContent):
    """Following a symlink would leave the repository tree."""

    code = "build.content.symlink"
    default_hint = "point the symlink inside the repository, or copy the link itself (no trailing slash)"


class PathEscape(UnsafeContent):
    """A path would leave the repository or the image root (``..``, an absolute source)."""

    code = "build.content.path"
    default_hint = "use a relative source path and an absolute destination without '..'"


class UnsupportedName(UnsafeContent):
    """A file name is not UTF-8, so it cannot be written portably into a layer."""

    code = "build.content.name"
    default_hint = "rename the file to a UTF-8 name"


class ContentChanged(BuildError):
    """A file changed size or type while the layer was being written."""

    code = "build.content.changed"
    default_hint = "nothing may write into the build's work directory while it runs; build again"


class BaseImageError(BuildError):
    """The base image cannot be found, read or trusted."""

    code = "build.base"
    default_hint = "check [build] base in ccpipe.toml"


class BaseNotFound(BaseImageError):
    """The base reference names nothing readable."""

    code = "build.base.not_found"


class BaseForbidden(BaseImageError):
    """The base reference points outside what this builder may read."""

    code = "build.base.forbidden"
    default_hint = "keep the base layout inside the repository, or under one of the builder's allowed base roots"


class BaseUnsupported(BaseImageError):
    """The base uses a format this builder does not read (zstd or encrypted layers, schema 1)."""

    code = "build.base.unsupported"


class BaseDigestMismatch(BaseImageError):
    """Base content does not match the digest that names it."""

    code = "build.base.digest"
    default_hint = "the base image or its source is corrupt or was tampered with; fetch it again"
