"""The CLI registers only the module of the command being run, and that table stays true."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ccpipe.pipeline.cli.main import COMMAND_MODULES, build_parser


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_the_table_names_every_command_of_the_full_parser() -> None:
    # A command added to a module but not to COMMAND_MODULES would be unreachable once a
    # known command is run: the table must list exactly what the modules register.
    assert sorted(_commands(build_parser())) == sorted(COMMAND_MODULES)


@pytest.mark.parametrize("command", sorted(COMMAND_MODULES))
def test_each_command_is_registered_by_the_module_the_table_names(command: str) -> None:
    assert command in _commands(build_parser([command]))


def test_help_lists_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(["submit", "--help"]).parse_args(["submit", "--help"])
    out = capsys.readouterr().out
    assert "CCPIPE_NATS_URL" in out and "CCPIPE_KBS_PKCS11_MODULE" in out


def test_an_unknown_command_lists_them_all(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(["sumbit"]).parse_args(["sumbit"])
    err = capsys.readouterr().err
    assert "invalid choice: 'sumbit'" in err and "'submit'" in err and "'audit'" in err


def test_parsing_submit_imports_no_stage_server_or_http_client() -> None:
    # What the git hook pays on every push: a fresh interpreter parsing `ccpipe submit`.
    code = ("import sys; from ccpipe.pipeline.cli.main import build_parser; "
            "build_parser(['submit', '.']).parse_args(['submit', '.']); print('\\n'.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    heavy = {"aiohttp", "faststream", "sigstore", "ccpipe.stages", "ccpipe.enclave_runner", "ccpipe.pipeline.audit",
             "ccpipe.oci.registry", "nats"}
    assert loaded & heavy == set()


def test_submitting_imports_no_stage_server_key_maker_or_http_client() -> None:
    # What a submit loads beyond parsing: the NATS client the light way, the publisher, the
    # signer, the trigger; never the stream framework, the embedded servers or the key makers.
    code = ("import sys; from ccpipe.pipeline.cli.main import build_parser; "
            "build_parser(['submit', '.']).parse_args(['submit', '.']); "
            "from ccpipe.pipeline import quick_submit; quick_submit.import_nats_client('nats://127.0.0.1:4222'); "
            "import ccpipe.pipeline.bus, ccpipe.pipeline.signing, ccpipe.pipeline.trigger; "
            "print('\\n'.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    heavy = {"aiohttp", "faststream", "sigstore", "ccpipe.stages", "ccpipe.enclave_runner", "ccpipe.pipeline.audit",
             "ccpipe.oci.registry", "nkeys", "nacl", "ctypes"}
    assert "nats.aio.client" in loaded and "ccpipe.pipeline.bus" in loaded
    assert loaded & heavy == set()


def test_the_quick_submit_path_loads_no_model_settings_model_or_telemetry() -> None:
    # What the hook pays on every push when the push is valid and telemetry is off: parsing, the
    # quick path (ccpipe.pipeline.quick_submit) and the NATS client; no pydantic at all.
    code = ("import sys; from ccpipe.pipeline.cli.main import build_parser; "
            "build_parser(['submit', '.']).parse_args(['submit', '.']); "
            "from ccpipe.pipeline import quick_submit; quick_submit.import_nats_client('nats://127.0.0.1:4222'); "
            "import nats.aio.client; print('\\n'.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    heavy = {"pydantic", "pydantic_core", "pydantic_settings", "prometheus_client", "opentelemetry", "aiohttp",
             "faststream", "uuid6", "rfc8785", "nkeys", "nacl", "ctypes", "ccpipe.schemas.config",
             "ccpipe.schemas.envelope", "ccpipe.schemas.events", "ccpipe.schemas.workload",
             "ccpipe.pipeline.bus", "ccpipe.pipeline.settings", "ccpipe.pipeline.telemetry", "ccpipe.stages"}
    assert "nats.aio.client" in loaded and "ccpipe.pipeline.quick_submit" in loaded
    assert loaded & heavy == set()


def _after_import_nats_client(url: str) -> list[str]:
    code = ("import sys; from ccpipe.pipeline.quick_submit import import_nats_client; "
            f"import_nats_client({url!r}); import nats.aio.transport as t; "
            "print(t.aiohttp is not None, 'aiohttp' in sys.modules); import aiohttp; print('aiohttp importable')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")


def test_a_nats_url_loads_the_client_without_aiohttp_which_stays_importable() -> None:
    assert _after_import_nats_client("nats://127.0.0.1:4222,tls://b:4222")[:2] == ["False False", "aiohttp importable"]


def test_a_websocket_url_keeps_the_websocket_transport() -> None:
    assert _after_import_nats_client("nats://a:4222,ws://b:8080")[0] == "True True"


def test_the_enrolled_quick_path_loads_no_nats_py_asyncio_or_joserfc() -> None:
    # Where components are enrolled (the embedded default), a submit also packs, seals and stores
    # the pushed source: through ccpipe.pipeline.light_nats, without nats-py, asyncio or joserfc.
    code = ("import sys; from ccpipe.pipeline.cli.main import build_parser; "
            "build_parser(['submit', '.']).parse_args(['submit', '.']); "
            "import ccpipe.pipeline.quick_submit, ccpipe.pipeline.source_bundles, ccpipe.pipeline.artifacts, "
            "ccpipe.pipeline.enrolment, ccpipe.pipeline.light_nats; print('\\n'.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    heavy = {"nats", "asyncio", "joserfc", "cryptography.x509", "nkeys", "aiohttp", "ssl", "pydantic",
             "ccpipe.pipeline.enrolment_bus", "ccpipe.pipeline.bus"}
    assert "ccpipe.pipeline.light_nats" in loaded
    assert loaded & heavy == set()
