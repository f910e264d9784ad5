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
    force: bool = typer.Option(False, "--force", help="Re-evaluate cells that already have results (cached fits "
                               "are reused; add --retrain to fit again)."),
    retrain: bool = typer.Option(False, "--retrain", help="Fit again, ignoring cached fits and pretrained artifacts "
                                 "(implies --force)."),
    executor: str = typer.Option("local", "--executor", "-x", help="Where cells run: local | processes | ray | a "
                                 "plugin's executor."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells at once for --executor processes (worker processes)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster for --executor ray: auto or HOST:PORT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or leaderboard."),
    plugin: Optional[List[str]] = PluginOpt,
    block: Optional[List[str]] = BlockOpt,
) -> None:
    """Train and evaluate every (algorithm, dataset, ways, shots, seed) cell of a suite."""
    from .context import resolve_device
    from .driver import Driver, failed_lines
    from .execute import Environment
    from .plugins import ENV_BLOCK, ENV_LOAD, _split_env
    from .progress import Reporter
    from .results import ResultStore
    from .runner import plan_cells

    with user_errors():
        plugins = _plugins(plugin, block)
        the_suite = _resolve_suite(suite, plugins)
        cells = plan_cells(the_suite, plugins, budget, algorithm, seed, episodes, _parse_sets(set_),
                           _parse_protocols(protocol))
        chosen = plugins.executors.get(executor)(jobs=jobs, address=address)
        store = ResultStore(results_dir, report=lambda line: err.print(f"warning: {line}", highlight=False,
                                                                         soft_wrap=True))
        environment = Environment(str(resolve_device(device)), data_dir(data), results_dir / ".cache",
                                  data_cache_dir(), (*(plugin or ()), *_split_env(ENV_LOAD)),
                                  (*(block or ()), *_split_env(ENV_BLOCK)), retrain)
        with Reporter(enabled=not quiet, console=err) as reporter:
            driver = Driver(plugins, store, environment, chosen, reporter=reporter,
                            on_result=lambda p: reporter.log(f"saved {p}"),
                            on_failure=lambda line: err.print(line, highlight=False, soft_wrap=True))
            summary = driver.run(cells, force=force or retrain)
        err.print(f"{the_suite.name}: {len(summary.done)} cells run, {len(summary.skipped)} already done"
                  f"{f', {len(summary.failed)} failed' if summary.failed else ''} (results in {results_dir})",
                  highlight=False)
        if summary.interrupted:
            err.print("interrupted: finished cells are saved; run the same command again to resume")
            raise typer.Exit(130)
        if summary.failed:
            err.print("failed cells (tracebacks in <results>/<suite>/<run_id>.failed.txt; the next run redoes them):\n"
                      + "\n".join(failed_lines(summary)), highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        if not quiet:
            try:
                board = build_board(store, the_suite, None, plugins)
            except NoResults:
                return
            _show(board, None, _renderer("terminal", plugins))


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
    metric = metric or _default_metric(runs, suite)
    m = plugins.metrics.get(metric)
    title = title or f"{suite.name if suite else 'all suites'}: {metric}"
    board = build_leaderboard(runs, suite=suite, metric=m, title=title, code_versions=_code_versions(runs, plugins))
    if board.cells.empty:
        raise NoResults(f"no {metric!r} results in {where}")
    return board


def _board_or_exit(store: Any, suite: Any, metric: Optional[str], plugins: Any) -> Any:
    """build_board for the leaderboard and plot commands: no results is one line on stderr and exit 1."""
    if metric is not None:
        plugins.metrics.get(metric)
    try:
        return build_board(store, suite, metric, plugins)
    except NoResults as exc:
        err.print(str(exc), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _renderer(fmt: str, plugins: Any) -> Any:
    """The renderer registered for ``fmt`` (checked before any work)."""
    if fmt not in plugins.renderers:
        raise MtbenchError(f"unknown format {fmt!r}; registered formats: {', '.join(plugins.renderers)}")
    return plugins.renderers.get(fmt)


def _show(board: Any, output: Optional[Path], renderer: Any) -> None:
    """Hand the leaderboard to its renderer: into a file, onto an interactive terminal, or to stdout."""
    if output:
        renderer.write(board, output)
        err.print(f"wrote {output}", highlight=False)
        return
    if out.is_terminal and renderer.console is not None:
        for item in renderer.console(board, out.width):
            out.print(item)
        return
    data = renderer.render(board)
    if isinstance(data, bytes):
        sys.stdout.buffer.write(data)
    else:
        sys.stdout.write(data)


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
        board = _board_or_exit(ResultStore(results_dir), the_suite, metric, plugins)
        _show(board, output, renderer)


@app.command()
def plot(
    results_dir: Path = ResultsOpt,
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Only this suite (name or TOML path)."),
    kind: str = typer.Option("shots", "--kind", "-k", help="shots | cost | curves | cd."),
    output: Path = typer.Option(..., "--output", "-o", help="FILE.png, FILE.svg or FILE.pdf."),
    metric: Optional[str] = typer.Option(None, "--metric", "-m", help="Metric (default: the suite's first)."),
    plugin: Optional[List[str]] = PluginOpt,
    block: Optional[List[str]] = BlockOpt,
) -> None:
    """Plot the leaderboard: metric vs shots, vs training seconds (Pareto front), validation curves, CD diagram."""
    from . import plots
    from .results import ResultStore
    with user_errors():
        plots.check_kind(kind)
        plots.file_format(output)
        plugins = _plugins(plugin, block)
        the_suite = _resolve_suite(suite, plugins) if suite else None
        board = _board_or_exit(ResultStore(results_dir), the_suite, metric, plugins)
        plots.save(plots.figure(board, kind), output, salt=kind)
        err.print(f"wrote {output}", highlight=False)


def _code_versions(runs: list[dict], plugins: Any) -> dict[str, str]:
    """plugin -> installed code_version, for the algorithms named in ``runs`` (stale rows are marked)."""
    versions = {}
    for name in {run["spec"].get("plugin") or run["spec"].get("algorithm") for run in runs}:
        if name in plugins.algorithms:
            versions[name] = plugins.algorithms.get(name).code_version()
    return versions


def _default_metric(runs: list[dict], suite: Any) -> str:
    """The suite's first metric, else the first metric found in the results."""
    if suite is not None:
        return suite.metrics[0]
    return next(r[1] for run in runs for r in (run.get("rows") or [])[:1])


@app.command()
def compare(
    first: str = typer.Argument(..., help="ALG_A (with -r DIR), else BEFORE_DIR."),
    second: str = typer.Argument(..., help="ALG_B (with -r DIR), else AFTER_DIR."),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", "-r",
                                               help="Compare two experiments (or algorithms) of this results dir."),
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Only this suite (name or TOML path)."),
    metric: Optional[str] = typer.Option(None, "--metric", "-m", help="Metric (default: the suite's first metric)."),
    fail_if_worse: Optional[str] = typer.Option(None, "--fail-if-worse", metavar="METRIC:THRESHOLD",
                                                help="Exit 1 when a cell got significantly worse by more than "
                                                     "THRESHOLD display units (accuracy:0.5 = half a point)."),
    fmt: str = typer.Option("text", "--format", "-f", help="text | json."),
    plugin: Optional[List[str]] = PluginOpt,
    block: Optional[List[str]] = BlockOpt,
) -> None:
    """Paired comparison: two experiments of one results dir, or the same results before and after a change."""
    from .compare import compare_dirs, compare_experiments, parse_threshold
    from .leaderboard import experiment_cells
    from .results import ResultStore

    with user_errors():
        if fmt not in ("text", "json"):
            raise MtbenchError(f"unknown format {fmt!r}; use text or json")
        threshold = parse_threshold(fail_if_worse) if fail_if_worse else None
        if threshold and metric and threshold[0] != metric:
            raise MtbenchError(f"--fail-if-worse names metric {threshold[0]!r} but --metric is {metric!r}")
        dirs = [results_dir] if results_dir is not None else [Path(first), Path(second)]
        for path in dirs:
            if not path.is_dir():
                hint = "" if results_dir is not None else " (to compare two algorithms, give -r RESULTS_DIR)"
                raise MtbenchError(f"results dir {str(path)!r} does not exist{hint}")
        plugins = _plugins(plugin, block)
        the_suite = _resolve_suite(suite, plugins) if suite else None
        loaded = [ResultStore(path).load(the_suite.name if the_suite else None) for path in dirs]
        for path, runs in zip(dirs, loaded):
            if not runs:
                raise MtbenchError(f"no results in {path}" + (f" for suite {the_suite.name!r}" if the_suite else ""))
        name = metric or (threshold[0] if threshold else _default_metric(loaded[0], the_suite))
        m = plugins.metrics.get(name)
        cells = [experiment_cells(runs, suite=the_suite, metric=m, code_versions=_code_versions(runs, plugins))
                 for runs in loaded]
        if results_dir is not None:
            result = compare_experiments(cells[0], first, second, m)
        else:
            result = compare_dirs(cells[0], cells[1], m)
    sys.stdout.write(result.to_json() if fmt == "json" else result.to_text())
    if threshold:
        failed = result.failures(threshold[1])
        for row in failed.to_dict("records"):
            who = row.get("experiment") or f"{row['a']} vs {row['b']}"
            change = f"{row['diff_mean'] * result.scale:+.{result.digits + 1}f}"
            err.print(f"worse: {row['dataset']} {row['protocol']} {who}: {change} "
                      f"(p Holm {row['p_holm']:.2g}), beyond {threshold[1]:g}", highlight=False, soft_wrap=True)
        if len(failed):
            raise typer.Exit(1)


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
        err.print(f"ok {folder}", highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
