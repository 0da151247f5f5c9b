"""Statistics for comparing recommenders: paired offline tests and randomized A/B tests.

Everything delegates to statsmodels and scipy where they have the formula (see
docs/evaluation.md); the only formula written here is the delta-method cross-check of the lift
(stated in its docstring, and tested against statsmodels' own delta method). Every result is a
plain dict of Python floats/ints/strings/None (JSON-serialisable, NaN replaced by None) so
reports can store it as is.

The same functions serve the simulated A/B test of ``aisle evaluate`` and a real online test:
``two_proportion_test`` and ``analyze_ab`` take plain counts, ``analyze_ab_csv`` reads a CSV of
``user_id, arm, converted`` (the ``aisle abtest`` command).
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.optimize import brentq
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)

#: McNemar uses the exact binomial test below this many discordant pairs.
EXACT_DISCORDANT_THRESHOLD = 25
#: Sample ratio mismatch is flagged below this p-value (a common industry threshold).
SRM_P_THRESHOLD = 0.001


class AbInputError(ValueError):
    """A/B input that cannot be analyzed; the message names the file, the line and the fix."""


def _num(x: Any) -> float | None:
    """A Python float, or None for NaN/inf (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- paired (offline)


def paired_mcnemar(hits_a: np.ndarray, hits_b: np.ndarray, correction: bool = True,
                   exact_threshold: int = EXACT_DISCORDANT_THRESHOLD) -> dict:
    """McNemar's test on per-user hit/miss of two models scored on the same users.

    The 2x2 table is [[both hit, only A hit], [only B hit, neither]]; only the discordant cells
    b = only A and c = only B carry information. With b + c < ``exact_threshold`` (25) the exact
    two-sided binomial test of b ~ Bin(b + c, 1/2) is used; otherwise the chi-square statistic
    (|b - c| - 1)^2 / (b + c) with Yates' continuity correction (``correction=False`` gives
    (b - c)^2 / (b + c)). Both via ``statsmodels.stats.contingency_tables.mcnemar``.
    """
    a = np.asarray(hits_a).astype(bool)
    b = np.asarray(hits_b).astype(bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("hits_a and hits_b must be 1-D arrays over the same users")
    both = int(np.sum(a & b))
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    neither = int(np.sum(~a & ~b))
    discordant = a_only + b_only
    exact = discordant < exact_threshold
    if discordant == 0:
        statistic, pvalue = 0.0, 1.0
    else:
        res = mcnemar([[both, a_only], [b_only, neither]], exact=exact, correction=correction)
        statistic, pvalue = float(res.statistic), float(res.pvalue)
    n = int(a.size)
    return {
        "n": n,
        "table": [[both, a_only], [b_only, neither]],
        "a_only": a_only,
        "b_only": b_only,
        "discordant": discordant,
        "rate_a": _num(a.mean()) if n else None,
        "rate_b": _num(b.mean()) if n else None,
        "difference": _num(a.mean() - b.mean()) if n else None,
        "method": ("exact binomial" if exact else
                   "chi-square" + (" with continuity correction" if correction else "")),
        "statistic": statistic,
        "pvalue": pvalue,
    }


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm's step-down correction: (adjusted p-values, reject flags), in the input order.

    Via ``statsmodels.stats.multitest.multipletests(..., method='holm')``. Controls the
    family-wise error rate across several models compared with one baseline.
    """
    p = np.asarray(list(pvalues), dtype=np.float64)
    if p.size == 0:
        return [], []
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    return [float(x) for x in adjusted], [bool(x) for x in reject]


# --------------------------------------------------------------------------- two proportions


def minimum_detectable_effect(baseline_rate: float, n_control: int, n_treatment: int,
                              alpha: float = 0.05, power: float = 0.8) -> dict:
    """Smallest increase over ``baseline_rate`` detectable with the given arm sizes.

    ``NormalIndPower().solve_power`` gives the smallest Cohen's h = 2·asin(√p_t) − 2·asin(√p_c)
    that a two-sided z-test at ``alpha`` detects with ``power`` (nobs1 = treatment size, ratio =
    control / treatment); the treatment rate p_t > p_c with ``proportion_effectsize(p_t, p_c) = h``
    is then found by a root search (scipy's brentq). Returns the absolute and relative MDE; None
    where undefined (a baseline of 0 has no relative MDE; when even p_t = 1 is not detectable).
    """
    if n_control <= 0 or n_treatment <= 0:
        raise ValueError("arm sizes must be > 0")
    if not 0 <= baseline_rate <= 1:
        raise ValueError("baseline_rate must be in [0, 1]")
    h = float(NormalIndPower().solve_power(effect_size=None, nobs1=n_treatment, alpha=alpha, power=power,
                                           ratio=n_control / n_treatment, alternative="two-sided"))

    def gap(p: float) -> float:
        return float(proportion_effectsize(p, baseline_rate)) - h

    p_t = brentq(gap, baseline_rate, 1.0, xtol=1e-14) if gap(1.0) >= 0 else None
    return {
        "alpha": alpha,
        "power": power,
        "effect_size_h": h,
        "baseline_rate": float(baseline_rate),
        "treatment_rate": _num(p_t),
        "absolute": _num(p_t - baseline_rate) if p_t is not None else None,
        "relative": _num(p_t / baseline_rate - 1) if p_t is not None and baseline_rate > 0 else None,
    }


def two_proportion_test(conv_c: int, n_c: int, conv_t: int, n_t: int, alpha: float = 0.05,
                        power: float = 0.8) -> dict:
    """Compare a treatment's conversion rate with a control's (independent arms).

    * z and two-sided p: ``proportions_ztest`` (pooled variance; z² equals Pearson's chi-square
      without Yates' correction on the 2x2 table).
    * difference p_t − p_c with Newcombe's hybrid score CI (``confint_proportions_2indep``,
      method='newcomb'; Newcombe 1998 method 10).
    * relative lift p_t / p_c − 1 with the CI of the ratio (``compare='ratio'``, statsmodels'
      default 'log-adjusted' method, which stays defined when a count is 0), minus 1;
      cross-checked by the delta method on the ratio: SE(p_t/p_c) ≈ (p_t/p_c)·√((1−p_t)/(n_t p_t) +
      (1−p_c)/(n_c p_c)), a symmetric Wald interval.
    * extra conversions per 10,000 users: the difference and its Newcombe CI × 10,000.
    * MDE at ``alpha`` and ``power`` for these arm sizes and the control rate
      (``minimum_detectable_effect``).
    """
    for name, c, n in (("control", conv_c, n_c), ("treatment", conv_t, n_t)):
        if n <= 0:
            raise ValueError(f"the {name} arm is empty")
        if not 0 <= c <= n:
            raise ValueError(f"the {name} arm has {c} conversions out of {n} users")
    p_c, p_t = conv_c / n_c, conv_t / n_t
    diff = p_t - p_c
    d_low, d_high = confint_proportions_2indep(conv_t, n_t, conv_c, n_c, method="newcomb",
                                               compare="diff", alpha=alpha)
    if conv_c + conv_t in (0, n_c + n_t):
        z, p = None, None  # no variance: both arms all-0 or all-1
    else:
        z, p = proportions_ztest([conv_t, conv_c], [n_t, n_c], alternative="two-sided")
    if p_c > 0:
        r_low, r_high = confint_proportions_2indep(conv_t, n_t, conv_c, n_c, compare="ratio", alpha=alpha)
        lift = p_t / p_c - 1
        lift_ci = (_num(r_low - 1), _num(r_high - 1))
    else:
        lift, lift_ci = None, (None, None)
    if p_c > 0 and p_t > 0:
        ratio = p_t / p_c
        se = ratio * math.sqrt((1 - p_t) / (n_t * p_t) + (1 - p_c) / (n_c * p_c))
        zq = float(sps.norm.ppf(1 - alpha / 2))
        delta = {"low": _num(ratio - 1 - zq * se), "high": _num(ratio - 1 + zq * se), "se": _num(se)}
    else:
        delta = {"low": None, "high": None, "se": None}
    return {
        "alpha": alpha,
        "control": {"conversions": int(conv_c), "n": int(n_c), "rate": p_c},
        "treatment": {"conversions": int(conv_t), "n": int(n_t), "rate": p_t},
        "difference": {"estimate": diff, "low": _num(d_low), "high": _num(d_high), "method": "newcombe"},
        "lift": {"estimate": _num(lift), "low": lift_ci[0], "high": lift_ci[1],
                 "method": "ratio CI (log-adjusted) - 1"},
        "lift_delta_method": delta,
        "per_10000": {"estimate": diff * 10_000, "low": _num(d_low * 10_000), "high": _num(d_high * 10_000)},
        "z": _num(z),
        "pvalue": _num(p),
        "mde": minimum_detectable_effect(p_c, n_c, n_t, alpha=alpha, power=power),
    }


def srm_check(observed_counts: Sequence[int], expected_ratios: Sequence[float] | None = None,
              threshold: float = SRM_P_THRESHOLD) -> dict:
    """Sample ratio mismatch: chi-square goodness of fit of arm sizes to the planned split.

    ``scipy.stats.chisquare`` with expected counts total · ratio / Σ ratios (equal split when
    ``expected_ratios`` is None); flagged when p < ``threshold`` (0.001). A mismatch means the
    assignment or the logging is broken, so the test's other numbers cannot be trusted.
    """
    obs = np.asarray(list(observed_counts), dtype=np.float64)
    if obs.size < 2:
        raise ValueError("a sample ratio check needs at least 2 arms")
    ratios = np.ones_like(obs) if expected_ratios is None else np.asarray(list(expected_ratios), dtype=np.float64)
    if ratios.shape != obs.shape or (ratios <= 0).any():
        raise ValueError("expected_ratios must be positive, one per arm")
    expected = obs.sum() * ratios / ratios.sum()
    res = sps.chisquare(obs, f_exp=expected)
    return {
        "observed": [int(x) for x in obs],
        "expected": [float(x) for x in expected],
        "statistic": float(res.statistic),
        "pvalue": float(res.pvalue),
        "threshold": threshold,
        "mismatch": bool(res.pvalue < threshold),
    }


def hash_split(user_ids: np.ndarray | Sequence, salt: str, treatment_share: float = 0.5) -> np.ndarray:
    """Deterministic salted assignment: True = treatment.

    For each user: h = the first 8 bytes (big-endian unsigned) of
    BLAKE2b(f"{salt}:{user_id}", digest_size=8); the user is in treatment when h / 2^64 <
    ``treatment_share``. The same ids and salt always give the same split, on any machine and in
    any order, and a new salt gives an independent split. ``user_id`` is formatted with ``str``
    (integers as plain decimals). One hash per user in a tight comprehension: about 0.1 s per
    100K users.
    """
    if not 0 <= treatment_share <= 1:
        raise ValueError("treatment_share must be in [0, 1]")
    ids = np.asarray(user_ids)
    if ids.ndim != 1:
        raise ValueError("user_ids must be 1-D")
    prefix = f"{salt}:".encode()
    blake = hashlib.blake2b
    digests = b"".join(blake(prefix + str(u).encode(), digest_size=8).digest() for u in ids.tolist())
    h = np.frombuffer(digests, dtype=">u8").astype(np.float64) / 2.0**64
    return h < treatment_share


# --------------------------------------------------------------------------- online A/B analysis


def analyze_ab(data: pd.DataFrame | Mapping[str, tuple[int, int]], control: str | None = None,
               expected_ratios: Mapping[str, float] | None = None, alpha: float = 0.05) -> dict:
    """Analyze a randomized test with two or more arms; each treatment is compared with the control.

    ``data`` is either a frame with columns ``arm`` and ``converted`` (0/1, one row per user) or a
    mapping arm -> (conversions, users). ``control`` defaults to the first arm in sort order. Each
    treatment gets ``two_proportion_test`` against the control; the p-values are Holm-adjusted
    across treatments; arm sizes are checked for a sample ratio mismatch against an equal split
    (or ``expected_ratios``). Returns a JSON-serialisable dict.
    """
    if isinstance(data, pd.DataFrame):
        missing = {"arm", "converted"} - set(data.columns)
        if missing:
            raise AbInputError(f"missing column(s): {', '.join(sorted(missing))}")
        if not data["converted"].isin([0, 1]).all():
            raise AbInputError("converted must be 0 or 1 for every user")
        if "user_id" in data.columns and data["user_id"].duplicated().any():
            raise AbInputError("a user appears more than once; each user must be in exactly one arm, once")
        grouped = data.groupby("arm", sort=True)["converted"].agg(["sum", "count"])
        counts = {str(a): (int(r["sum"]), int(r["count"])) for a, r in grouped.iterrows()}
    else:
        counts = {str(a): (int(c), int(n)) for a, (c, n) in sorted(data.items())}
    arms = sorted(counts)
    if len(arms) < 2:
        raise AbInputError(f"found {len(arms)} arm(s) ({', '.join(arms) or 'none'}); an A/B test needs at least 2")
    for arm in arms:
        c, n = counts[arm]
        if n <= 0:
            raise AbInputError(f"arm {arm!r} has no users")
        if not 0 <= c <= n:
            raise AbInputError(f"arm {arm!r} has {c} conversions out of {n} users")
    if control is None:
        control = arms[0]
    if control not in counts:
        raise AbInputError(f"control arm {control!r} is not among the arms ({', '.join(arms)})")
    ratios = None
    if expected_ratios is not None:
        unknown = set(expected_ratios) ^ set(arms)
        if unknown:
            raise AbInputError(f"expected ratios must name exactly the arms {arms}")
        ratios = [float(expected_ratios[a]) for a in arms]
    total = sum(n for _, n in counts.values())
    srm = srm_check([counts[a][1] for a in arms], ratios)
    srm["arms"] = arms

    treatments = [a for a in arms if a != control]
    comparisons = []
    for arm in treatments:
        res = two_proportion_test(counts[control][0], counts[control][1], counts[arm][0], counts[arm][1],
                                  alpha=alpha)
        res["arm"] = arm
        comparisons.append(res)
    # an undefined p-value (no variance at all) is treated as 1 for the correction
    adjusted, reject = holm([c["pvalue"] if c["pvalue"] is not None else 1.0 for c in comparisons], alpha)
    for c, p_adj, rej in zip(comparisons, adjusted, reject, strict=True):
        c["pvalue_holm"] = p_adj
        c["significant"] = rej
    return {
        "alpha": alpha,
        "control": control,
        "n_users": int(total),
        "arms": [{"arm": a, "n": counts[a][1], "conversions": counts[a][0],
                  "rate": counts[a][0] / counts[a][1], "share": counts[a][1] / total} for a in arms],
        "srm": srm,
        "correction": "holm",
        "comparisons": comparisons,
    }


REQUIRED_COLUMNS = ("user_id", "arm", "converted")


def analyze_ab_csv(path: Path | str, control: str | None = None, arms: Sequence[str] | None = None,
                   ratios: Sequence[float] | None = None, alpha: float = 0.05) -> dict:
    """Read a CSV of ``user_id, arm, converted`` (one row per user) and run ``analyze_ab``.

    The header names the columns (any order, case-insensitive, extra columns ignored). Bad input
    raises AbInputError naming the file, the line and the fix: a missing column, a row with a
    missing field, an empty user id or arm name, an arm not in ``arms`` (when given), an outcome
    other than 0/1, a user listed twice, an arm in ``arms`` without users, fewer than 2 arms, and
    an unknown ``control``. ``ratios`` (aligned with ``arms``) is the planned split for the sample
    ratio check; equal by default. Blank lines are skipped.
    """
    path = Path(path)

    def fail(msg: str, line: int | None = None) -> AbInputError:
        where = f"{path}:{line}" if line is not None else str(path)
        return AbInputError(f"{where}: {msg}")

    if ratios is not None and (arms is None or len(ratios) != len(arms)):
        raise fail("ratios need the arms they refer to: give one ratio per arm in --arms")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise fail("the file is empty; expected a header line 'user_id,arm,converted'", 1)
            names = [h.strip().lower() for h in header]
            missing = [c for c in REQUIRED_COLUMNS if c not in names]
            if missing:
                hint = (" (the file seems to use ';' or tabs; save it comma-separated)"
                        if len(header) == 1 and any(s in header[0] for s in ";\t") else "")
                raise fail(f"missing column(s) {', '.join(missing)}; the header must name "
                           f"user_id, arm, converted{hint}", 1)
            pos = [names.index(c) for c in REQUIRED_COLUMNS]
            width = max(pos) + 1
            users: list[str] = []
            arm_vals: list[str] = []
            conv: list[str] = []
            lines: list[int] = []
            for row in reader:
                if not row or all(not f.strip() for f in row):
                    continue
                if len(row) < width:
                    raise fail(f"expected {len(names)} fields, found {len(row)}; "
                               "each line needs user_id, arm, converted", reader.line_num)
                users.append(row[pos[0]].strip())
                arm_vals.append(row[pos[1]].strip())
                conv.append(row[pos[2]].strip())
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8") from None
    except csv.Error as exc:
        raise fail(f"not a valid CSV ({exc})") from None
    except OSError as exc:
        raise fail(f"cannot read the file ({exc.strerror})") from None

    if not users:
        raise fail("no data rows after the header; expected one line per user")
    u = np.array(users, dtype=object)
    a = np.array(arm_vals, dtype=object)
    c = np.array(conv, dtype=object)
    ln = np.array(lines)

    bad = np.flatnonzero(u == "")
    if bad.size:
        raise fail("empty user_id; every line needs the user's id", int(ln[bad[0]]))
    bad = np.flatnonzero(a == "")
    if bad.size:
        raise fail("empty arm name; every user needs the arm they were assigned to", int(ln[bad[0]]))
    if arms is not None:
        bad = np.flatnonzero(~np.isin(a, np.array(list(arms), dtype=object)))
        if bad.size:
            raise fail(f"unknown arm {a[bad[0]]!r}; expected one of {', '.join(arms)} "
                       "(fix the value or pass the right --arms)", int(ln[bad[0]]))
    bad = np.flatnonzero(~np.isin(c, np.array(["0", "1"], dtype=object)))
    if bad.size:
        raise fail(f"converted must be 0 or 1, found {c[bad[0]]!r}", int(ln[bad[0]]))
    dup = pd.Series(u).duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(u == u[i])[0])
        raise fail(f"user {u[i]!r} appears again (first on line {ln[first]}); each user must be in "
                   "exactly one arm, once", int(ln[i]))
    present = sorted(set(a.tolist()))
    if arms is not None:
        empty = [x for x in arms if x not in present]
        if empty:
            raise fail(f"arm {empty[0]!r} has no users; remove it from --arms or check the export")
    if len(present) < 2:
        raise fail(f"found only {len(present)} arm ({', '.join(present)}); an A/B test needs at least 2 arms")
    if control is not None and control not in present:
        raise fail(f"control arm {control!r} is not in the file; arms are {', '.join(present)}")

    frame = pd.DataFrame({"arm": a.astype(str), "converted": (c == "1").astype(np.int64)})
    expected = dict(zip(arms, ratios, strict=True)) if ratios is not None and arms is not None else None
    report = analyze_ab(frame, control=control, expected_ratios=expected, alpha=alpha)
    report["file"] = str(path)
    return report


# --------------------------------------------------------------------------- printing


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f}%"


def _pct_ci(est: float | None, low: float | None, high: float | None, signed: bool = True) -> str:
    if est is None:
        return "n/a"
    s = "+" if signed else ""
    ci = "" if low is None or high is None else f" [{low * 100:{s}.2f}, {high * 100:{s}.2f}]"
    return f"{est * 100:{s}.2f}{ci}"


def _p(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "<0.0001" if x < 1e-4 else f"{x:.4f}"


def print_ab_report(report: dict, console) -> None:
    """Print an ``analyze_ab`` report as rich tables, with one plain-words line per treatment.

    The comparison table has one row per measure and one column per treatment, so it stays
    narrow enough for an 80-column terminal with two or three treatments.
    """
    from rich.table import Table

    alpha = report["alpha"]
    title = f"A/B test: {report['n_users']:,} users" + (f" ({report['file']})" if "file" in report else "")
    arms = Table(title=title)
    for col, just in (("arm", "left"), ("role", "left"), ("users", "right"), ("share", "right"),
                      ("conversions", "right"), ("rate", "right")):
        arms.add_column(col, justify=just)
    for a in report["arms"]:
        role = "control" if a["arm"] == report["control"] else "treatment"
        arms.add_row(a["arm"], role, f"{a['n']:,}", _pct(a["share"], 1), f"{a['conversions']:,}", _pct(a["rate"]))
    console.print(arms)

    srm = report["srm"]
    verdict = ("[bold red]MISMATCH[/]: the arm sizes differ from the planned split more than chance allows; "
               "check the assignment and logging before trusting the results"
               if srm["mismatch"] else "ok")
    console.print(f"Sample ratio check: chi-square {srm['statistic']:.3f}, p = {_p(srm['pvalue'])} "
                  f"(flagged below {srm['threshold']}): {verdict}")

    conf = f"{(1 - alpha) * 100:g}% CI"
    comps = report["comparisons"]
    tab = Table(title=f"Treatment vs {report['control']}: estimate [{conf}]",
                caption=f"two-sided z-test; Holm's correction across {len(comps)} treatment(s); "
                        f"MDE at alpha {alpha:g}, power 80%")
    tab.add_column("measure")
    for c in comps:
        tab.add_column(c["arm"], justify="right")

    def per10k(c: dict) -> str:
        per = c["per_10000"]
        ci = "" if per["low"] is None else f" [{per['low']:+.1f}, {per['high']:+.1f}]"
        return f"{per['estimate']:+.1f}{ci}"

    rows = [
        ("difference, pp", lambda c: _pct_ci(c["difference"]["estimate"], c["difference"]["low"],
                                             c["difference"]["high"])),
        ("relative lift, %", lambda c: _pct_ci(c["lift"]["estimate"], c["lift"]["low"], c["lift"]["high"])),
        ("  delta-method check", lambda c: _pct_ci(c["lift"]["estimate"], c["lift_delta_method"]["low"],
                                                   c["lift_delta_method"]["high"])),
        ("per 10,000 users", per10k),
        ("z", lambda c: "n/a" if c["z"] is None else f"{c['z']:.3f}"),
        ("p", lambda c: _p(c["pvalue"])),
        ("p (Holm)", lambda c: _p(c["pvalue_holm"]) + (" *" if c["significant"] else "")),
        ("MDE, relative", lambda c: _pct(c["mde"]["relative"], 1)),
    ]
    for label, fmt in rows:
        tab.add_row(label, *(fmt(c) for c in comps))
    console.print(tab)
    for c in comps:
        per = c["per_10000"]
        if per["low"] is None:
            continue
        word = "more" if per["estimate"] >= 0 else "fewer"
        verdict = ("statistically significant" if c["significant"] else "not statistically significant")
        console.print(f"- {c['arm']}: per 10,000 users, about {abs(per['estimate']):.0f} {word} conversions than "
                      f"{report['control']} ({conf} {per['low']:+.0f} to {per['high']:+.0f}); {verdict} after "
                      f"Holm's correction (alpha {alpha}). The smallest relative lift this test could reliably "
                      f"detect (power 80%) is {_pct(c['mde']['relative'], 1)}.")
