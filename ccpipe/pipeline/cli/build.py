"""``ccpipe build``: the build stage's core run by hand on a repository, without NATS.

``ccpipe build REPO [--ref REF] --out DIR`` writes an OCI image layout into DIR and prints the
manifest digest (the same digest for the same commit, wherever it is built).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccpipe.pipeline.cli.common import output_dir, print_json, say
from ccpipe.schemas.config import Settings
from ccpipe.stages.build import BaseSources, build_from_repo
from ccpipe.stages.build.config import bases_dir, load_build_config
from ccpipe.stages.build.provenance import statement_json
from ccpipe.stages.build.runner import demo_base_preparer


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    """Build REPO at REF into the layout DIR; print the manifest digest (or --json)."""
    out = output_dir(args.out, "--out")
    config = load_build_config()
    default_bases = bases_dir(settings.data_dir, config)
    roots = tuple(Path(p).absolute() for p in args.base_dir) or (default_bases,)
    result = build_from_repo(
        args.repo,
        args.ref,
        out,
        tag=args.tag,
        recipe_path=args.recipe,
        bases=BaseSources(oci_roots=roots),
        work_root=config.work_dir,
        prepare_base=demo_base_preparer(default_bases),
    )
    if args.provenance:
        Path(args.provenance).write_text(json.dumps(statement_json(result.provenance), indent=2) + "\n")
    if args.json:
        print_json(
            {
                "image_digest": result.image_digest,
                "layout": str(result.layout),
                "tag": result.image.tag,
                "commit": result.commit,
                "provenance_digest": result.provenance_digest_str,
                "provenance": statement_json(result.provenance),
            }
        )
    else:
        say(result.image_digest)
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Building by hand: build."""
    p = add("build", cmd_build, "build a repository's image into an OCI layout (no NATS); prints its digest")
    p.add_argument("repo", metavar="REPO", help="path of the git repository")
    p.add_argument("--ref", default="HEAD", help="branch, tag or commit to build (default: HEAD)")
    p.add_argument("--out", required=True, metavar="DIR", help="OCI layout directory to write (created if absent)")
    p.add_argument("--tag", help="tag in DIR's index.json (default: the workload name)")
    p.add_argument("--recipe", default="ccpipe.toml", help="path of the workload spec in the repository")
    p.add_argument(
        "--base-dir", action="append", default=[], metavar="DIR",
        help="directory an absolute oci: base may be read from (repeatable; default: <data dir>/bases)",
    )  # fmt: skip
    p.add_argument("--provenance", metavar="FILE", help="also write the SLSA provenance statement to FILE")
