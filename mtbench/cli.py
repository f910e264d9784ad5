"""The ``mtbench`` command line: parses arguments and delegates to the library."""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer
from rich.console import Console

from .errors import MtbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark transfer, meta and joint few-shot learners on shared, seeded episodes.")
out = Console()
err = Console(stderr=True)
PIPE_WIDTH = 200  # tables written to a pipe or file are not squeezed to 80 columns

PluginOpt = typer.Option(None, "--plugin", "-p", help="Extra plugin module to load (repeatable); also $MTBENCH_PLUGINS.")
BlockOpt = typer.Option(None, "--block", help="Plugin name not to load (repeatable); also $MTBENCH_DISABLE_PLUGINS.")
ResultsOpt = typer.Option(Path("results"), "--results-dir", "-r", help="Where result files are written and read.")


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error as one line and exit 2; Ctrl-C exits 130."""
    try:
        yield
    except MtbenchError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _plugins(plugin: list[str] | None, block: list[str] | None):
    from .plugins import load_plugins
    return load_plugins(modules=plugin or (), blocked=block or ())


def _parse_sets(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--set protonet.episodes=100`` -> {"protonet": {"episodes": 100}} (values parsed as JSON if they can be)."""
    result: dict[str, dict[str, Any]] = {}
    for item in values or ():
        key, sep, raw = item.partition("=")
        alg, dot, param = key.partition(".")
        if not sep or not dot or not alg or not param:
            raise MtbenchError(f"--set {item!r} must look like ALGORITHM.PARAM=VALUE, e.g. protonet.episodes=100")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        result.setdefault(alg, {})[param] = value
    return result


def _parse_protocols(values: list[str] | None) -> list[tuple[int, int]] | None:
    """``5w1s`` -> (5, 1)."""
    if not values:
        return None
    out = []
    for value in values:
        ways, sep, shots = value.lower().rstrip("s").partition("w")
        if not sep or not ways.isdigit() or not shots.isdigit():
            raise MtbenchError(f"--protocol {value!r} must look like 5w1s (ways, then shots)")
        out.append((int(ways), int(shots)))
    return out


def _resolve_suite(name: str, plugins: Any):
    from .suites import load_suite
    if name.endswith(".toml") or os.sep in name:
        return load_suite(Path(name))
    return plugins.suites.get(name)


def data_dir(option: Optional[Path]) -> Path:
    """--data-dir, else $MTBENCH_DATA, else the user cache (where `mtbench download` puts data)."""
    if option is not None:
        return option
    env = os.environ.get("MTBENCH_DATA")
    return Path(env) if env else data_cache_dir() / "data"


def data_cache_dir() -> Path:
    env = os.environ.get("MTBENCH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mtbench"


@app.command()
def run(
    suite: str = typer.Option(..., "--suite", "-s", help="Suite name or path to a suite TOML file."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b", help="quick | standard | paper (default: the suite's)."),
    algorithm: Optional[List[str]] = typer.Option(None, "--algorithm", "-a", help="Run only these algorithms (repeatable)."),
    seed: Optional[List[int]] = typer.Option(None, "--seed", help="Seeds to run (repeatable; default: the suite's)."),
    episodes: Optional[int] = typer.Option(None, "--episodes", help="Test episodes per cell (default: the suite's)."),
    protocol: Optional[List[str]] = typer.Option(None, "--protocol", help="Only these protocols, e.g. 5w1s (repeatable)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a hyperparameter: ALGORITHM.PARAM=VALUE."),
    device: str = typer.Option("auto", "--device", help="cpu | cuda | cuda:N | auto."),
    results_dir: Path = ResultsOpt,
    data: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset root (default: $MTBENCH_DATA)."),
    force: bool = typer.Option(False, "--force", help="Rerun cells that already have results."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or leaderboard."),
    plugin: Optional[List[str]] = PluginOpt,
    block: Optional[List[str]] = BlockOpt,
) -> None:
    """Train and evaluate every (algorithm, dataset, ways, shots, seed) cell of a suite."""
    from .context import resolve_device
    from .progress import Reporter
    from .results import ResultStore
    from .runner import Runner, plan_cells

    with user_errors():
        plugins = _plugins(plugin, block)
        the_suite = _resolve_suite(suite, plugins)
        cells = plan_cells(the_suite, plugins, budget, algorithm, seed, episodes, _parse_sets(set_),
                           _parse_protocols(protocol))
        store = ResultStore(results_dir)
        with Reporter(enabled=not quiet, console=err) as reporter:
            runner = Runner(plugins, store, resolve_device(device), data_dir(data), results_dir / ".cache",
                            data_cache_dir(), reporter=reporter,
                            on_result=lambda p: reporter.log(f"saved {p}"))
            summary = runner.run(cells, force=force)
        err.print(f"{the_suite.name}: {len(summary.done)} cells run, {len(summary.skipped)} already done "
                  f"(results in {results_dir})", highlight=False)
        if summary.interrupted:
            err.print("interrupted: finished cells are saved; run the same command again to resume")
            raise typer.Exit(130)
        if not quiet:
            try:
                board = build_board(store, the_suite, None, plugins)
            except NoResults:
                return
            _show(board, "terminal", None, _renderer("terminal", plugins))


class NoResults(Exception):
    """Nothing to tabulate: one line on stderr and exit 1 (not a usage error)."""


def build_board(store: Any, suite: Any, metric: Optional[str], plugins: Any, title: str = "") -> Any:
    """The :class:`~mtbench.leaderboard.Leaderboard` of stored results (raises NoResults when empty).

    ``metric`` defaults to the suite's first metric, else the first metric found in the results.
    """
    from .leaderboard import build_leaderboard

    where = f"{store.root}" + (f" for suite {suite.name!r}" if suite else "")
    if not store.root.is_dir():
        raise NoResults(f"no results: {store.root} does not exist")
    runs = store.load(suite.name if suite else None)
    if not runs:
        raise NoResults(f"no results in {where}")
    if metric is None:
        present = [r[1] for run in runs for r in (run.get("rows") or [])[:1]]
        metric = suite.metrics[0] if suite else present[0]
    m = plugins.metrics.get(metric)
    versions = {}
    for name in {run["spec"].get("plugin") or run["spec"].get("algorithm") for run in runs}:
        if name in plugins.algorithms:
            versions[name] = plugins.algorithms.get(name).code_version()
    title = title or f"{suite.name if suite else 'all suites'}: {metric}"
    board = build_leaderboard(runs, suite=suite, metric=m, title=title, code_versions=versions)
    if board.cells.empty:
        raise NoResults(f"no {metric!r} results in {where}")
    return board


def _renderer(fmt: str, plugins: Any) -> Any:
    """The registered renderer of ``fmt`` (checked before any work), or None for the interim built-ins."""
    from . import leaderboard as lb
    registry = getattr(plugins, "renderers", None)
    if registry is not None:
        return registry.get(fmt)
    if fmt not in (*lb.RENDERERS, "csv", "terminal"):
        raise MtbenchError(f"unknown format {fmt!r}; use terminal, markdown, csv, html or latex")
    return None


def _show(board: Any, fmt: str, output: Optional[Path], renderer: Any) -> None:
    from . import leaderboard as lb
    if renderer is not None:
        if output:
            renderer.write(board, output)
            err.print(f"wrote {output}")
            return
        if fmt == "terminal" and out.is_terminal and renderer.console is not None:
            for item in renderer.console(board):
                out.print(item)
            return
        data = renderer.render(board)
        if isinstance(data, bytes):
            sys.stdout.buffer.write(data)
        else:
            sys.stdout.write(data)
        return
    if fmt == "terminal" and output is None:
        console = out if out.is_terminal else Console(width=PIPE_WIDTH)
        console.print(lb.render_rich(board.wide, board.title))
        for note in board.notes:
            console.print(note, highlight=False)
        return
    if fmt == "csv":
        text = lb.render_csv(board.cells.drop(columns=["params"]))
    elif fmt == "markdown":
        text = lb.render_markdown(board.wide, board.title, board.notes)
    elif fmt == "html":
        text = lb.render_html(board.wide, board.title)
    else:
        text = lb.RENDERERS[fmt](board.wide)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command()
def leaderboard(
    results_dir: Path = ResultsOpt,
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Only this suite (name or TOML path)."),
    fmt: str = typer.Option("terminal", "--format", "-f", help="terminal | markdown | csv | json | html | latex "
                            "(or a plugin's format)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    metric: Optional[str] = typer.Option(None, "--metric", "-m",
                                         help="Metric to tabulate (default: the suite's first metric)."),
    plugin: Optional[List[str]] = PluginOpt,
    block: Optional[List[str]] = BlockOpt,
) -> None:
    """One row per experiment: mean ± 95% CI per protocol, paired significance against the best, ranks, cost."""
    from .results import ResultStore
    with user_errors():
        plugins = _plugins(plugin, block)
        the_suite = _resolve_suite(suite, plugins) if suite else None
        renderer = _renderer(fmt, plugins)
        if metric is not None:
            plugins.metrics.get(metric)
        try:
            board = build_board(ResultStore(results_dir), the_suite, metric, plugins)
        except NoResults as exc:
            err.print(str(exc), highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        _show(board, fmt, output, renderer)


@app.command()
def plugins(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    plugin: Optional[List[str]] = PluginOpt,
    block: Optional[List[str]] = BlockOpt,
) -> None:
    """List every loaded plugin: distribution, version, hooks and what it registered."""
    with user_errors():
        infos = _plugins(plugin, block).describe()
    if as_json:
        sys.stdout.write(json.dumps([{"name": i.name, "distribution": i.distribution, "version": i.version,
                                      "hooks": list(i.hooks), "registered": i.registered} for i in infos],
                                    indent=1) + "\n")
        return
    from rich.table import Table
    table = Table(title="mtbench plugins")
    for col in ("plugin", "distribution", "version", "registered"):
        table.add_column(col)
    for i in infos:
        what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in i.registered.items())
        table.add_row(i.name, i.distribution or "(module)", i.version or "", what)
    out.print(table)


@app.command()
def download(
    dataset: str = typer.Argument(..., help="Dataset name, e.g. omniglot."),
    data: Optional[Path] = typer.Option(None, "--data-dir", help="Where to put it (default: $MTBENCH_DATA)."),
    plugin: Optional[List[str]] = PluginOpt,
) -> None:
    """Download a dataset's archives (with checksum verification) into the data directory."""
    with user_errors():
        cls = _plugins(plugin, None).datasets.get(dataset)
        target = data_dir(data)
        if not hasattr(cls, "download"):
            raise MtbenchError(f"dataset {dataset!r} has nothing to download")
        for path in cls().download(target):
            err.print(f"ok {path}")


@app.command()
def prepare(
    dataset: str = typer.Argument(..., help="Dataset name: miniimagenet, cifar-fs, fc100, cub, tiered-imagenet."),
    source: Path = typer.Option(..., "--from", help="The dataset as you have it: a folder, zip or tar archive."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Dataset parameter KEY=VALUE, e.g. image_size=84."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    plugin: Optional[List[str]] = PluginOpt,
) -> None:
    """Convert a dataset once into the memory-mapped uint8 cache ($MTBENCH_CACHE/prepared) its loader reads."""
    from .progress import Reporter
    with user_errors():
        cls = _plugins(plugin, None).datasets.get(dataset)
        if not hasattr(cls, "prepare"):
            raise MtbenchError(f"dataset {dataset!r} needs no `mtbench prepare`: it reads its files directly")
        raw: dict[str, Any] = {}
        for item in param or ():
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise MtbenchError(f"--param {item!r} must look like KEY=VALUE, e.g. image_size=84")
            try:
                raw[key] = json.loads(value)
            except json.JSONDecodeError:
                raw[key] = value
        params = cls.check_params(raw, f"--param of {dataset}")
        with Reporter(enabled=not quiet, console=err) as reporter:
            folder = cls(**params).prepare(source, data_cache_dir(), reporter)
        err.print(f"ok {folder}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
