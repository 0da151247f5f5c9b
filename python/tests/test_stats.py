"""Statistics against published and hand-computed results, CSV validation, and the `aisle abtest` CLI.

Published references used:
* Newcombe RG (1998), "Interval estimation for the difference between independent proportions:
  comparison of eleven methods", Stat Med 17:873-890, Table II, method 10 (the hybrid score interval):
  56/70 - 48/80 = 0.2000, 95% CI 0.0524 to 0.3339; 9/10 - 3/10 = 0.6000, 0.1705 to 0.8090;
  10/10 - 0/20 = 1.0000, 0.6791 to 1.0000 (the same values are in R DescTools' BinomDiffCI tests).
* Agresti, An Introduction to Categorical Data Analysis: presidential approval in two surveys of the
  same 1,600 people (794 approve/approve, 150 approve/disapprove, 86 disapprove/approve, 570 both
  disapprove): McNemar z = 4.17, z^2 = 17.36 without continuity correction.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats import chi2_contingency
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize

from aisle.stats import (
    AbInputError,
    analyze_ab,
    analyze_ab_csv,
    hash_split,
    holm,
    minimum_detectable_effect,
    paired_mcnemar,
    srm_check,
    two_proportion_test,
)

# --------------------------------------------------------------------------- McNemar and Holm


def _paired(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=bool)
    return a, b


def test_mcnemar_exact_equals_the_binomial_test_by_hand() -> None:
    """11 discordant pairs (2 vs 9): p = 2 * P(X <= 2), X ~ Bin(11, 1/2) = 2 * (1 + 11 + 55) / 2^11."""
    res = paired_mcnemar(*_paired(40, 2, 9, 49))
    assert res["method"] == "exact binomial"
    assert res["table"] == [[40, 2], [9, 49]] and res["discordant"] == 11
    by_hand = 2 * sum(math.comb(11, i) for i in range(3)) / 2**11
    assert by_hand == pytest.approx(0.0654296875)
    assert res["pvalue"] == pytest.approx(by_hand, abs=1e-12)
    assert res["rate_a"] == pytest.approx(42 / 100) and res["rate_b"] == pytest.approx(49 / 100)


def test_mcnemar_agresti_presidential_approval() -> None:
    a, b = _paired(794, 150, 86, 570)
    plain = paired_mcnemar(a, b, correction=False)
    assert plain["method"] == "chi-square"
    assert plain["statistic"] == pytest.approx(17.36, abs=0.005)  # published z^2 = 4.17^2
    assert plain["statistic"] == pytest.approx((150 - 86) ** 2 / 236)
    yates = paired_mcnemar(a, b)
    assert yates["method"] == "chi-square with continuity correction"
    assert yates["statistic"] == pytest.approx(63**2 / 236)
    assert yates["pvalue"] < 0.001


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs() -> None:
    assert paired_mcnemar(*_paired(5, 10, 14, 5))["method"] == "exact binomial"  # 24
    assert paired_mcnemar(*_paired(5, 10, 15, 5))["method"].startswith("chi-square")  # 25
    none = paired_mcnemar(*_paired(5, 0, 0, 5))
    assert none["pvalue"] == 1.0 and none["discordant"] == 0


def test_holm_by_hand() -> None:
    """Sorted p 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04) = 0.03, 0.06, 0.06."""
    adjusted, reject = holm([0.01, 0.04, 0.03])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06])
    assert reject == [True, False, False]
    assert holm([]) == ([], [])


# --------------------------------------------------------------------------- two proportions


@pytest.mark.parametrize("table", [(189, 11034, 104, 11037), (30, 200, 45, 210), (3, 40, 9, 38)])
def test_z_squared_equals_pearson_chi_square_without_yates(table: tuple[int, int, int, int]) -> None:
    conv_c, n_c, conv_t, n_t = table
    res = two_proportion_test(conv_c, n_c, conv_t, n_t)
    chi2, p, _, _ = chi2_contingency([[conv_c, n_c - conv_c], [conv_t, n_t - conv_t]], correction=False)
    assert res["z"] ** 2 == pytest.approx(chi2, rel=1e-10)
    assert res["pvalue"] == pytest.approx(p, rel=1e-8)


def test_aspirin_example_z_is_five() -> None:
    """Physicians' Health Study (placebo 189/11034 vs aspirin 104/11037): z = 5.00, difference 0.0077."""
    res = two_proportion_test(104, 11037, 189, 11034)  # 'treatment' = placebo, so the difference is positive
    assert res["z"] == pytest.approx(5.00, abs=0.005)
    assert res["difference"]["estimate"] == pytest.approx(0.0077, abs=5e-5)
    assert res["difference"]["low"] == pytest.approx(0.005, abs=5e-4)
    assert res["difference"]["high"] == pytest.approx(0.011, abs=5e-4)


@pytest.mark.parametrize("published", [
    # (treatment conv, n, control conv, n, difference, low, high) from Newcombe (1998) Table II, method 10
    (56, 70, 48, 80, 0.2000, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.6000, 0.1705, 0.8090),
    (10, 10, 0, 20, 1.0000, 0.6791, 1.0000),
])
def test_newcombe_ci_matches_newcombe_1998(published: tuple) -> None:
    conv_t, n_t, conv_c, n_c, diff, low, high = published
    res = two_proportion_test(conv_c, n_c, conv_t, n_t)
    assert res["difference"]["estimate"] == pytest.approx(diff, abs=5e-5)
    assert res["difference"]["low"] == pytest.approx(low, abs=5e-5)
    assert res["difference"]["high"] == pytest.approx(high, abs=5e-5)
    assert res["per_10000"]["low"] == pytest.approx(res["difference"]["low"] * 10_000)
    assert res["per_10000"]["estimate"] == pytest.approx(diff * 10_000, abs=0.5)


def test_lift_ci_and_delta_method_cross_check() -> None:
    conv_c, n_c, conv_t, n_t = 480, 10_000, 560, 10_000
    res = two_proportion_test(conv_c, n_c, conv_t, n_t)
    p_c, p_t = 0.048, 0.056
    assert res["lift"]["estimate"] == pytest.approx(p_t / p_c - 1)
    r_low, r_high = confint_proportions_2indep(conv_t, n_t, conv_c, n_c, compare="ratio")
    assert (res["lift"]["low"], res["lift"]["high"]) == pytest.approx((r_low - 1, r_high - 1))
    assert res["lift"]["low"] < res["lift"]["estimate"] < res["lift"]["high"]
    # the delta-method SE equals statsmodels' numerical delta method for f(p_t, p_c) = p_t / p_c
    from statsmodels.stats._delta_method import NonlinearDeltaCov

    cov = np.diag([p_t * (1 - p_t) / n_t, p_c * (1 - p_c) / n_c])
    nl = NonlinearDeltaCov(lambda p: np.atleast_1d(p[0] / p[1]), np.array([p_t, p_c]), cov)
    assert res["lift_delta_method"]["se"] == pytest.approx(float(nl.se_vectorized()[0]), rel=1e-6)
    # the symmetric delta interval and the asymmetric log-scale one agree to within 5% of the width
    width = res["lift"]["high"] - res["lift"]["low"]
    assert abs(res["lift_delta_method"]["low"] - res["lift"]["low"]) < 0.05 * width
    assert abs(res["lift_delta_method"]["high"] - res["lift"]["high"]) < 0.05 * width


def test_mde_round_trips_through_normal_ind_power() -> None:
    n_c, n_t, base = 12_000, 8_000, 0.05
    mde = minimum_detectable_effect(base, n_c, n_t)
    p_t = mde["treatment_rate"]
    h = proportion_effectsize(p_t, base)
    assert h == pytest.approx(mde["effect_size_h"], rel=1e-10)
    power = NormalIndPower()
    # solve_power is a numerical root finder: it returns the arm size to within a user or so
    assert power.solve_power(effect_size=h, nobs1=None, alpha=0.05, power=0.8, ratio=n_c / n_t) == pytest.approx(
        n_t, rel=1e-3)
    assert power.power(h, n_t, 0.05, ratio=n_c / n_t) == pytest.approx(0.8, abs=1e-4)
    assert mde["relative"] == pytest.approx(p_t / base - 1)
    # independent closed form: invert h = 2 asin(sqrt(p_t)) - 2 asin(sqrt(p_c))
    assert p_t == pytest.approx(math.sin(math.asin(math.sqrt(base)) + mde["effect_size_h"] / 2) ** 2, rel=1e-10)
    # more users -> a smaller detectable effect
    assert minimum_detectable_effect(base, 4 * n_c, 4 * n_t)["relative"] < mde["relative"]
    res = two_proportion_test(600, 12_000, 450, 8_000)
    assert res["mde"]["relative"] == pytest.approx(mde["relative"])


def test_zero_conversions_are_reported_not_crashed() -> None:
    res = two_proportion_test(0, 100, 0, 100)
    assert res["z"] is None and res["pvalue"] is None and res["lift"]["estimate"] is None
    assert res["difference"]["estimate"] == 0 and res["difference"]["low"] < 0 < res["difference"]["high"]
    json.dumps(res, allow_nan=False)
    with pytest.raises(ValueError, match="empty"):
        two_proportion_test(0, 0, 1, 10)


# --------------------------------------------------------------------------- SRM and hashing


def test_srm_check() -> None:
    ok = srm_check([5100, 4900])  # chi-square = (100^2 + 100^2) / 5000 = 4, p = 0.0455
    assert ok["statistic"] == pytest.approx(4.0) and ok["pvalue"] == pytest.approx(0.0455, abs=5e-5)
    assert not ok["mismatch"]
    bad = srm_check([5200, 4800])  # chi-square = 16, p = 6.3e-5
    assert bad["statistic"] == pytest.approx(16.0) and bad["mismatch"]
    weighted = srm_check([2000, 8000], [1, 4])
    assert weighted["expected"] == [2000.0, 8000.0] and weighted["pvalue"] == pytest.approx(1.0)


def test_hash_split_is_deterministic_salted_and_balanced() -> None:
    import hashlib

    ids = np.arange(100_000)
    a = hash_split(ids, "exp1")
    assert a.dtype == bool and (a == hash_split(ids, "exp1")).all()
    perm = np.random.default_rng(0).permutation(ids.size)
    assert (hash_split(ids[perm], "exp1") == a[perm]).all()  # per user, not per position
    # ~50/50: within 5 standard deviations (sd = sqrt(n)/2 = 158)
    assert abs(int(a.sum()) - 50_000) < 5 * 158
    other = hash_split(ids, "exp2")
    assert abs(int((a == other).sum()) - 50_000) < 5 * 158  # a new salt is an independent split
    # the documented rule, recomputed independently for a few users
    for u in (0, 17, 123456789):
        h = int.from_bytes(hashlib.blake2b(f"exp1:{u}".encode(), digest_size=8).digest(), "big")
        assert hash_split(np.array([u]), "exp1")[0] == (h / 2**64 < 0.5)
    share = hash_split(ids, "exp1", treatment_share=0.2)
    assert abs(int(share.sum()) - 20_000) < 5 * 127
    assert not (share & ~a).any()  # the same hash: a 20% treatment is inside the 50% one


# --------------------------------------------------------------------------- online A/B analysis


def test_analyze_ab_three_arms_with_holm() -> None:
    counts = {"control": (500, 10_000), "b": (560, 10_100), "c": (640, 9_900)}
    rep = analyze_ab(counts)
    assert rep["control"] == "b"  # default: first arm in sort order
    rep = analyze_ab(counts, control="control")
    assert [c["arm"] for c in rep["comparisons"]] == ["b", "c"]
    raw = [c["pvalue"] for c in rep["comparisons"]]
    expected = multipletests(raw, method="holm")[1]
    assert [c["pvalue_holm"] for c in rep["comparisons"]] == pytest.approx(list(expected))
    direct = two_proportion_test(500, 10_000, 640, 9_900)
    assert rep["comparisons"][1]["pvalue"] == pytest.approx(direct["pvalue"])
    assert rep["srm"]["observed"] == [10_100, 9_900, 10_000]
    assert rep["n_users"] == 30_000
    json.dumps(rep, allow_nan=False)


def test_analyze_ab_accepts_a_frame_of_users() -> None:
    df = pd.DataFrame({"arm": ["a"] * 4 + ["b"] * 4, "converted": [1, 0, 0, 0, 1, 1, 0, 0]})
    rep = analyze_ab(df)
    assert rep["arms"][0]["conversions"] == 1 and rep["arms"][1]["rate"] == 0.5
    with pytest.raises(AbInputError, match="at least 2"):
        analyze_ab({"a": (1, 10)})
    with pytest.raises(AbInputError, match="not among"):
        analyze_ab(df, control="zzz")
    with pytest.raises(AbInputError, match="0 or 1"):
        analyze_ab(df.assign(converted=[2, 0, 0, 0, 1, 1, 0, 0]))
    with pytest.raises(AbInputError, match="more than once"):
        analyze_ab(df.assign(user_id=[1, 2, 3, 4, 5, 6, 7, 1]))


def _write(tmp_path: Path, text: str, name: str = "ab.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "user_id,arm,converted\n" + "".join(
    f"u{i},{'control' if i % 2 else 'treatment'},{int(i % 7 == 0)}\n" for i in range(400))


def test_analyze_ab_csv_good_file(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    rep = analyze_ab_csv(path)
    assert rep["control"] == "control" and rep["file"] == str(path)
    arms = {a["arm"]: a for a in rep["arms"]}
    # i odd -> control; i % 7 == 0 -> converted
    assert arms["control"]["n"] == 200 and arms["control"]["conversions"] == sum(
        1 for i in range(400) if i % 2 and i % 7 == 0)
    json.dumps(rep, allow_nan=False)
    # column order, case, extra columns and blank lines do not matter
    shuffled = _write(tmp_path, "Converted,extra,ARM,User_ID\n1,x,a,1\n\n0,y,b,2\n0,z,b,3\n", "s.csv")
    rep2 = analyze_ab_csv(shuffled, arms=["a", "b"], ratios=[1, 2])
    assert [a["n"] for a in rep2["arms"]] == [1, 2] and rep2["srm"]["expected"] == [1.0, 2.0]


@pytest.mark.parametrize("text,kwargs,expected", [
    ("user_id,arm\n1,a\n", {}, r"ab\.csv:1: missing column\(s\) converted"),
    ("user_id;arm;converted\n1;a;1\n", {}, r"ab\.csv:1: missing column.*';' or tabs"),
    ("", {}, r"ab\.csv:1: the file is empty"),
    ("user_id,arm,converted\n", {}, r"ab\.csv: no data rows"),
    ("user_id,arm,converted\n1,a,1\n2,b\n", {}, r"ab\.csv:3: expected 3 fields, found 2"),
    ("user_id,arm,converted\n1,a,1\n,b,0\n", {}, r"ab\.csv:3: empty user_id"),
    ("user_id,arm,converted\n1,a,1\n2, ,0\n", {}, r"ab\.csv:3: empty arm name"),
    ("user_id,arm,converted\n1,a,1\n2,b,0\n3,B,0\n", {"arms": ["a", "b"]},
     r"ab\.csv:4: unknown arm 'B'; expected one of a, b"),
    ("user_id,arm,converted\n1,a,1\n2,b,yes\n", {}, r"ab\.csv:3: converted must be 0 or 1, found 'yes'"),
    ("user_id,arm,converted\n1,a,1\n2,b,2\n", {}, r"ab\.csv:3: converted must be 0 or 1, found '2'"),
    ("user_id,arm,converted\n1,a,1\n2,b,0\n3,b,0\n1,b,0\n", {},
     r"ab\.csv:5: user '1' appears again \(first on line 2\)"),
    ("user_id,arm,converted\n1,a,1\n2,b,0\n", {"arms": ["a", "b", "c"]}, r"ab\.csv: arm 'c' has no users"),
    ("user_id,arm,converted\n1,a,1\n2,a,0\n", {}, r"ab\.csv: found only 1 arm \(a\); .* at least 2 arms"),
    ("user_id,arm,converted\n1,a,1\n2,b,0\n", {"control": "c"}, r"ab\.csv: control arm 'c' is not in the file"),
])
def test_analyze_ab_csv_rejects_bad_input(tmp_path: Path, text: str, kwargs: dict, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(AbInputError, match=expected) as info:
        analyze_ab_csv(path, **kwargs)
    assert "\n" not in str(info.value)


def test_analyze_ab_csv_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "ab.csv"
    path.write_bytes(b"user_id,arm,converted\n1,caf\xe9,1\n")
    with pytest.raises(AbInputError, match="not UTF-8"):
        analyze_ab_csv(path)


# --------------------------------------------------------------------------- CLI


def test_cli_abtest_good_file(tmp_path: Path) -> None:
    from aisle.cli import cli

    path = _write(tmp_path, GOOD)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["abtest", str(path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "Sample ratio check" in result.output and "per 10,000 users" in result.output
    assert json.loads(out.read_text())["control"] == "control"


def test_cli_abtest_bad_file_exits_1_with_one_line(tmp_path: Path) -> None:
    from aisle.cli import cli

    path = _write(tmp_path, "user_id,arm,converted\n1,a,1\n2,b,maybe\n")
    result = CliRunner().invoke(cli, ["abtest", str(path)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {path}:3: converted must be 0 or 1, found 'maybe'"


def test_cli_abtest_bad_file_through_the_entry_point(tmp_path: Path) -> None:
    """The real `aisle` entry point: exit 1, one line on stderr, no traceback."""
    path = _write(tmp_path, "user_id,arm,converted\n1,a,1\n1,b,0\n")
    proc = subprocess.run([sys.executable, "-c", "from aisle.cli import main; main()", "abtest", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ab.csv:3: user '1' appears again (first on line 2)" in lines[0]
