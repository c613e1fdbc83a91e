"""vLLM's own code judges what hala gives vLLM. Runs where vLLM is installed (the hala-vllm
image: ``python3 -m hala.vllm_reference request.json``; or .venv-vllm, the same release's CPU
build); imports nothing of hala but its version, so it needs none of hala's dependencies.

Reads JSON from the file named by the first argument (or stdin):
    {"model": FOLDER, "engine_args": {WHERE: {arg: value}}, "sampling": {WHERE: {arg: value}},
     "serve": {WHERE: [argv after "vllm serve"]}}
and prints JSON of the same shape with, for each WHERE, null when vLLM accepts it or vLLM's error
in one line. Exit status 0 either way: the caller decides; 2 when vLLM cannot be imported.

- engine_args: ``EngineArgs(model=..., **args)`` (vLLM's dataclass: an unknown name is a
  TypeError), then the same values as flags through ``EngineArgs.add_cli_args`` (vLLM's own
  types and choices for every flag);
- sampling: ``SamplingParams(**args)``, whose validation refuses bad values;
- serve: the ``vllm serve`` command line as vLLM's CLI builds its parser (the serve subcommand
  of ``vllm.entrypoints.cli``), then ``validate`` as ``vllm serve`` runs it before loading a model.
"""

from __future__ import annotations

import json
import os
import sys

# vLLM picks its platform at import; without a GPU the CPU platform lets its argument parsers load.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


class _ParseError(Exception):
    pass


def _parser_raising(parser):
    """argparse prints and exits on a bad argument; raise instead, with its message."""

    def error(message):
        raise _ParseError(message)

    parser.error = error
    for action in parser._actions:  # the serve subparser is where the flags live
        subparsers = action.choices if isinstance(getattr(action, "choices", None), dict) else {}
        for sub in subparsers.values():
            if hasattr(sub, "error"):
                sub.error = error
    return parser


def check_engine_args(args: dict, model: str) -> str | None:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    try:
        EngineArgs(model=model, **args)
        parser = _parser_raising(EngineArgs.add_cli_args(FlexibleArgumentParser()))
        argv = ["--model", model]
        for name, value in args.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        parsed = parser.parse_args(argv)
        for name, value in args.items():
            if getattr(parsed, name) != value:
                return f"--{name.replace('_', '-')} {value} was read as {getattr(parsed, name)!r}"
    except (Exception, SystemExit) as err:  # noqa: BLE001 - vLLM's refusal, whatever its kind
        return _line(err)
    return None


def check_sampling(args: dict) -> str | None:
    from vllm import SamplingParams

    try:
        SamplingParams(**args)
    except Exception as err:  # noqa: BLE001 - VLLMValidationError is not a ValueError (0.32, 0.33)
        return _line(err)
    return None


def _serve_parser():
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    command = ServeSubcommand()
    command.subparser_init(subparsers)
    return _parser_raising(parser), command


def check_serve(argv: list[str]) -> str | None:
    try:
        parser, command = _serve_parser()
        command.validate(parser.parse_args(["serve", *argv]))
    except (Exception, SystemExit) as err:  # noqa: BLE001
        return _line(err)
    return None


def main() -> int:
    try:
        import vllm
    except ImportError as err:
        print(f"vllm_reference: vLLM cannot be imported here: {_line(err)}", file=sys.stderr)
        return 2
    request = json.loads(open(sys.argv[1], encoding="utf-8").read() if len(sys.argv) > 1 else sys.stdin.read())
    # A model folder that exists: EngineArgs takes any other path for a hub id and checks its form.
    model = request.get("model", ".")
    checks = {"engine_args": lambda args: check_engine_args(args, model), "sampling": check_sampling, "serve": check_serve}
    result = {"vllm": vllm.__version__}
    for section, check in checks.items():
        result[section] = {where: check(value) for where, value in request.get(section, {}).items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
