from math import comb

import pytest

from leti_env import pass_at_k


@pytest.mark.parametrize("n", [1, 2, 5, 16, 128])
def test_matches_the_combinatorial_definition(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = 1.0 - comb(n - c, k) / comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_edge_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)


@pytest.mark.parametrize("args, message", [((5, 2, 10), "pass@10 needs 1 <= k <= n, but n = 5"),
                                          ((5, 6, 1), "cannot exceed"), ((5, 1, 0), "needs 1 <= k"),
                                          ((5.0, 1, 1), "must be a non-negative int")])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(*args)
