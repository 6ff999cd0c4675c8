import math

import pytest

from learngene_hf.errors import ConfigError
from learngene_hf.stats import mean_ci, paired_difference, t_cdf, t_quantile


@pytest.mark.parametrize(
    "p, df, expected",
    [
        (0.975, 19, 2.0930),
        (0.975, 1, 12.7062),
        (0.975, 4, 2.7764),
        (0.995, 9, 3.2498),
        (0.95, 30, 1.6973),
        (0.975, 1000, 1.9623),
    ],
)
def test_t_quantile_matches_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_is_symmetric_and_inverts_cdf():
    assert t_quantile(0.025, 7) == pytest.approx(-t_quantile(0.975, 7))
    assert t_cdf(t_quantile(0.9, 5), 5) == pytest.approx(0.9, abs=1e-9)


def test_mean_ci_uses_t_distribution():
    values = [0.5, 0.7, 0.6, 0.8, 0.4]
    mean, half = mean_ci(values)
    sd = math.sqrt(sum((v - 0.6) ** 2 for v in values) / 4)
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(2.7764 * sd / math.sqrt(5), rel=1e-4)


def test_mean_ci_single_value_has_no_interval_and_empty_raises():
    assert math.isnan(mean_ci([0.3])[1])
    with pytest.raises(ConfigError):
        mean_ci([])


def test_paired_difference_is_ci_of_differences():
    a, b = [0.6, 0.7, 0.8], [0.5, 0.5, 0.6]
    assert paired_difference(a, b) == pytest.approx(mean_ci([0.1, 0.2, 0.2]))
    with pytest.raises(ConfigError, match="equal lengths"):
        paired_difference([1.0], [1.0, 2.0])
