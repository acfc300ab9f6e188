"""The Pareto frontier: dominance in every direction, ties and missing values."""

import numpy as np
import pandas as pd
import pytest

from workbench.errors import WorkbenchError
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.study import grid, pareto_mask


def test_frontier_keeps_only_undominated_points():
    df = pd.DataFrame(
        {
            "accuracy": [0.99, 0.98, 0.97, 0.90, 0.98],
            "latency_p50_ms": [1.0, 0.5, 0.6, 0.4, 0.5],
        }
    )
    mask = pareto_mask(df, {"accuracy": "max", "latency_p50_ms": "min"})
    # 2 is dominated by 1 (slower and less accurate); 4 ties 1 exactly, so neither dominates.
    assert mask.tolist() == [True, True, False, True, True]


def test_frontier_in_three_objectives_and_missing_values():
    df = pd.DataFrame(
        {
            "accuracy": [0.9, 0.9, np.nan],
            "latency_p50_ms": [1.0, 1.0, 0.1],
            "size_bytes": [100, 50, 10],
        }
    )
    assert pareto_mask(
        df, {"accuracy": "max", "latency_p50_ms": "min", "size_bytes": "min"}
    ).tolist() == [
        False,
        True,
        False,
    ]


def test_unknown_objective_is_an_error():
    with pytest.raises(WorkbenchError, match="unknown objective 'speed'"):
        pareto_mask(pd.DataFrame({"accuracy": [1.0]}), {"speed": "max"})


def test_grid_puts_baseline_first_and_drops_duplicates():
    recipes = grid(
        prune=[PruneConfig(sparsity=0.0), PruneConfig(sparsity=0.5)],
        quantize=[None, QuantizeConfig()],
    )
    assert recipes[0] == Recipe()
    assert len(recipes) == len(set(recipes)) == 4
    assert Recipe.of(None, QuantizeConfig()) in recipes
