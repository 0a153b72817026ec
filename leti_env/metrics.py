"""pass@k, the unbiased estimator of Chen et al. (2021)."""

from __future__ import annotations


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples passes, given ``c`` of ``n`` samples passed.

    Computes ``1 - comb(n - c, k) / comb(n, k)`` as a product, which stays exact and stable for the
    large ``n`` (up to 256 samples) that code evaluation uses.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative int, got {value!r}")
    if c > n:
        raise ValueError(f"`c` ({c} passing) cannot exceed `n` ({n} samples)")
    if k < 1 or k > n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n, but n = {n}: sample at least {k} programs per task")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product
