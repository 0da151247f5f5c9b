"""The evaluation report: terminal tables, ``evaluation.md`` and PNG charts.

Everything here reads the report dict that :func:`aisle.evaluate.evaluate` builds (the same
content as ``evaluation.json``), so the three views can never disagree. Charts use matplotlib's
Agg backend (no display needed), a title, axis labels and a legend outside the bars.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from aisle.metrics import RANKING_METRICS

METRIC_LABELS = {"hr": "HR", "precision": "Precision", "recall": "Recall", "ndcg": "NDCG", "map": "MAP",
                 "mrr": "MRR"}
SEGMENT_LABELS = {"all": "all test users", "known": "known users (events before T)",
                  "cold": "cold users (no event before T)"}
OUTCOME_WORDS = {"all": ("view, cart or buy", "looked at"), "intent": ("add to cart or buy", "added to cart or bought")}
VARIANT_LABELS_MD = {"all": "any event (view, cart or purchase)", "intent": "intent (cart or purchase)",
                     "all_novel": "any event on an item new to the user",
                     "intent_novel": "intent on an item new to the user"}
SHORT_VARIANT = {"all": "any", "intent": "intent", "all_novel": "any, new items", "intent_novel": "intent, new items"}
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]


# --------------------------------------------------------------------------- formatting


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f}%"


def pct_ci(ci: dict | None, digits: int = 2) -> str:
    """'4.12% (3.98–4.27)' from {estimate, low, high}."""
    if not ci or ci.get("estimate") is None:
        return "n/a"
    if ci.get("low") is None or ci["low"] == ci["high"]:
        return pct(ci["estimate"], digits)
    return f"{ci['estimate'] * 100:.{digits}f}% ({ci['low'] * 100:.{digits}f}–{ci['high'] * 100:.{digits}f})"


def num_ci(ci: dict | None, digits: int = 4) -> str:
    if not ci or ci.get("estimate") is None:
        return "n/a"
    if ci.get("low") is None or ci["low"] == ci["high"]:
        return f"{ci['estimate']:.{digits}f}"
    return f"{ci['estimate']:.{digits}f} ({ci['low']:.{digits}f}–{ci['high']:.{digits}f})"


def signed_pp(ci: dict | None) -> str:
    """A difference of proportions in percentage points with its CI: '+1.23 pp (+0.80 to +1.66)'."""
    if not ci or ci.get("estimate") is None:
        return "n/a"
    if ci.get("low") is None or ci["low"] == ci["high"]:
        return f"{ci['estimate'] * 100:+.2f} pp"
    return f"{ci['estimate'] * 100:+.2f} pp ({ci['low'] * 100:+.2f} to {ci['high'] * 100:+.2f})"


def pval(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def p_is(p: float | None) -> str:
    """'p = 0.0123' or 'p < 0.0001', for sentences."""
    text = pval(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _label(report: dict, model: str) -> str:
    return report["models"][model]["label"]


def _headline_variant(report: dict) -> str:
    return next(iter(report["protocol"]["truth_variants"]))


# --------------------------------------------------------------------------- terminal


def print_summary(report: dict, console: Console) -> None:
    """The headline table (first truth variant, all test users), HR by segment, and the A/B result in words."""
    proto = report["protocol"]
    ks = proto["ks"]
    kp = proto["primary_k"]
    variant = _headline_variant(report)
    seg = report["metrics"][variant]["all"]
    table = Table(title=f"Backtest at T = {proto['as_of']}, {proto['test_days']}-day window: {seg['n_users']:,} test "
                        f"users, truth = {SHORT_VARIANT[variant]} event. % with 95% bootstrap CI "
                        f"({proto['bootstrap']['n_resamples']:,} resamples, seed {proto['seed']})")
    table.add_column("model")
    table.add_column("served", justify="right")
    for k in ks:
        table.add_column(f"HR@{k} %", justify="right")
    table.add_column(f"NDCG@{kp} %", justify="right")
    table.add_column(f"HR@{kp} vs {proto['baseline']}", justify="right")
    table.add_column("p (Holm)", justify="right")
    for m, res in seg["models"].items():
        vs = res.get("vs_baseline", {}).get(str(kp))
        diff = "baseline" if vs is None else f"{vs['hr_difference']['estimate'] * 100:+.2f} pp"
        p = "" if vs is None else pval(vs["pvalue_holm"]).replace(" ", "") + (" *" if vs["significant"] else "")
        table.add_row(_label(report, m), pct(res["user_coverage"]["estimate"], 0),
                      *(short_ci(res["at_k"][str(k)]["hr"]) for k in ks),
                      short_ci(res["at_k"][str(kp)]["ndcg"]), diff, p)
    table.caption = (f"served = users with a non-empty list; p = McNemar vs {proto['baseline']}, Holm-adjusted "
                     "(* significant at 0.05)")
    console.print(table)

    models = list(seg["models"])
    seg_table = Table(title=f"HR@{kp} % by truth variant and segment (users); CIs in evaluation.md")
    seg_table.add_column("truth")
    seg_table.add_column("segment")
    for m in models:
        seg_table.add_column(_label(report, m), justify="right")
    for v in proto["truth_variants"]:
        for s in ("all", "known", "cold"):
            r = report["metrics"][v][s]
            if not r["n_users"]:
                continue
            seg_table.add_row(SHORT_VARIANT[v], f"{s} ({r['n_users']:,})",
                              *(f"{r['models'][m]['at_k'][str(kp)]['hr']['estimate'] * 100:.2f}" for m in models))
    console.print(seg_table)
    for line in ab_sentences(report):
        console.print("• " + line)
    paths = report.get("paths")
    if paths:
        console.print(f"report: {paths['markdown']}, {paths['json']}, charts: {', '.join(paths['charts'])}")


def short_ci(ci: dict | None) -> str:
    """'4.12 (3.98–4.27)' in percent, for narrow terminal columns."""
    if not ci or ci.get("estimate") is None:
        return "n/a"
    if ci.get("low") is None or ci["low"] == ci["high"]:
        return f"{ci['estimate'] * 100:.2f}"
    return f"{ci['estimate'] * 100:.2f} ({ci['low'] * 100:.2f}–{ci['high'] * 100:.2f})"


def ab_sentences(report: dict) -> list[str]:
    """The simulated A/B result in plain words, one sentence per outcome at the primary K."""
    ab = report["ab_test"]
    kp = str(report["protocol"]["primary_k"])
    days = report["protocol"]["test_days"]
    out = []
    srm = ab["srm"]
    out.append(f"Simulated A/B test: {ab['n_control']:,} visitors see {_label(report, ab['control'])}, "
               f"{ab['n_treatment']:,} see {_label(report, ab['treatment'])} (hash split; sample ratio check "
               f"{p_is(srm['pvalue'])}{', MISMATCH' if srm['mismatch'] else ', ok'}).")
    for outcome, res in ab.get("outcomes", {}).items():
        r = res.get(kp)
        if not r:
            continue
        what = OUTCOME_WORDS[outcome][1]
        per = r["per_10000"]
        word = "more" if per["estimate"] >= 0 else "fewer"
        ci = "" if per["low"] is None else f" (95% CI {per['low']:+.0f} to {per['high']:+.0f})"
        lift = r["lift"]
        lift_s = "" if lift["estimate"] is None else (
            f"; relative lift {lift['estimate'] * 100:+.1f}%" +
            ("" if lift["low"] is None else f" ({lift['low'] * 100:+.1f}% to {lift['high'] * 100:+.1f}%)"))
        verdict = "significant" if (r["pvalue"] is not None and r["pvalue"] < r["alpha"]) else "not significant"
        mde = r["mde"]["relative"]
        out.append(f"Per 10,000 visitors, about {abs(per['estimate']):.0f} {word} visitors {what} one of the "
                   f"{kp} recommended items within {days} days with {_label(report, ab['treatment'])} than with "
                   f"{_label(report, ab['control'])}{ci}{lift_s}; z-test {p_is(r['pvalue'])}, {verdict} at "
                   f"α = {r['alpha']:g}. Smallest relative lift this test could detect (power 80%): "
                   f"{pct(mde, 1) if mde is not None else 'n/a'}.")
    return out


# --------------------------------------------------------------------------- charts


def write_charts(report: dict, out_dir: Path) -> list[Path]:
    """HR@K and NDCG@K per model with CI bars (one panel per truth variant), and the A/B lift with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for metric in ("hr", "ndcg"):
        path = out_dir / f"evaluation_{metric}.png"
        _metric_chart(plt, report, metric, path)
        paths.append(path)
    path = out_dir / "evaluation_lift.png"
    if _lift_chart(plt, report, path):
        paths.append(path)
    return paths


def _chart_panels(report: dict) -> list[tuple[str, str]]:
    """(truth variant, segment) panels: every test user per plain truth variant, plus the known users
    (the only ones the CF models can serve) for the first variant."""
    variants = [v for v in report["protocol"]["truth_variants"] if not v.endswith("_novel")]
    variants = variants or list(report["protocol"]["truth_variants"])
    panels = [(variants[0], "all"), (variants[0], "known")] + [(v, "all") for v in variants[1:]]
    return [(v, s) for v, s in panels if report["metrics"][v][s]["n_users"]]


def _metric_chart(plt, report: dict, metric: str, path: Path) -> None:
    proto = report["protocol"]
    ks = proto["ks"]
    panels = _chart_panels(report)
    models = list(report["models"])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.8), squeeze=False)
    width = 0.8 / max(len(models), 1)
    scale = 100.0 if metric == "hr" else 1.0
    for ax, (v, segment) in zip(axes[0], panels, strict=True):
        seg = report["metrics"][v][segment]
        for i, m in enumerate(models):
            xs, ys, lo, hi = [], [], [], []
            for j, k in enumerate(ks):
                ci = seg["models"][m]["at_k"][str(k)][metric]
                xs.append(j + (i - (len(models) - 1) / 2) * width)
                ys.append(ci["estimate"] * scale)
                lo.append((ci["estimate"] - ci["low"]) * scale)
                hi.append((ci["high"] - ci["estimate"]) * scale)
            ax.bar(xs, ys, width=width * 0.95, color=COLORS[i % len(COLORS)], label=_label(report, m),
                   yerr=[lo, hi], capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333333"})
        ax.set_xticks(range(len(ks)), [f"K = {k}" for k in ks])
        ax.set_xlabel("list length K")
        ax.set_ylabel(f"{METRIC_LABELS[metric]}@K" + (" (% of users)" if metric == "hr" else ""))
        ax.set_title(f"truth: {SHORT_VARIANT[v]} event; {SEGMENT_LABELS[segment]}\n{seg['n_users']:,} users",
                     fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    fig.suptitle(f"{METRIC_LABELS[metric]}@K per model with 95% bootstrap CI (backtest at T = {proto['as_of']}, "
                 f"{proto['test_days']}-day test window)", fontsize=12)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(models), 5), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _lift_chart(plt, report: dict, path: Path) -> bool:
    ab = report["ab_test"]
    rows = []
    for outcome, res in ab.get("outcomes", {}).items():
        for k, r in res.items():
            lift = r["lift"]
            if lift["estimate"] is None or lift["low"] is None:
                continue
            rows.append((f"{OUTCOME_WORDS[outcome][0]}, K = {k}\n{lift['estimate'] * 100:+.1f}% "
                         f"[{lift['low'] * 100:+.1f}, {lift['high'] * 100:+.1f}]", lift, r["pvalue"]))
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8.5, 1.0 + 0.75 * len(rows)))
    ys = list(range(len(rows)))[::-1]
    for y, (_, lift, p) in zip(ys, rows, strict=True):
        color = COLORS[0] if (p is not None and p < 0.05) else "#999999"
        ax.errorbar(lift["estimate"] * 100, y, xerr=[[(lift["estimate"] - lift["low"]) * 100],
                    [(lift["high"] - lift["estimate"]) * 100]], fmt="o", color=color, capsize=4)
    ax.axvline(0, color="#333333", linewidth=1, linestyle="--")
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=9)
    ax.set_xlabel(f"relative lift of {_label(report, ab['treatment'])} over {_label(report, ab['control'])}, "
                  "% (95% CI)")
    ax.set_title(f"Simulated A/B test: {ab['n_control']:,} control vs {ab['n_treatment']:,} treatment visitors\n"
                 "blue = significant at α 0.05 (z-test), grey = not", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- markdown


def headline_markdown(report: dict) -> str:
    """The headline table (first truth variant, every test user) as markdown, for the README."""
    proto = report["protocol"]
    ks, kp = proto["ks"], proto["primary_k"]
    variant = _headline_variant(report)
    seg = report["metrics"][variant]["all"]
    lines = [
        f"## Headline: {seg['n_users']:,} test users, truth = {VARIANT_LABELS_MD.get(variant, variant)}",
        "",
        f"Backtest at T = {proto['as_of']} with a {proto['test_days']}-day test window; 95% bootstrap CIs "
        f"({proto['bootstrap']['n_resamples']:,} resamples, seed {proto['seed']}); p: McNemar against "
        f"{_label(report, proto['baseline'])}, Holm-adjusted.",
        "",
        "| model | users served | " + " | ".join(f"HR@{k}" for k in ks) + f" | NDCG@{kp} | HR@{kp} vs "
        f"{_label(report, proto['baseline'])} | p |",
        "|---|---:|" + "---:|" * (len(ks) + 3),
    ]
    for m, res in seg["models"].items():
        vs = res.get("vs_baseline", {}).get(str(kp))
        diff = "baseline" if vs is None else signed_pp(vs["hr_difference"])
        p = "" if vs is None else pval(vs["pvalue_holm"])
        lines.append(f"| {_label(report, m)} | {pct(res['user_coverage']['estimate'], 1)} | "
                     + " | ".join(pct_ci(res["at_k"][str(k)]["hr"]) for k in ks)
                     + f" | {num_ci(res['at_k'][str(kp)]['ndcg'])} | {diff} | {p} |")
    return "\n".join(lines)


def write_markdown(report: dict, path: Path, charts: list[Path]) -> None:
    path.write_text(render_markdown(report, [c.name for c in charts]))


def render_markdown(report: dict, chart_names: list[str]) -> str:
    """The whole ``evaluation.md``: protocol in plain words, tables with CIs, tests, meaning."""
    proto, data = report["protocol"], report["data"]
    ks, kp = proto["ks"], proto["primary_k"]
    boot = proto["bootstrap"]
    variant = _headline_variant(report)
    head = report["metrics"][variant]["all"]
    lines: list[str] = []
    add = lines.append

    add("# aisle evaluation: an honest backtest")
    add("")
    add(f"Cutoff **T = {proto['cutoff']}** ({proto['cutoff_rule']}); test window **[{proto['cutoff']}, "
        f"{proto['test_window_end']})** ({proto['test_days']} days). Seed {proto['seed']}. "
        f"Reproduce with `aisle evaluate --cutoff {proto['as_of']} --test-days {proto['test_days']} "
        f"--k {','.join(map(str, ks))} --seed {proto['seed']}`: the same data, cutoff and seed give an identical "
        "`evaluation.json`.")
    add("")
    add(headline_markdown(report))
    add("")
    add("## What it means for a shop")
    add("")
    for s in ab_sentences(report):
        add(f"- {s}")
    hy = head["models"].get(report["ab_test"]["treatment"])
    if hy:
        add(f"- Across all {head['n_users']:,} test users, {pct(hy['at_k'][str(kp)]['hr']['estimate'], 1)} "
            f"touched at least one of the {kp} items {_label(report, report['ab_test']['treatment'])} would have "
            "shown them (HR@" + str(kp) + "). That is the share of visitors for whom the list contained something "
            "they went on to look at anyway: an offline proxy for clicks, not a measured click rate.")
    add("")
    add("## Protocol, in plain words")
    add("")
    add(f"- **No peeking.** The whole pipeline (staging, marts, popularity, trending, affinity, similarity, "
        f"recommendations) was rebuilt *as of T* into separate backtest schemas (suffix "
        f"`{proto['backtest_schema_suffix']}`), so every model only saw events before T. Production tables were "
        f"not touched. The hybrid was built with `top_n = {proto['backtest_build']['top_n']}` so that the "
        "longest list can be scored.")
    add("- **Test users** are all visitors with at least one event in the test window. Their **truth** is the "
        "set of distinct items they touched in the window: "
        + "; ".join(f"*{v}* = {label}" for v, label in proto["truth_variants"].items()) + ".")
    add("- **Segments:** *known* users had at least one event before T, *cold* users had none; *all* is both. "
        "The *novel* variants drop the items the user had already touched before T, to show how much of a "
        "hit rate is just people coming back to what they saw.")
    add("- **Same users for every model.** A model that cannot serve a user gives an empty list, which "
        "counts as a miss; the share of users a model serves is reported as *user coverage*. Users whose "
        "truth is empty in a variant (e.g. no new item) are not test users of that variant.")
    add(f"- **Metrics** at K = {', '.join(map(str, ks))}, averaged over users, with R the truth set and L the "
        "top-K list: HR = 1 if L ∩ R is not empty; Precision = |L ∩ R| / K (K even for shorter lists); "
        "Recall = |L ∩ R| / |R|; NDCG with binary gains and IDCG over min(|R|, K) items; MAP = "
        "Σ Precision@k over hit ranks / min(|R|, K); MRR = 1 / rank of the first hit. Catalog coverage = "
        "distinct recommended items / items with an event before T.")
    add(f"- **Uncertainty:** 95% percentile bootstrap over users, {boot['n_resamples']:,} resamples, seed "
        f"{proto['seed']}; all models of a segment share the resamples, so differences get paired CIs.")
    add(f"- **Model comparison** is paired: {proto['paired_test']}.")
    add("- **Simulated A/B test:** a salted hash of the user id splits the test users 50/50 into control "
        f"({_label(report, proto['baseline'])}) and treatment ({_label(report, proto['treatment'])}); each arm "
        "is scored only with its own model. Sample ratio check (chi-square, flagged at p < 0.001), two-proportion "
        "z-test, Newcombe CI on the difference, CI on the relative lift (ratio, cross-checked with the delta "
        "method), extra conversions per 10,000 visitors, and the minimum detectable effect at α 0.05, power 0.8.")
    add("")
    add("### Models")
    add("")
    add("| model | lists | users served |")
    add("|---|---|---:|")
    for info in report["models"].values():
        note = f" *{info['note']}*" if info.get("note") else ""
        add(f"| {info['label']} | {info['lists']}{note} | {info['users_served']:,} |")
    add("")
    add("- *Popularity* and *trending* show everyone the same list, built as of T; items known to be "
        "unavailable at T are skipped.")
    add("- *Category CF (pure)* is the category-to-category collaborative filter alone: the items of the "
        "categories a visitor browsed and of similar ones, with no recent-intent items and no fallback, so it "
        "serves only visitors with a history.")
    add("- *Hybrid (shipped)* is exactly what the serving lookup returns: the visitor's row of "
        "`rec_user_recommendations` (recent intent, category CF, then trending and popularity top-ups), or the "
        "global default list for a visitor without one.")
    add(f"- *User-user CF (classic)* replicates the well-known recipe for reference: score(u, c) = "
        "Σ_{v≠u} cos(u, v) · x_v[c] over **every** other visitor v, with x the category-affinity vectors. "
        "This equals x̂_u · (X̂ᵀX)[:, c] − x_u[c] (x̂ = x / |x|), so it is computed exactly from one "
        f"category × category matrix instead of a visitor × visitor one. A visitor's "
        f"{proto['user_cf_categories']} best categories become items round-robin over each category's "
        "trending items.")
    add("")
    add("### Data")
    add("")
    add("| figure | value |")
    add("|---|---:|")
    for key, value in data.items():
        add(f"| {key.replace('_', ' ')} | {value:,} |")
    add("")

    for v, vlabel in proto["truth_variants"].items():
        add(f"## Truth: {vlabel}")
        add("")
        for s in ("all", "known", "cold"):
            seg = report["metrics"][v][s]
            add(f"### {SEGMENT_LABELS[s].capitalize()}: {seg['n_users']:,} users"
                + (f" ({seg['n_excluded_empty_truth']:,} with an empty truth left out)"
                   if seg.get("n_excluded_empty_truth") else ""))
            add("")
            if not seg["n_users"]:
                add("No users in this segment.")
                add("")
                continue
            for k in ks:
                add(f"**K = {k}** (95% CI)")
                add("")
                add("| model | user coverage | " + " | ".join(f"{METRIC_LABELS[x]}@{k}" for x in RANKING_METRICS)
                    + f" | catalog coverage@{k} |")
                add("|---|---:|" + "---:|" * (len(RANKING_METRICS) + 1))
                for m, res in seg["models"].items():
                    at = res["at_k"][str(k)]
                    cells = [pct_ci(at["hr"])] + [num_ci(at[x]) for x in RANKING_METRICS if x != "hr"]
                    add(f"| {_label(report, m)} | {pct(res['user_coverage']['estimate'], 1)} | "
                        + " | ".join(cells) + f" | {pct(at['catalog_coverage'], 2)} |")
                add("")
            rows = [(m, res["vs_baseline"]) for m, res in seg["models"].items() if "vs_baseline" in res]
            if rows:
                add(f"Paired comparison with {_label(report, proto['baseline'])} on the same "
                    f"{seg['n_users']:,} users (HR; McNemar, Holm across models):")
                add("")
                add("| model | K | HR difference (95% CI) | NDCG difference (95% CI) | only model hits | "
                    "only baseline hits | test | p | p (Holm) |")
                add("|---|---:|---:|---:|---:|---:|---|---:|---:|")
                for m, vs in rows:
                    for k in ks:
                        t = vs[str(k)]
                        mc = t["mcnemar"]
                        sig = " *" if t["significant"] else ""
                        add(f"| {_label(report, m)} | {k} | {signed_pp(t['hr_difference'])} | "
                            f"{num_ci(t['ndcg_difference'])} | {mc['a_only']:,} | {mc['b_only']:,} | "
                            f"{mc['method']} | {pval(mc['pvalue'])} | {pval(t['pvalue_holm'])}{sig} |")
                add("")
                add("\\* significant at α = 0.05 after Holm's correction.")
                add("")

    ab = report["ab_test"]
    add("## Simulated randomized A/B test")
    add("")
    srm = ab["srm"]
    add(f"Population: {ab['population']}. Assignment: {ab['assignment']}. Control: "
        f"{_label(report, ab['control'])} ({ab['n_control']:,} users); treatment: {_label(report, ab['treatment'])} "
        f"({ab['n_treatment']:,} users). Sample ratio check: chi-square {srm['statistic']:.3f}, "
        f"{p_is(srm['pvalue'])} → {'**mismatch**' if srm['mismatch'] else 'ok'}.")
    add("")
    if ab.get("outcomes"):
        add("| outcome | K | control rate | treatment rate | difference (Newcombe 95% CI) | relative lift (95% CI) | "
            "delta-method lift CI | per 10,000 visitors (95% CI) | z | p | MDE (relative) |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for outcome, res in ab["outcomes"].items():
            for k, r in res.items():
                lift, dm, per = r["lift"], r["lift_delta_method"], r["per_10000"]
                lift_s = "n/a" if lift["estimate"] is None else (
                    f"{lift['estimate'] * 100:+.1f}% ({lift['low'] * 100:+.1f}% to {lift['high'] * 100:+.1f}%)"
                    if lift["low"] is not None else f"{lift['estimate'] * 100:+.1f}%")
                dm_s = "n/a" if dm["low"] is None else f"{dm['low'] * 100:+.1f}% to {dm['high'] * 100:+.1f}%"
                per_s = (f"{per['estimate']:+.1f} ({per['low']:+.1f} to {per['high']:+.1f})"
                         if per["low"] is not None else f"{per['estimate']:+.1f}")
                z = "n/a" if r["z"] is None else f"{r['z']:.2f}"
                add(f"| {OUTCOME_WORDS[outcome][0]} | {k} | {pct(r['control']['rate'])} | "
                    f"{pct(r['treatment']['rate'])} | {signed_pp(r['difference'])} | {lift_s} | {dm_s} | "
                    f"{per_s} | {z} | {pval(r['pvalue'])} | {pct(r['mde']['relative'], 1)} |")
        add("")
        add("Reading: *per 10,000 visitors* is the difference in conversion rate times 10,000, i.e. how many more "
            "(or fewer) of 10,000 visitors would touch a recommended item in the window. The MDE is the smallest "
            "relative lift over the control rate that a test of these arm sizes detects 80% of the time at α 0.05; "
            "a smaller true effect would often go unnoticed.")
        add("")
    if chart_names:
        add("## Charts")
        add("")
        for name in chart_names:
            add(f"![{name}]({name})")
            add("")
    add("---")
    add("Numbers come from the data the warehouse holds (synthetic data from `aisle generate` unless real "
        "RetailRocket files were loaded). Generated by `aisle evaluate`; the full machine-readable results are in "
        "`evaluation.json`.")
    return "\n".join(lines) + "\n"
