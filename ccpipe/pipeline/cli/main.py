"""The ``ccpipe`` command: parse, load settings, call one function, render; one error exit.

Exit codes: 0 success; 1 the thing asked about failed (a workload, a verification); 2 bad
usage or bad input; 3 configuration or environment problem (a corrupt data directory
included); 4 a service did not answer; 130 interrupted; 141 the reader of stdout went away
(``ccpipe events | head``), as for Unix tools ended by SIGPIPE.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ccpipe.schemas.errors import CcpipeError, ConfigurationError, InvalidInput, TransientError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

    from ccpipe.schemas.config import Settings


def settings_models() -> tuple[type[BaseSettings], ...]:
    """Every model read from ``CCPIPE_*`` variables; ``--help`` lists their fields.

    Imported here, not at module level: the stages' configurations pull in their packages,
    which a command such as ``submit`` (run by the git hook on every push) must not pay for.
    """
    from ccpipe.schemas.config import Settings
    from ccpipe.stages.build.config import BuildConfig
    from ccpipe.stages.sign.config import SignConfig

    return (Settings, BuildConfig, SignConfig)


def env_help() -> str:
    """The epilog of every command: each ``CCPIPE_*`` variable with its description and default."""
    lines = ["environment:"]
    for model in settings_models():
        prefix = str(model.model_config.get("env_prefix", ""))
        for name, field in model.model_fields.items():
            default = "" if field.is_required() or field.default in (None, "") else f" ({field.default})"
            if field.default_factory is not None:
                default = ""
            lines.append(f"  {(prefix + name).upper():<34} {field.description or ''}{default}")
    lines.append("  CCPIPE_KBS_KEYS_DIR                the KBS replicas' shared kek, session.key, token.key "
                 "('ccpipe kbs keys DIR'; default <data dir>/keys/kbs)")
    lines.append("  CCPIPE_KBS_KEK_FILE                key-encryption key of the KBS resource store (before the above)")
    lines.append("  CCPIPE_KBS_PKCS11_MODULE           PKCS#11 library (.so): the KEK is a key in an HSM token instead")
    lines.append("  CCPIPE_KBS_PKCS11_TOKEN            label of that token")
    lines.append("  CCPIPE_KBS_PKCS11_PIN_FILE         file (0600) holding the token's user PIN")
    lines.append("  CCPIPE_KBS_PKCS11_KEY              label of the AES-256 key in the token (ccpipe-kbs-kek)")
    lines.append("  CCPIPE_KBS_PKCS11_CREATE           true: generate that key (non-extractable) if missing (false)")
    return "\n".join(lines) + "\n"


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose help can end with the ``CCPIPE_*`` variables (``env_epilog``).

    That list is computed when help is shown, not when the parser is built: it comes from the
    settings models of every stage, which a command that is run often must not import.
    """

    def __init__(self, *args: Any, env_epilog: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env_epilog = env_epilog

    def format_help(self) -> str:
        """The help text, the environment variables last when this parser lists them."""
        if self.env_epilog and self.epilog is None:
            self.epilog = env_help()
        return super().format_help()


AddCommand = Callable[..., argparse.ArgumentParser]
"""``add(name, func, help, json_flag=True) -> parser``: register one command (see build_parser)."""

COMMAND_MODULES: dict[str, str] = {
    "up": "up", "demo": "demo", "endpoints": "endpoints", "submit": "submit", "hook": "submit",
    "events": "events", "status": "events", "schema": "schema", "asyncapi": "schema",
    "build": "build", "audit": "audit",
    "keys": "sign", "sign": "sign", "verify": "sign", "attest": "sign", "verify-attestation": "sign",
    "encrypt": "sign", "decrypt": "sign", "nodes": "deploy", "k8s": "deploy", "runner": "runner", "kbs": "kbs",
    "serve": "serve", "admin": "admin",
}  # fmt: skip
"""Each top-level command and the module of ``pipeline/cli`` that registers it (``register(sub, add)``).

Only the module of the command being run is imported: ``ccpipe submit``, which the git hook runs
on every push, then costs what submitting needs and not what ``up`` or ``audit`` import."""


def command_module(name: str) -> ModuleType:
    """The module of ``pipeline/cli`` called ``name`` (a value of :data:`COMMAND_MODULES`)."""
    return importlib.import_module(f"{__package__}.{name}")


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of every command, or only of the one ``argv`` names.

    With ``argv`` naming a known command, only that command's module is registered (and
    imported); otherwise (no command, an unknown one, top-level help) every command is, so the
    usage and errors list them all.
    """
    parser = CommandParser(
        prog="ccpipe", description="Event-driven supply chain for confidential workloads.",
        env_epilog=True, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[..., Any], help_: str, *, json_flag: bool = True,
            into: Any = None) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = (into or sub).add_parser(
            name, help=help_, description=help_, env_epilog=True,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    command = _command_in(argv) if argv is not None else None
    names = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else list(dict.fromkeys(COMMAND_MODULES.values()))
    for name in names:
        command_module(name).register(sub, add)
    return parser


def exit_code_for(exc: CcpipeError) -> int:
    """The exit code that tells a script what kind of failure this was."""
    if isinstance(exc, TransientError):
        return 4
    if isinstance(exc, ConfigurationError):
        return 3
    if isinstance(exc, InvalidInput):
        return 2
    return 1


REGO_COMMANDS = frozenset({"up", "serve", "kbs", "demo", "attest", "admin", "policy", "reference-values"})
"""Commands that may evaluate Rego in this process: rego-cpp is loaded before anything else
(:mod:`ccpipe.stages.attest.rego_first`), or every evaluation leaks."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if next((a for a in argv if not a.startswith("-")), None) in REGO_COMMANDS:
        # before the parser's imports load aiohttp (and libstdc++ with it); here, not at the top:
        # the git hook's ``submit`` imports no stage
        from ccpipe.stages.attest.rego_first import load_rego_first

        load_rego_first()
    args = build_parser(argv).parse_args(argv)
    try:
        quick = getattr(args, "quick", None)  # a command's path without the settings model (submit), or None
        if quick is not None and (status := quick(args)) is not None:
            return int(status)
        from ccpipe.pipeline.settings import load_settings  # pydantic-settings: loaded by the commands that need it

        settings: Settings = load_settings()
        with exported_spans(settings, args.command):
            result = args.func(settings, args)
            if inspect.iscoroutine(result):
                import asyncio  # here: the quick submit path runs without it (ccpipe.pipeline.light_nats)

                result = asyncio.run(result)
        return int(result or 0)
    except CcpipeError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"ccpipe {args.command}: {exc.one_line()}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("ccpipe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return stdout_closed()


@contextlib.contextmanager
def exported_spans(settings: Settings, command: str) -> Iterator[None]:
    """Trace this command over OTLP when ``CCPIPE_OTLP_ENDPOINT`` is set, and flush its spans at the end."""
    if not settings.otlp_endpoint:
        yield  # the tracing modules are not even imported: one-shot commands start fast
        return
    from ccpipe.pipeline.telemetry.tracing import configure_tracing, shutdown_tracing

    configure_tracing(settings, f"ccpipe-{command}")
    try:
        yield
    finally:
        shutdown_tracing()


STDOUT_CLOSED = 128 + signal.SIGPIPE
"""The status a shell reports for a Unix tool that SIGPIPE ended."""


def stdout_closed() -> int:
    """Stop quietly once the reader of stdout has gone (``| head``), as Unix tools do.

    Python ignores SIGPIPE (a server must survive a client that hangs up), so the write fails
    with :class:`BrokenPipeError` instead; stdout is pointed at /dev/null so the interpreter's
    final flush does not fail (and complain on stderr) a second time.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return STDOUT_CLOSED


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
