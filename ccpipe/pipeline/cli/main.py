"""The ``ccpipe`` command: parse, load settings, call one function, render; one error exit.

Exit codes: 0 success; 1 the thing asked about failed (a workload, a verification); 2 bad
usage or bad input; 3 configuration or environment problem (a corrupt data directory
included); 4 a service did not answer; 130 interrupted; 141 the reader of stdout went away
(``ccpipe events | head``), as for Unix tools ended by SIGPIPE.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from pydantic_settings import BaseSettings

from ccpipe.pipeline.cli import audit, build, demo, deploy, endpoints, events, kbs, runner, schema, sign, submit, up
from ccpipe.pipeline.settings import load_settings
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import CcpipeError, ConfigurationError, InvalidInput, TransientError
from ccpipe.stages.build.config import BuildConfig
from ccpipe.stages.sign.config import SignConfig

SETTINGS_MODELS: tuple[type[BaseSettings], ...] = (Settings, BuildConfig, SignConfig)
"""Every model read from ``CCPIPE_*`` variables; ``--help`` lists their fields."""


def env_help() -> str:
    """The epilog of every command: each ``CCPIPE_*`` variable with its description and default."""
    lines = ["environment:"]
    for model in SETTINGS_MODELS:
        prefix = str(model.model_config.get("env_prefix", ""))
        for name, field in model.model_fields.items():
            default = "" if field.is_required() or field.default in (None, "") else f" ({field.default})"
            if field.default_factory is not None:
                default = ""
            lines.append(f"  {(prefix + name).upper():<34} {field.description or ''}{default}")
    lines.append("  CCPIPE_KBS_KEK_FILE                key-encryption key of the KBS resource store")
    lines.append("  CCPIPE_KBS_PKCS11_MODULE           PKCS#11 library (.so): the KEK is a key in an HSM token instead")
    lines.append("  CCPIPE_KBS_PKCS11_TOKEN            label of that token")
    lines.append("  CCPIPE_KBS_PKCS11_PIN_FILE         file (0600) holding the token's user PIN")
    lines.append("  CCPIPE_KBS_PKCS11_KEY              label of the AES-256 key in the token (ccpipe-kbs-kek)")
    lines.append("  CCPIPE_KBS_PKCS11_CREATE           true: generate that key (non-extractable) if missing (false)")
    return "\n".join(lines) + "\n"


ENV_HELP = env_help()


AddCommand = Callable[..., argparse.ArgumentParser]
"""``add(name, func, help, json_flag=True) -> parser``: register one command (see build_parser)."""

COMMAND_MODULES: tuple[ModuleType, ...] = (
    up, demo, endpoints, submit, events, schema, build, audit, sign, deploy, runner, kbs,
)  # fmt: skip
"""Every module of ``pipeline/cli`` that contributes commands; each has ``register(sub, add)``."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="ccpipe", description="Event-driven supply chain for confidential workloads.",
        epilog=ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[..., Any], help_: str, *, json_flag: bool = True,
            into: Any = None) -> argparse.ArgumentParser:
        p = (into or sub).add_parser(name, help=help_, description=help_, epilog=ENV_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    for module in COMMAND_MODULES:
        module.register(sub, add)
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


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings: Settings = load_settings()
        result = args.func(settings, args)
        if inspect.iscoroutine(result):
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
