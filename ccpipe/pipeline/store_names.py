"""Names of the NATS stores that ``ccpipe submit`` uses, in a module that loads nothing.

:mod:`ccpipe.pipeline.nats_auth` lists every stream and bucket (and re-exports these), but it loads
the models; ``ccpipe submit`` runs on every push and reads the enrolments and stores the pushed
source (:mod:`ccpipe.pipeline.source_bundles`) without them.
"""

from __future__ import annotations

ARTIFACTS = "CCPIPE_ARTIFACTS"
"""The object store of artifacts handed between stages (stream ``OBJ_CCPIPE_ARTIFACTS``): the pushed
sources, the plain and the signed layouts."""
ENROLMENTS = "CCPIPE_ENROLMENTS"
"""The admin-signed enrolments of the components' event keys (written by the admin only, read by all)."""
