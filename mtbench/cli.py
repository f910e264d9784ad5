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
            _show(store, the_suite, "terminal", None, "accuracy" if "accuracy" in the_suite.metrics
                  else the_suite.metrics[0], plugins)


def _show(store: Any, suite: Any, fmt: str, output: Optional[Path], metric: str, plugins: Any) -> None:
    from . import leaderboard as lb
    frame = store.frame(suite.name if suite else None)
    table = lb.aggregate(frame)
    if fmt == "csv":
        text = lb.render_csv(table)
    else:
        m = plugins.metrics.get(metric)
        wide = lb.pivot(table, metric, scale=m.scale, digits=1 if m.scale == 100 else 3,
                        references=suite.references if suite else ())
        title = f"{suite.name if suite else 'all suites'}: {metric}, mean ± 95% CI (episodes)"
        if fmt == "terminal":
            console = out if out.is_terminal else Console(width=PIPE_WIDTH)
            console.print(lb.render_rich(wide, title))
            return
        if fmt not in lb.RENDERERS:
            raise MtbenchError(f"unknown format {fmt!r}; use terminal, markdown, csv, html or latex")
        notes = _notes(frame, suite) if fmt == "markdown" else ()
        text = lb.RENDERERS[fmt](wide, title, notes) if fmt == "markdown" else (
            lb.RENDERERS[fmt](wide, title) if fmt == "html" else lb.RENDERERS[fmt](wide))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def _notes(frame: Any, suite: Any) -> list[str]:
    """Provenance lines under a Markdown leaderboard."""
    if frame.empty:
        return []
    lines = [f"Rendered by `mtbench leaderboard` from {frame['run_id'].nunique()} result files. "
             f"CI = 1.96 * std(ddof=1) / sqrt(episodes). Budget: {', '.join(sorted(set(frame['budget'])))}; "
             f"device: {', '.join(sorted(set(frame['device'])))}."]
    for ref in (suite.references if suite else ()):
        lines.append(f"Paper {ref.algorithm} {ref.n_way}-way {ref.k_shot}-shot: {ref.source}.")
    return [" ".join(lines[:1]), "", *(f"- {line}" for line in lines[1:])]


@app.command()
def leaderboard(
    results_dir: Path = ResultsOpt,
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Only this suite (name or TOML path)."),
    fmt: str = typer.Option("terminal", "--format", "-f", help="terminal | markdown | csv | html | latex."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    metric: str = typer.Option("accuracy", "--metric", "-m", help="Metric to tabulate."),
    plugin: Optional[List[str]] = PluginOpt,
    block: Optional[List[str]] = BlockOpt,
) -> None:
    """Render mean ± 95% CI per algorithm and protocol from stored results."""
    from .results import ResultStore
    with user_errors():
        plugins = _plugins(plugin, block)
        the_suite = _resolve_suite(suite, plugins) if suite else None
        _show(ResultStore(results_dir), the_suite, fmt, output, metric, plugins)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
