"""The ``robusthmc`` command line: ``repro`` shows the failures side by side, ``check`` finds them first."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

from tqdm import tqdm

from robusthmc import _backends as backends
from robusthmc._errors import BackendNotInstalledError
from robusthmc.lessons.repro import (
    Case,
    ReproRow,
    gpytorch_prior_cases,
    render_table,
    run_case,
    truncated_normal_cases,
)

__all__ = ["main"]

REPRO_EXAMPLES = """examples:
  robusthmc repro truncated-normal                 # both backends: the truncated-normal hang
  robusthmc repro truncated-normal --backend pyro --timeout 30
  robusthmc repro truncated-normal --json > rows.json
  robusthmc repro gpytorch-prior --steps 50        # the GPyTorch prior/constraint NaN, shorter runs
  robusthmc repro truncated-normal --case stock --case guarded
exit status: 0 if every row behaved as documented, 1 if not, 2 for a mistake in the input."""

CHECK_EXAMPLES = """examples:
  robusthmc check robusthmc.lessons.numpyro:turing
  robusthmc check robusthmc.lessons.numpyro:turing --repair   # the model as repair(model) makes it
  robusthmc check my_model.py:model --args '[[1.0, 2.0]]' --kwargs '{"scale": 2}'
  robusthmc check robusthmc.lessons.pyro:turing --json       # the backend is found from the imports
exit status: 0 if the model is clean, 1 if any site has a problem, 2 for a mistake in the input
(a model that does not import or run: --traceback shows where)."""


class _Mistake(Exception):
    """A mistake in the user's input: one line on stderr and exit status 2 (``--traceback``: the trace)."""


def _fail(message: str) -> NoReturn:
    raise _Mistake(message)


def _where_in(error: BaseException, filename: str | None = None) -> str:
    """``FILE, line N``: where ``error`` was raised in the user's code (in ``filename`` if given)."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}, line {error.lineno}"
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if (f.filename == filename if filename else _is_user_file(f.filename))]
    frame = (ours or frames)[-1] if (ours or frames) else None
    return f"{frame.filename}, line {frame.lineno}" if frame else "unknown location"


def _is_user_file(filename: str) -> bool:
    library = [sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib")]
    return not filename.startswith("<") and not any(filename.startswith(root) for root in library)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip().splitlines()[0]


def _require_backends(backends: Sequence[str]) -> None:
    for module in backends:
        try:
            importlib.import_module(module)
        except ImportError:
            _fail(f'the {module} backend is not installed: pip install "robusthmc[{module}]"')


def _run_cases(cases: list[Case], timeout: float, as_json: bool) -> int:
    rows: list[ReproRow] = []
    for case in tqdm(cases, desc="repro", unit="case", file=sys.stderr, disable=None):
        rows.append(run_case(case, timeout))
    if as_json:
        print(json.dumps([row.to_json() for row in rows], indent=1))
    else:
        print(render_table(rows))
    return 0 if all(row.as_documented for row in rows) else 1


def _repro(options: argparse.Namespace) -> int:
    if options.lesson == "truncated-normal":
        needed = ["numpyro", "pyro"] if options.backend == "all" else [options.backend]
        _require_backends(needed)
        cases = truncated_normal_cases(options.backend)
    else:
        _require_backends(["pyro", "gpytorch"])
        os.environ["ROBUSTHMC_REPRO_STEPS"] = str(options.steps)
        cases = gpytorch_prior_cases()
    if options.case:
        unknown = sorted(set(options.case) - {case.name for case in cases})
        if unknown:
            names = ", ".join(sorted({case.name for case in cases}))
            _fail(f"unknown case {', '.join(unknown)}: the cases of {options.lesson} are {names}")
        cases = [case for case in cases if case.name in options.case]
    return _run_cases(cases, options.timeout, options.json)


def _load(target: str) -> Callable:
    if ":" not in target:
        _fail(f"{target!r}: expected MODULE_OR_FILE:FUNCTION, e.g. my_model.py:model")
    location, name = target.rsplit(":", 1)
    if not location or not name:
        _fail(f"{target!r}: expected MODULE_OR_FILE:FUNCTION, e.g. my_model.py:model")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            _fail(f"file not found: {location}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent.resolve()))
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise _Mistake(f"{location} does not import: {_describe(error)} ({_where_in(error)})") from error
    else:
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as error:
            if error.name is not None and location.startswith(error.name):
                _fail(f"module not found: {location} ({error})")
            raise _Mistake(f"{location} does not import: {_describe(error)} ({_where_in(error)})") from error
        except Exception as error:
            raise _Mistake(f"{location} does not import: {_describe(error)} ({_where_in(error)})") from error
    if not hasattr(module, name):
        _fail(f"{location} has no function {name!r}")
    function = getattr(module, name)
    if not callable(function):
        kind = type(function).__name__
        article = "an" if kind[0].lower() in "aeiou" else "a"
        _fail(f"{location}:{name} is {article} {kind} ({_short_repr(function)}), not a model function")
    return function


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_argument(text: str, kind: type, flag: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        _fail(f"{flag} is not valid JSON ({error.msg} at character {error.pos}): {text}")
    if not isinstance(value, kind):
        _fail(f"{flag} must be a JSON {'list' if kind is list else 'object'}, got {text}")
    return value


def _check(options: argparse.Namespace) -> int:
    from robusthmc._check import check, choose_backend

    args = _json_argument(options.args, list, "--args")
    kwargs = _json_argument(options.kwargs, dict, "--kwargs")
    model = _load(options.target)
    name = getattr(model, "__name__", options.target)
    try:
        inspect.signature(model).bind(*args, **kwargs)
    except TypeError as error:
        _fail(
            f"{name}{inspect.signature(model)}: {error}; pass its arguments "
            """with --args '[...]' (a JSON list) or --kwargs '{"name": ...}'"""
        )
    try:
        backend = choose_backend(model, options.backend, spell=lambda backend: f"--backend {backend}")
    except ValueError as error:
        _fail(str(error))
    _require_backends([backend])
    code = getattr(model, "__code__", None)
    doctor = backends.backend(backend, "_check")
    args = [doctor.as_data(value) for value in args]
    kwargs = {key: doctor.as_data(value) for key, value in kwargs.items()}
    try:
        doctor.rehearse(model, args, kwargs)
    except Exception as error:
        where = _where_in(error, code.co_filename if code else None)
        raise _Mistake(
            f"{name} raised {_describe(error)} on the arguments given ({where}): check --args and --kwargs"
        ) from error
    repairs = None
    if options.repair:
        model = backends.backend(backend).repair(model)
        repairs = model.explain(*args, **kwargs)
    try:
        report = check(model, *args, backend=backend, points=options.points, **kwargs)
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        if code is None or not any(frame.filename == code.co_filename for frame in frames):
            raise  # not raised by the model: a bug of robusthmc, shown whole
        where = _where_in(error, code.co_filename)
        raise _Mistake(f"{name} raised {_describe(error)} ({where})") from error
    if options.json:
        print(json.dumps(report.to_dict() | ({} if repairs is None else repairs.to_dict()), indent=1))
    else:
        if repairs is not None:
            print(f"repaired ({len(repairs)} {'site' if len(repairs) == 1 else 'sites'}):")
            print("\n".join(f"  {line}" for line in str(repairs).splitlines()))
        print(report)
    return 0 if report.clean else 1


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """Argument mistakes in two lines: the error, and where the usage is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(usage: {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="robusthmc",
        description="HMC/NUTS that survive numerical failure: reproduce the failures, check a model.",
    )
    parser.add_argument("--version", action="version", version=f"robusthmc {version('robusthmc')}")
    commands = parser.add_subparsers(dest="command", required=True)
    repro = commands.add_parser(
        "repro",
        help="reproduce the two failures robusthmc fixes, stock and guarded side by side",
        epilog=REPRO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    repro.add_argument("lesson", choices=["truncated-normal", "gpytorch-prior"])
    repro.add_argument("--backend", choices=["numpyro", "pyro", "all"], default="all")
    repro.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=60.0,
        help="seconds before a case is called hung (default 60)",
    )
    repro.add_argument(
        "--steps", type=_at_least_one, default=200, help="gpytorch-prior: warmup steps = draws (default 200)"
    )
    repro.add_argument("--case", action="append", help="run only this case (repeatable), e.g. --case guarded")
    repro.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    repro.set_defaults(run=_repro)
    doctor = commands.add_parser(
        "check",
        help="find numerical traps in a model before sampling",
        epilog=CHECK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("target", metavar="MODULE_OR_FILE:FUNCTION")
    doctor.add_argument(
        "--backend", choices=["numpyro", "pyro"], help="default: the one the model's module imports"
    )
    doctor.add_argument("--args", default="[]", help="the model's positional arguments, a JSON list")
    doctor.add_argument("--kwargs", default="{}", help="the model's keyword arguments, a JSON object")
    doctor.add_argument(
        "--points", type=_at_least_one, default=20, help="prior draws, and as many uniform(-2, 2) points"
    )
    doctor.add_argument(
        "--repair",
        action="store_true",
        help="check the model as robusthmc's repair(model) swaps it; list the repairs first",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--traceback", action="store_true", help="show the whole trace of an error")
    doctor.set_defaults(run=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    options = _parser().parse_args(argv)
    try:
        return int(options.run(options))
    except (_Mistake, BackendNotInstalledError) as error:
        shown = getattr(options, "traceback", False)
        if shown:
            traceback.print_exception(error.__cause__ or error)
        print(f"robusthmc: error: {error}", file=sys.stderr)
        if error.__cause__ is not None and not shown and hasattr(options, "traceback"):
            print("(run again with --traceback for the whole trace)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robusthmc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
