"""``workbench search``: the sensitivity-guided recipe search on the command line.

A thin front end over :func:`workbench.search.search`. It prints the path (each
candidate, its measured figures and verdict) and the chosen recipe as the equivalent
``workbench evaluate`` flags, and writes the search as a study file. Exit status: 0 when a
recipe was chosen, 1 when no candidate kept the floor (the file is still written: the
measured path is the answer), 2 on bad input (one line, nothing written).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from workbench import cli
from workbench.errors import WorkbenchError

__all__ = ["add_search_command"]


def add_search_command(sub: Any) -> None:
    """Add ``search`` to the ``workbench`` subcommands.

    The targets and recoveries are checked by ``workbench.search.check_request`` (one
    line, exit 2), not by argparse choices: importing the search here would load pandas
    and the pipeline into every command's start.
    """
    p = sub.add_parser(
        "search",
        help="find the smallest (or fastest) recipe that keeps an accuracy floor, guided by "
        "layer sensitivity (exit 0 found, 1 none keeps the floor, 2 bad input)",
    )
    cli._add_model_args(p)
    floor = p.add_mutually_exclusive_group(required=True)
    floor.add_argument(
        "--accuracy-floor",
        type=float,
        metavar="PCT",
        help="the lowest acceptable top-1 accuracy, in percent (97 = 97%%), on the task's "
        "validation images (a fifth of the training part the candidates never train or "
        "calibrate on; never the test split)",
    )
    floor.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="PT",
        help="or the floor as points below the float model's accuracy on the same validation "
        "images (1.0 = one point); the chosen variant's test-split figures are reported beside",
    )
    p.add_argument(
        "--target",
        default="size",
        help="what to minimise: size (deflate-compressed bytes, default), macs, latency (p50 "
        "here), or device (fits --device with the most memory headroom)",
    )
    p.add_argument(
        "--device",
        metavar="NAME",
        help="a device from `workbench devices`: every candidate must fit its memory budget "
        "and storage (needed by --target device)",
    )
    p.add_argument(
        "--memory-fraction",
        type=float,
        metavar="F",
        help="the device budget's share of its memory (default: the profile's, 0.6)",
    )
    p.add_argument("--out", type=Path, required=True, help="the search file to write (a study)")
    p.add_argument(
        "--max-candidates",
        type=int,
        default=12,
        metavar="N",
        help="variants evaluated besides the baseline (default 12)",
    )
    p.add_argument(
        "--recovery",
        default="finetune",
        help="how pruned candidates recover: finetune (default), distill (from the float "
        "model) or none (one-shot pruning)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=3,
        metavar="N",
        help="epochs of that retraining (default 3)",
    )
    p.add_argument(
        "--methods",
        metavar="M,...",
        help="pruning methods to try, comma-separated (default: those that lower the target)",
    )
    p.add_argument(
        "--no-students",
        action="store_true",
        help="do not try students distilled from the model (its own architecture at 0.5x "
        "and 0.25x width, or smaller samples of its task), which otherwise get up to a third "
        "of the candidates after pruning (never with --recovery none)",
    )
    p.set_defaults(search_command=_cmd_search)


def _methods(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _cmd_search(args: argparse.Namespace, scratch: list[Path]) -> int:
    from workbench.search import check_model, check_request, evaluate_flags, search

    if args.remeasure:
        raise WorkbenchError(
            "--remeasure has no effect on a search", "drop it; a search reuses cached variants"
        )
    if args.memory_fraction is not None and args.device is None:
        raise WorkbenchError("--memory-fraction sets a device budget", "add --device NAME")
    settings = cli._settings(args)
    # Everything checked before the model is loaded: bad input fails at once, writes nothing.
    request = dict(
        accuracy_floor=args.accuracy_floor,
        max_accuracy_drop=args.max_accuracy_drop,
        target=args.target,
        device=args.device,
        max_candidates=args.max_candidates,
        recovery=args.recovery,
        methods=_methods(args.methods),
    )
    check_request(**request, runtime=settings.runtime)
    cli._check_output_file("--out", args.out)
    model = cli._load(args)
    check_model(model)
    result = search(
        model,
        **request,
        settings=settings,
        cache=cli._cache(args, scratch),
        memory_fraction=args.memory_fraction,
        finetune_epochs=args.finetune_epochs,
        students=not args.no_students,
        on_step=None if args.json else _print_step,
    )
    result.save(args.out)
    recipe = result.chosen_recipe
    command = None
    if recipe is not None:
        command = shlex.join(
            ["workbench", "evaluate", args.model, *evaluate_flags(recipe), "--hold-out-validation"]
        )
    if args.json:
        out = result.search_dict()
        out["search_file"] = str(args.out)
        out["evaluate_command"] = command
        chosen = result.chosen_result
        out["chosen_result"] = None if chosen is None else cli.result_json(chosen)
        print(json.dumps(out, indent=1))
    else:
        print()
        print(path_table(result))
        print(f"\n{floor_line(result)}")
        print(result.outcome)
        print(f"stopped: {result.stopped}")
        if command is not None:
            print(f"the same variant: {command}")
        print(
            f"{result.candidates_evaluated} variant(s) measured in {result.wall_seconds:.0f} s; "
            f"search written to {args.out}"
        )
    return 0 if recipe is not None else 1


def floor_line(result: Any) -> str:
    """What the floor was judged on, in one line (and a warning line when the model has
    most likely trained on the validation images)."""
    f = result.floor
    asked = f"{f['value']:g} points below float" if f["kind"] == "drop" else f"{f['value']:g}%"
    if "float_validation_accuracy" not in f:  # the float model alone was measured
        return f"floor: {asked}"
    line = (
        f"floor: {asked} = {f['accuracy']:.2%} on {f['validation_images']} validation images "
        f"(float: {f['float_validation_accuracy']:.2%}); verdicts are decided there, the "
        "test-split figures are evaluate()'s"
    )
    return line + (f"\nwarning: {f['caveat']}" if f.get("caveat") else "")


def _print_step(step: Any) -> None:
    verdict = "accepted" if step.accepted else "rejected" if step.key else "failed"
    print(f"[{step.index}] {step.recipe.name}: {verdict} ({step.seconds:.0f} s)", flush=True)


def path_table(result: Any) -> str:
    """The search path as a text table: one row per candidate, the chosen one starred."""
    import pandas as pd

    from workbench.search import TARGETS
    from workbench.study import METRICS_BY_COLUMN

    column = TARGETS[result.target].column
    rows = []
    for row in result.path_rows():
        rows.append(
            {
                "": "*" if row["chosen"] else "",
                "#": row["step"],
                "phase": row["phase"],
                "recipe": row["recipe"],
                "validation": _text("accuracy", row.get("validation_accuracy")),
                "test accuracy": _text("accuracy", row.get("accuracy")),
                METRICS_BY_COLUMN[column].label: _text(column, row.get(column)),
                "verdict": "accepted" if row["accepted"] else "rejected",
                "why": row["reason"].split(": ", 1)[-1].split(";")[0],
            }
        )
    return pd.DataFrame(rows).to_string(index=False)


def _text(column: str, value: Any) -> str:
    from workbench.study import METRICS_BY_COLUMN

    return "n/a" if value is None else METRICS_BY_COLUMN[column].text(value)
