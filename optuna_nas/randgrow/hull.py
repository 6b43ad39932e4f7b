"""Parent choice of RandGrow (Hu et al., 2019, Section 2): the lower convex hull of (cost, error).

RandGrow is greedy: it only grows models that are cost-efficient. Every finished model is a point
(computational cost, validation error). The parent is drawn from the lower convex hull of these points,
walked from the cheapest model and *stopped at the most accurate one* ("we stop the hull when it starts
increasing"), so no model that is both more expensive and less accurate than the best can be chosen.

Probabilities: a hull model ``m1`` followed on the hull by ``m2`` gets a weight proportional to
``c2 - c1``, i.e. the cost range it is the cheapest hull model for; these weights share 0.5 and the most
accurate model always gets the other 0.5. A hull of a single model gives it probability 1.

Design choices the paper leaves open:

* Points whose cost or error is not finite (a diverged or failed trial) are ignored.
* Among models of equal cost only the most accurate can be on the hull; exact duplicates keep the first
  one in input order, so the result does not depend on how the caller sorted its trials.
* A model lying exactly on a hull edge (collinear) is dropped: its cost range belongs to the previous
  hull vertex, and keeping it would split that weight without changing the hull's shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import NasError

Point = tuple[float, float]


def _cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) x (b - o): positive for a counter-clockwise (convex from below) turn."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def lower_hull(points: Sequence[Point]) -> list[int]:
    """Indices into ``points`` of the lower convex hull, by increasing cost, ending at the most accurate.

    Costs increase and errors strictly decrease along the returned indices.
    """
    # numpy for the sort and the filters: every ask runs this over every completed trial
    data = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    cost, error = data[:, 0], data[:, 1]
    finite = np.flatnonzero(np.isfinite(cost) & np.isfinite(error))
    if not finite.size:
        return []
    order = finite[np.lexsort((finite, error[finite], cost[finite]))]  # by (cost, error, input order)
    # One candidate per cost: the most accurate of that cost (first in input order on exact ties).
    first_of_cost = np.ones(order.size, dtype=bool)
    first_of_cost[1:] = cost[order[1:]] != cost[order[:-1]]
    candidates = order[first_of_cost]
    # Only a candidate more accurate than every cheaper one can be on a hull that ends at the most accurate
    # model (its errors strictly decrease), so the walk below sees the Pareto front, not every point.
    errors = error[candidates]
    on_front = np.ones(candidates.size, dtype=bool)
    on_front[1:] = errors[1:] < np.minimum.accumulate(errors)[:-1]
    front = candidates[on_front].tolist()  # its last model is the most accurate (the cheapest of equals)
    xy = data.tolist()
    hull: list[int] = []
    for i in front:  # the hull stops at the most accurate model, the front's last
        while len(hull) >= 2 and _cross(xy[hull[-2]], xy[hull[-1]], xy[i]) <= 0.0:
            hull.pop()
        hull.append(i)
    return hull


def parent_probabilities(points: Sequence[Point]) -> list[float]:
    """The probability of choosing each point as the next parent, in input order (0 off the hull)."""
    probabilities = [0.0] * len(points)
    hull = lower_hull(points)
    if not hull:
        return probabilities
    final = hull[-1]
    widths = [points[nxt][0] - points[cur][0] for cur, nxt in zip(hull[:-1], hull[1:], strict=True)]
    total = sum(widths)
    if total <= 0.0:  # a single model (or degenerate widths): the most accurate model takes it all
        probabilities[final] = 1.0
        return probabilities
    for index, width in zip(hull[:-1], widths, strict=True):
        probabilities[index] = width / (2.0 * total)
    probabilities[final] = 0.5
    return probabilities


def choose_parent(points: Sequence[Point], rng: np.random.RandomState) -> int:
    """Draw the index of the next parent with :func:`parent_probabilities`."""
    probabilities = np.asarray(parent_probabilities(points), dtype=np.float64)
    if probabilities.sum() <= 0.0:
        raise NasError("no model with a finite cost and error to choose a parent from")
    return int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))
