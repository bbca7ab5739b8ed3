"""The demo's 'share of the homogeneous gain' column."""
from opencood.tools.demo import gain_share


def test_gain_share():
    assert gain_share(0.676, 0.614, 0.723) == "57 %"  # 0.062 of a 0.109 gain
    assert gain_share(0.60, 0.614, 0.723) == "-13 %"  # worse than ego-only shows as negative
    assert gain_share(0.5, 0.6, 0.5) == "n/a"  # collaboration did not help: nothing to recover
