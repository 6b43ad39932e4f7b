import math

import numpy as np
import pytest

from optuna_nas.errors import NasError
from optuna_nas.randgrow import choose_parent, lower_hull, parent_probabilities

# The worked example: A(1, 0.5), B(2, 0.3), C(4, 0.2), D(3, 0.4), E(5, 0.25).
EXAMPLE = [(1.0, 0.5), (2.0, 0.3), (4.0, 0.2), (3.0, 0.4), (5.0, 0.25)]


def test_worked_example_probabilities_are_exact() -> None:
    assert lower_hull(EXAMPLE) == [0, 1, 2]
    assert parent_probabilities(EXAMPLE) == [1 / 6, 1 / 3, 1 / 2, 0.0, 0.0]


def test_probabilities_follow_the_points_not_their_order() -> None:
    order = [4, 2, 0, 3, 1]
    shuffled = [EXAMPLE[i] for i in order]
    expected = [parent_probabilities(EXAMPLE)[i] for i in order]
    assert parent_probabilities(shuffled) == expected


def test_equal_cost_keeps_the_most_accurate() -> None:
    points = [(1.0, 0.5), (1.0, 0.4), (2.0, 0.3)]
    assert lower_hull(points) == [1, 2]
    assert parent_probabilities(points) == [0.0, 0.5, 0.5]


def test_identical_points_keep_the_first() -> None:
    points = [(2.0, 0.3), (1.0, 0.5), (1.0, 0.5)]
    assert lower_hull(points) == [1, 0]
    assert parent_probabilities(points) == [0.5, 0.5, 0.0]


@pytest.mark.parametrize("points", [[(3.0, 0.2)], [(1.0, 0.1), (2.0, 0.3), (3.0, 0.2)]])
def test_single_hull_model_gets_probability_one(points: list[tuple[float, float]]) -> None:
    probabilities = parent_probabilities(points)
    assert probabilities[0] == 1.0
    assert sum(probabilities) == 1.0


def test_hull_stops_at_the_most_accurate_model() -> None:
    # Models after the most accurate one lie on the full lower hull (4 and 5) but are never parents.
    points = [(1.0, 0.5), (2.0, 0.2), (4.0, 0.3), (8.0, 0.6)]
    assert lower_hull(points) == [0, 1]
    assert parent_probabilities(points) == [0.5, 0.5, 0.0, 0.0]


def test_collinear_model_is_not_on_the_hull() -> None:
    points = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.3)]
    assert lower_hull(points) == [0, 2]


def test_non_finite_points_are_ignored() -> None:
    points = [(1.0, math.nan), (0.5, 0.1), (2.0, 0.4), (math.inf, 0.0), (3.0, -math.inf)]
    assert parent_probabilities(points) == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_random_clouds_give_a_convex_decreasing_hull_below_every_point() -> None:
    rng = np.random.RandomState(3)
    for _ in range(50):
        points = [(float(c), float(e)) for c, e in rng.rand(int(rng.randint(1, 30)), 2)]
        hull = lower_hull(points)
        costs = [points[i][0] for i in hull]
        errors = [points[i][1] for i in hull]
        assert costs == sorted(costs) and costs[0] == min(c for c, _ in points)
        assert errors[-1] == min(e for _, e in points)
        assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
        slopes = [(errors[j + 1] - errors[j]) / (costs[j + 1] - costs[j]) for j in range(len(hull) - 1)]
        assert all(a < b for a, b in zip(slopes, slopes[1:], strict=False))
        for cost, error in points:  # no point lies strictly below the hull's polyline
            if cost <= costs[-1]:
                assert error >= np.interp(cost, costs, errors) - 1e-12
        probabilities = parent_probabilities(points)
        assert math.isclose(sum(probabilities), 1.0)
        assert all(p > 0 for i, p in enumerate(probabilities) if i in hull)


def test_choose_parent_draws_with_the_hull_probabilities() -> None:
    rng = np.random.RandomState(0)
    draws = np.bincount([choose_parent(EXAMPLE, rng) for _ in range(6000)], minlength=len(EXAMPLE)) / 6000
    np.testing.assert_allclose(draws, [1 / 6, 1 / 3, 1 / 2, 0, 0], atol=0.03)
    assert draws[3] == draws[4] == 0


def test_choose_parent_without_a_usable_model_is_a_clear_error() -> None:
    with pytest.raises(NasError, match="no model with a finite cost and error"):
        choose_parent([(1.0, math.nan)], np.random.RandomState(0))
