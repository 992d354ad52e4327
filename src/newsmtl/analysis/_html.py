"""The self-contained HTML page of ``newsmtl analyze`` (figures inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SECTIONS", "Figure", "render_report"]

SECTIONS = ("summary", "probes", "contributions", "relatedness", "language", "projection", "methods")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1a202c;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #cbd5e0;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}td,th{border:1px solid #e2e8f0;padding:.25em .6em;
text-align:right}th{background:#f7fafc}td.l,th.l{text-align:left}
figure{margin:1.2em 0;padding:.6em;border:1px solid #e2e8f0;background:#fff}figure img{max-width:100%}
figcaption{font-size:.9em;color:#2d3748;margin-top:.4em}.muted{color:#718096;font-size:.9em}
code{background:#f7fafc;padding:0 .2em}details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
"""


@dataclass
class Figure:
    file: str
    section: str
    title: str
    caption: str
    png: bytes


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "%.*f" % (digits, value)
    return _e(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, left: int = 1) -> str:
    head = "".join('<th class="l">%s</th>' % _e(h) if i < left else "<th>%s</th>" % _e(h) for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(
            '<td class="l">%s</td>' % _num(v) if i < left else "<td>%s</td>" % _num(v) for i, v in enumerate(row)
        )
        body.append("<tr>%s</tr>" % cells)
    return "<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (head, "".join(body))


def _figure(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        '<figure id="fig-%s"><img alt="%s" data-file="%s" src="data:image/png;base64,%s">'
        '<figcaption><b>%s.</b> %s <span class="muted">(also saved as <a href="%s">%s</a>)</span></figcaption></figure>'
        % (_e(fig.file.removesuffix(".png")), _e(fig.title), _e(fig.file), data, _e(fig.title), _e(fig.caption),
           _e(fig.file), _e(fig.file))
    )


def _tokens(rows: Sequence[dict[str, Any]], key: str = "token") -> str:
    return ", ".join("<code>%s</code>" % _e(r[key]) for r in rows) or '<span class="muted">none</span>'


def render_report(report: dict[str, Any], figures: Sequence[Figure]) -> str:
    by_section: dict[str, list[Figure]] = {}
    for fig in figures:
        by_section.setdefault(fig.section, []).append(fig)

    def figs(section: str) -> str:
        return "".join(_figure(f) for f in by_section.get(section, []))

    run, data, summary = report["run"], report["data"], report["summary"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>newsmtl analysis</title>",
        "<style>%s</style></head><body>" % _CSS,
        "<h1>Private-shared component analysis</h1>",
        "<p class='muted'>Run <code>%s</code> (preset %s), data <code>%s</code>, seed %s (%s). %d articles to fit "
        "probes (training split), %d held-out test articles. Generated %s.</p>"
        % (_e(run["run_dir"]), _e(run.get("preset")), _e(data["path"]), _e(data["seed"]), _e(data["split_check"]),
           data["n_probe_train"], data["n_test"], _e(report["created_at"])),
    ]
    # -- summary
    parts.append('<section id="summary"><h2>Summary</h2>')
    parts.append(
        _table(
            ["figure", "value"],
            [
                ["publication probe on shared features", summary["probe_publication_shared"]],
                ["publication probe on own private features", summary["probe_publication_private_own"]],
                ["publication probe on all private encoders", summary["probe_publication_private_all"]],
                ["chance (1/P)", summary["chance"]],
                ["majority class", summary["majority"]],
                ["mean shared share of topic decisions", summary["overall_shared_share"]],
                ["bias agreement gap, style confusion (p)", "%s (p=%s)" % (_num(summary["bias_gap_style_confusion"]),
                                                                           _num(summary["bias_p_value_style_confusion"]))],
                ["bias agreement gap, private CKA (p)", "%s (p=%s)" % (_num(summary["bias_gap_private_cka"]),
                                                                      _num(summary["bias_p_value_private_cka"]))],
            ],
        )
    )
    parts.append("</section>")
    # -- probes
    probes = report["probes"]
    pub = probes["publication"]
    parts.append('<section id="probes"><h2>Probes: where does publication information live?</h2>')
    parts.append(
        "<p>A fresh logistic-regression probe (standardised inputs, L2, C=1) is fitted on frozen features of the "
        "run's training articles and scored on its held-out test articles. Adversarial training (gradient reversal "
        "against a publication discriminator) should leave the shared features near chance while the private "
        "features identify the outlet. %s</p>" % _e(pub["note"])
    )
    rows = [
        [name.replace("_", " "), pub[name]["dim"], pub[name]["accuracy"], pub[name]["macro_f1"], pub[name]["train_accuracy"]]
        for name in ("shared", "private_own", "private_all", "shared_plus_private_all")
    ]
    for name, probe in pub.get("shared_blocks", {}).items():
        rows.append(["shared, %s block only" % name.replace("_", " "), probe["dim"], probe["accuracy"], probe["macro_f1"],
                     probe["train_accuracy"]])
    rows.append(["style head of the model", "–", pub["style_head_top1"], None, None])
    rows.append(["chance (1/P)", "–", pub["chance"], None, None])
    rows.append(["majority class", "–", pub["majority"], None, None])
    parts.append(_table(["features", "dim", "test accuracy", "test macro-F1", "train accuracy"], rows))
    if "topic" in probes:
        top = probes["topic"]
        parts.append("<p>For contrast, the same probe predicting the <b>topic</b>:</p>")
        parts.append(
            _table(
                ["features", "test accuracy", "test macro-F1"],
                [
                    ["shared", top["shared"]["accuracy"], top["shared"]["macro_f1"]],
                    ["all private encoders", top["private_all"]["accuracy"], top["private_all"]["macro_f1"]],
                    ["the model itself", top["model_accuracy"], None],
                    ["chance / majority", "%.3f / %.3f" % (top["chance"], top["majority"]), None],
                ],
            )
        )
    parts.append(figs("probes") + "</section>")
    # -- contributions
    con = report["contributions"]
    parts.append('<section id="contributions"><h2>Contributions: shared vs private in topic decisions</h2>')
    parts.append("<p>%s. Overall mean shared share: <b>%s</b>.</p>" % (_e(con["definition"]), _num(con["overall_shared_share"])))
    parts.append(
        _table(
            ["publication", "n", "shared share", "mean shared contrib.", "mean private contrib.", "private > shared"],
            [
                [r["publication"], r["n"], r["shared_share"], r["mean_shared_contribution"],
                 r["mean_private_contribution"], r["private_decisive"]]
                for r in con["per_publication"]
            ],
        )
    )
    parts.append(figs("contributions") + "</section>")
    # -- relatedness
    rel = report["relatedness"]
    parts.append('<section id="relatedness"><h2>Task relatedness between publications</h2>')
    notes = rel["method_notes"]
    parts.append(
        "<p><b>Primary measure: style-head confusion.</b> %s <b>Second measure: private-encoder CKA.</b> %s "
        "Why these: the style head is the model's own judgement of which outlet wrote an article, so its "
        "confusions measure relatedness of the outlets' writing as the model sees it; CKA compares what the "
        "outlets' private encoders compute, independently of the heads. Clustering: %s. Agreement with the "
        "AllSides labels (each outlet's majority article label): %s.</p>"
        % (_e(notes["style_confusion"]), _e(notes["private_cka"]), _e(notes["clustering"]), _e(notes["bias_agreement"]))
    )
    rows = []
    for name, m in rel["methods"].items():
        ba, eg = m["bias_agreement"], m["expected_groups"]
        rows.append([name.replace("_", " "), ba.get("within"), ba.get("between"), ba.get("gap"), ba.get("p_value"),
                     ba.get("adjusted_rand"), eg.get("within"), eg.get("between"), eg.get("gap")])
    parts.append(
        _table(
            ["measure", "within-bias", "between-bias", "gap", "p (perm.)", "ARI 3 clusters",
             "expected groups: within", "between", "gap"],
            rows,
        )
    )
    groups = rel["methods"]["style_confusion"]["expected_groups"]["groups"]
    parts.append(
        "<p class='muted'>Expected groups (present outlets): %s.</p>"
        % "; ".join("%s: %s" % (_e(g), _e(", ".join(v) or "none")) for g, v in groups.items())
    )
    for name, m in rel["methods"].items():
        clusters: dict[int, list[str]] = {}
        for outlet, c in m["clusters"].items():
            clusters.setdefault(int(c), []).append(outlet)
        bias = report["labels"]["outlet_bias"]
        parts.append(
            "<p><b>%s clusters:</b> %s</p>"
            % (_e(name.replace("_", " ")), " | ".join(
                ", ".join("%s (%s)" % (_e(o), _e(bias.get(o, "?"))) for o in members) for _, members in sorted(clusters.items())
            ))
        )
    parts.append(figs("relatedness"))
    labels = rel["labels"]
    matrix = rel["methods"]["style_confusion"]["matrix"]
    parts.append(
        "<details><summary>Style-confusion similarity matrix (numbers)</summary>%s</details>"
        % _table(["", *labels], [[labels[i], *row] for i, row in enumerate(matrix)])
    )
    parts.append("</section>")
    # -- language
    lang = report["language"]
    parts.append('<section id="language"><h2>Language: what drives shared and private features</h2>')
    parts.append(
        "<p>Attribution is exact: after ReLU + max-pooling each feature's value is its conv bias plus one term per "
        "token of the winning window, and its contribution to a logit is that value times the head weight. "
        "Shared tokens: credit to the <i>margin</i> of a topic (logit minus the mean over topics), as a lift: mean "
        "credit to topic t on the articles predicted t minus the mean credit to t on the other articles. "
        "Private tokens: credit to the outlet's style logit through its own encoder, as a lift over the same "
        "encoder on other outlets' articles. Tokens must occur in at least 2 articles (and 2%% of the group). "
        "<code>[OUTLET]</code>, other special tokens and pure punctuation are excluded from the rankings; their "
        "share of the positive credit: shared %s, private %s. Tokens are byte-level BPE pieces, lower-cased; a "
        "leading <code>-</code> marks a piece inside a word or after a line break.</p>"
        % (_e(_shares(lang["shared"]["excluded_share"])), _e(_shares(lang["private"]["excluded_share"])))
    )
    parts.append(
        "<p><b>Shared, strongest lifts over all topics:</b> %s</p>"
        % (", ".join("<code>%s</code>&nbsp;(%s)" % (_e(r["token"]), _e(r["topic"])) for r in lang["shared"]["overall"])
           or '<span class="muted">none</span>')
    )
    rows = [[_e(t), v["n_articles"], _tokens(v["tokens"][:10]), _tokens(lang["shared"]["ngrams"].get(t, [])[:6], "ngram")]
            for t, v in lang["shared"]["per_topic"].items()]
    parts.append(_raw_table(["predicted topic", "n", "tokens", "n-gram windows"], rows))
    rows = [[_e(p), v["n_articles"], _tokens(v["tokens"][:10]), _tokens(v["ngrams"][:6], "ngram")]
            for p, v in lang["private"]["per_publication"].items()]
    parts.append(_raw_table(["publication (private)", "n", "tokens (lift)", "n-gram windows"], rows))
    parts.append(figs("language") + "</section>")
    # -- projection
    parts.append('<section id="projection"><h2>Projections</h2>')
    parts.append("<p>%s of %d held-out articles.</p>" % (_e(report["projection"]["method"].upper()), report["projection"]["n"]))
    parts.append(figs("projection") + "</section>")
    # -- methods
    parts.append('<section id="methods"><h2>Methods and caveats</h2><ul>')
    parts.append(
        "<li>Every number in this page is in <code>analysis.json</code> next to it; figures are saved as PNG too.</li>"
        "<li>The split is recomputed from the data and the run's stored seed and config and checked against the "
        "training split's fingerprint.</li>"
        "<li>Outlet bias labels are the majority AllSides label of each outlet's articles (AllSides rates columns "
        "and opinion pages separately, so a few outlets are mixed).</li>"
        "<li>Probes use at most <code>--max-articles</code> articles per split; probe accuracies on small test sets "
        "have wide confidence intervals (binomial s.e. about sqrt(p(1-p)/n)).</li>"
    )
    parts.append("</ul></section></body></html>\n")
    return "".join(parts)


def _raw_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join('<th class="l">%s</th>' % _e(h) for h in headers)
    body = "".join(
        "<tr>%s</tr>" % "".join('<td class="l">%s</td>' % (v if isinstance(v, str) else _num(v)) for v in row)
        for row in rows
    )
    return "<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (head, body)


def _shares(shares: dict[str, float]) -> str:
    return ", ".join("%s %.1f%%" % (k.replace("_", " "), 100 * v) for k, v in shares.items())
