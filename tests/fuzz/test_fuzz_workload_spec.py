"""Fuzz: ``ccpipe.toml``, the workload spec a user pushes (``parse_workload_spec``).

The text reaches the pipeline from a git push; whatever it holds, the parser returns a spec or
raises :class:`InvalidInput` naming the field or the syntax error.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import tomli_w
from hypothesis import assume, given
from hypothesis import strategies as st

from ccpipe.pipeline.cli.demo_repository import DEMO_SPEC
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.workload import parse_workload_spec
from tests.fuzz.fuzz_helpers import TIMEOUT_S, byte_mutations, fuzz_settings, json_mutations, parses_or_refuses

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(TIMEOUT_S)]

SEED = DEMO_SPEC
"""The ccpipe.toml of ``ccpipe demo``: the document users start from."""


def _toml(doc: Any) -> str:
    """``doc`` written as TOML; examples TOML cannot hold (null, a bare array) are skipped (deep
    TOML text is generated directly below, not through tomli_w, which recurses)."""
    try:
        return tomli_w.dumps(doc) if isinstance(doc, dict) else ""
    except (TypeError, ValueError):
        assume(False)
        raise  # unreachable: assume(False) stops the example


TEXT = st.one_of(
    byte_mutations(SEED.encode()).map(lambda b: b.decode("utf-8", "replace")),
    json_mutations(tomllib.loads(SEED), deep_levels=()).map(_toml),
    st.text(max_size=400),
    st.sampled_from(["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 5000 + "1" + "}" * 5000]),
)


@fuzz_settings()
@given(TEXT)
def test_fuzz_workload_spec_parses_or_raises_invalid_input(text: str) -> None:
    parses_or_refuses(parse_workload_spec, text, InvalidInput)
