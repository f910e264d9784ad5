"""Evaluation cost with and without embed-once, on one fitted ProtoNet (issue 10 F).

Setting: real Omniglot (Vinyals split, rotations as classes), 5-way 1-shot, 15 queries per class, test
split; ProtoNet with the ``conv4`` backbone, trained briefly (``--train-episodes`` 20-way episodes): the
cost of evaluation does not depend on how good the encoder is. In one process, on the same fitted model:

* per-episode path (``adapt`` on images, what every algorithm gets) over ``--episodes`` (600);
* embed-once path (``embeds_once``: each test image embedded once per fit, episodes index rows) over 600;
* embed-once over ``--many`` (10,000) episodes.

Both paths are timed through :func:`mtbench.evaluation.evaluate`, the function the runner calls, after a
short warm-up of each; each figure is the best of ``--repeats`` rounds, each round timing the three in turn (the
machine is shared: another process that wakes up during a run slows two OpenMP threads many times over). It prints the seconds, the two ratios the issue sets goals for (per-episode / embed-once
at 600: several times; embed-once 10,000 / 600: at most 1.5) and whether the 600 per-episode accuracies are
identical on both paths (NLL is not in the fewshot suite; tests/test_embed_once.py compares it).

With ``--suite`` it also times the fewshot suite's three protocols (5-way 1-shot, 5-way 5-shot, 20-way 1-shot,
600 episodes each) on the same fit: each alone (per-episode against embed-once from scratch), then one after
another as the runner does, where embed-once keeps the fit's embeddings from one protocol to the next (each
test image embedded at most once per fit).

The 600-episode ratio has a ceiling set by the data: at 5-way 1-shot with 15 queries, 600 episodes use 48,000
images of which about 25,700 are distinct, so embedding each once saves under half of the convolutions;
episodes with more images (20-way, or several protocols of one fit) repeat images more often.

Both paths run with freed memory kept, as every cell does (mtbench/allocator.py); ``MTBENCH_MALLOC=system``
measures them with the allocator's defaults.

    MTBENCH_DATA=/path/to/datasets python benchmarks/eval_embed.py [--threads 2] [--train-episodes 300]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from mtbench import FitData, RunContext
from mtbench.allocator import keep_freed_memory
from mtbench.evaluation import evaluate, forget_embeddings
from mtbench.plugins import load_plugins
from mtbench.runner import plan_cells


def timed(alg, cell, test, ctx, plugins, embed_once: bool, repeats: int = 1) -> tuple[float, list, dict]:
    """Best of ``repeats`` evaluations, each from scratch (no embeddings kept from the previous one)."""
    best = None
    for _ in range(repeats):
        forget_embeddings()
        start = time.perf_counter()
        rows, info = evaluate(alg, cell, test, ctx, plugins, ctx.device, allow_embed_once=embed_once)
        seconds = time.perf_counter() - start
        if best is None or seconds < best[0]:
            best = (seconds, rows, info)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--many", type=int, default=10_000)
    parser.add_argument("--train-episodes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--suite", action="store_true", help="also time the suite's three protocols on this fit")
    args = parser.parse_args()
    malloc = keep_freed_memory()  # as every cell runs (mtbench/allocator.py); MTBENCH_MALLOC=system: the defaults
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data_dir = Path(os.environ.get("MTBENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    cache = Path(os.environ.get("MTBENCH_CACHE", Path.home() / ".cache" / "mtbench")) / "data"

    plugins = load_plugins()
    suite = plugins.suites.get("fewshot")
    overrides = {"protonet": {"episodes": args.train_episodes, "train_way": 20, "validate_every": 0}}

    def cell_for(n: int, protocol: tuple[int, int] = (5, 1)):
        (cell,) = plan_cells(suite, plugins, algorithms=["protonet"], n_episodes=n, overrides=overrides,
                             protocols=[protocol])
        return cell

    cell = cell_for(args.episodes)
    splits = plugins.datasets.get(cell.dataset.name)().set_params(**cell.dataset.params).load(data_dir, cache)
    test = splits.split(cell.dataset.split, cell.dataset.name)
    ctx = RunContext(device, cell.seed, cell.budget, None, plugins)
    torch.manual_seed(cell.seed)
    start = time.perf_counter()
    alg = plugins.algorithms.get("protonet")().set_params(**cell.params)
    alg.fit(FitData(splits.split("train", cell.dataset.name), splits.splits.get("val"), cell.target, cell.seed), ctx)
    fit_s = time.perf_counter() - start

    warm = cell_for(20)
    for embed_once in (False, True):
        timed(alg, warm, test, ctx, plugins, embed_once)

    # Rounds of the three measurements in turn, the best of each kept: a slow spell of the machine then hits
    # every measurement alike instead of one of them (the ratios are what matter).
    many_cell, best = cell_for(args.many), {}
    for _ in range(args.repeats):
        for key, measured_cell, embed_once in (("per", cell, False), ("once", cell, True), ("many", many_cell, True)):
            result = timed(alg, measured_cell, test, ctx, plugins, embed_once)
            if key not in best or result[0] < best[key][0]:
                best[key] = result
    (per_episode_s, rows, info), (once_s, once_rows, once_info), (many_s, _, many_info) = (
        best["per"], best["once"], best["many"])

    accuracy = [r[2] for r in rows if r[1] == "accuracy"]
    identical = accuracy == [r[2] for r in once_rows if r[1] == "accuracy"] and info["digest"] == once_info["digest"]
    summary = {
        "setting": f"omniglot vinyals test split ({len(test.labels)} images), 5-way 1-shot 15-query, protonet conv4 "
                   f"({args.train_episodes} training episodes, fit {fit_s:.1f} s), {args.threads} threads, {device}, "
                   f"best of {args.repeats}; allocator: {malloc}",
        "per_episode_s": round(per_episode_s, 2), "embed_once_s": round(once_s, 2),
        "embed_once_many_s": round(many_s, 2), "episodes": args.episodes, "many": args.many,
        "speedup_at_episodes": round(per_episode_s / once_s, 2), "many_over_episodes": round(many_s / once_s, 2),
        "embedded_images": once_info["timings"]["embedded_images"],
        "embedded_images_many": many_info["timings"]["embedded_images"],
        "embed_s": once_info["timings"]["embed_s"], "embed_s_many": many_info["timings"]["embed_s"],
        "accuracy_mean": round(100 * sum(accuracy) / len(accuracy), 2), "identical_accuracies": identical,
    }
    print(f"{summary['setting']}")
    print(f"per-episode path, {args.episodes} episodes: {per_episode_s:8.2f} s")
    print(f"embed-once,       {args.episodes} episodes: {once_s:8.2f} s  ({summary['embedded_images']} images "
          f"embedded in {summary['embed_s']} s)")
    print(f"embed-once,     {args.many} episodes: {many_s:8.2f} s  ({summary['embedded_images_many']} images "
          f"embedded in {summary['embed_s_many']} s)")
    print(f"per-episode / embed-once at {args.episodes}: {summary['speedup_at_episodes']}x (goal: several times)")
    print(f"embed-once {args.many} / {args.episodes}: {summary['many_over_episodes']}x (goal: at most 1.5x)")
    print(f"accuracies identical on both paths: {identical} (mean {summary['accuracy_mean']}%)")
    if args.suite:
        summary.update(suite_timings(alg, [cell_for(args.episodes, p) for p in ((5, 1), (5, 5), (20, 1))], test, ctx,
                                     plugins))
    print(json.dumps(summary))


def suite_timings(alg, cells, test, ctx, plugins) -> dict:
    """Per-episode vs embed-once for each cell alone (from scratch), then over the cells of one fit in a row
    (embeddings kept between cells, as the runner does)."""
    per_episode = [timed(alg, cell, test, ctx, plugins, embed_once=False)[0] for cell in cells]
    alone = [timed(alg, cell, test, ctx, plugins, embed_once=True)[0] for cell in cells]
    for cell, slow, fast in zip(cells, per_episode, alone):
        print(f"cell {cell.n_way}w{cell.k_shot}s alone, {cell.n_episodes} episodes: per-episode {slow:7.2f} s, "
              f"embed-once {fast:6.2f} s ({slow / fast:.2f}x)")
    forget_embeddings()
    once, embedded = [], []
    for cell in cells:
        start = time.perf_counter()
        _, info = evaluate(alg, cell, test, ctx, plugins, ctx.device)
        once.append(time.perf_counter() - start)
        embedded.append(info["timings"]["embedded_images"])
    names = [f"{c.n_way}w{c.k_shot}s" for c in cells]
    for name, slow, fast, n in zip(names, per_episode, once, embedded):
        print(f"suite cell {name}: per-episode {slow:7.2f} s, embed-once {fast:6.2f} s ({n} new images embedded)")
    print(f"suite, {len(cells)} cells of one fit: per-episode {sum(per_episode):.2f} s, embed-once {sum(once):.2f} s "
          f"({sum(per_episode) / sum(once):.2f}x)")
    return {"suite_cells": names, "suite_per_episode_s": [round(t, 2) for t in per_episode],
            "cell_alone_embed_once_s": [round(t, 2) for t in alone],
            "cell_alone_speedup": [round(a / b, 2) for a, b in zip(per_episode, alone)],
            "suite_embed_once_s": [round(t, 2) for t in once], "suite_embedded_images": embedded,
            "suite_speedup": round(sum(per_episode) / sum(once), 2)}


if __name__ == "__main__":
    main()
