"""rego-cpp loaded before libstdc++ (:mod:`ccpipe.stages.attest.rego_first`): Rego evaluations then
free what they allocate. Each case runs in a fresh interpreter, since load order is per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# 800 attestation-policy evaluations on distinct inputs (every one misses the decision memo), on two
# threads as the KBS runs them; prints whether rego-cpp came late, and RSS growth in KiB.
PROBE = textwrap.dedent("""
    import sys, uuid, concurrent.futures as cf
    if sys.argv[1] == "rego-first":
        from ccpipe.stages.attest.rego_first import load_rego_first
        load_rego_first()
    import aiohttp  # loads libstdc++ through frozenlist's C++ extension
    from importlib import resources
    import ccpipe.stages.attest.policies as pol
    from ccpipe.stages.attest.policy_eval import CompiledAttestationPolicy
    from ccpipe.stages.attest.policy_text import StoredPolicy
    from ccpipe.stages.attest.rego_first import rego_loaded_late
    text = resources.files(pol).joinpath("attestation_default.rego").read_text()
    policy = CompiledAttestationPolicy(StoredPolicy("default", "attestation", text))
    def rss():
        return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
    def evaluate(i):
        u = uuid.uuid4().hex
        policy.trust_vector({"snp": {"measurement": "ab" * 48}, "init_data": u, "ccpipe": {"emulated": True}},
                            {"snp_launch_measurement": ["ab" * 48], "init_data_digest": [u]})
    with cf.ThreadPoolExecutor(2) as pool:
        list(pool.map(evaluate, range(200)))
        before = rss()
        list(pool.map(evaluate, range(800)))
    print(rego_loaded_late(), rss() - before)
""")


def _probe(order: str) -> tuple[bool, int, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, order], capture_output=True, text=True, timeout=120,
                          check=True)
    late, grown = done.stdout.split()
    return late == "True", int(grown), done.stderr


def test_rego_loaded_first_keeps_memory_flat_over_many_evaluations() -> None:
    late, grown_kib, stderr = _probe("rego-first")
    assert not late and "leaks memory" not in stderr
    assert grown_kib < 6_000, f"{grown_kib} KiB over 800 evaluations"


def test_rego_loaded_after_libstdcxx_is_detected_and_said() -> None:
    # the order this module exists to prevent: the engine says so, and the leak it names is real
    late, grown_kib, stderr = _probe("aiohttp-first")
    assert late
    assert "rego-cpp was loaded after libstdc++" in stderr
    assert grown_kib > 12_000, f"only {grown_kib} KiB over 800 evaluations: has rego-cpp fixed its allocator?"


@pytest.mark.parametrize("command", ["up", "serve", "kbs"])
def test_the_cli_loads_rego_first_for_the_commands_that_evaluate_it(command: str) -> None:
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from ccpipe.pipeline.cli.main import main
        from ccpipe.stages.attest.rego_first import loaded_objects
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["{command}", "--help"])
        names = loaded_objects()
        rego = next(i for i, n in enumerate(names) if n.startswith("librego_shared"))
        cxx = next(i for i, n in enumerate(names) if n.startswith("libstdc++"))
        print(rego < cxx)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "True", done.stderr
