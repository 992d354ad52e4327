"""``newsmtl analyze``: the private-shared component analysis of a trained run.

Writes ``OUT/index.html`` (self-contained: figures embedded as base64 PNG), the same figures as
PNG files beside it, and ``OUT/analysis.json`` with every number the report shows.

Articles: the run's split is recomputed from the data and the run's stored config (seed,
fractions, subsample), exactly as ``newsmtl evaluate`` does, and must reproduce the training
split's fingerprint. Probes are fitted on (a sample of) the run's *training* articles of the
modelled outlets and everything else is measured on its held-out *test* articles.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from newsmtl._errors import ConfigError, DataError, ModelError
from newsmtl.analysis import _figures as figs
from newsmtl.analysis._features import Features, extract_features
from newsmtl.analysis._html import Figure, render_report
from newsmtl.analysis._language import LanguageAccumulator, TokenClasses
from newsmtl.analysis._probes import baseline_rates, fit_probe
from newsmtl.analysis._relatedness import (
    bias_agreement,
    cluster_order,
    expected_group_check,
    private_cka_matrix,
    style_confusion,
)
from newsmtl.model import Example, ModelConfig, encode_examples, load_run, prepare_data

__all__ = ["ANALYSIS_FORMAT", "AnalysisResult", "analyze_run"]

logger = logging.getLogger(__name__)

ANALYSIS_FORMAT = "newsmtl-analysis/1"
FIGURE_FILES = (
    "probes.png",
    "contributions.png",
    "relatedness_style.png",
    "relatedness_cka.png",
    "language.png",
    "projection.png",
)


@dataclass
class AnalysisResult:
    out_dir: Path
    html: Path
    json: Path
    figures: list[Path]
    summary: dict[str, Any]


def _sample(indices: Sequence[int], n: int | None, seed: int) -> list[int]:
    if n is None or len(indices) <= n:
        return list(indices)
    rng = np.random.default_rng([seed, 0xA11])
    return sorted(int(i) for i in rng.choice(np.asarray(indices), size=n, replace=False))


def _outlet_bias(examples: Sequence[Example], publications: Sequence[str]) -> dict[str, str]:
    """Majority AllSides label of each outlet's articles (the data labels articles, not outlets)."""
    wanted = set(publications)
    votes: dict[str, Counter[str]] = {p: Counter() for p in publications}
    for ex in examples:
        if ex.publication in wanted and ex.bias:
            votes[ex.publication][_bias_name(ex.bias)] += 1
    return {p: c.most_common(1)[0][0] for p, c in votes.items() if c}


def _bias_name(value: str) -> str:
    return {"0": "left", "1": "center", "2": "right"}.get(value.strip(), value.strip().lower())


def analyze_run(
    run_dir: Path,
    data_path: Path,
    out_dir: Path,
    *,
    max_articles: int | None = 3000,
    projection: Literal["tsne", "pca"] = "tsne",
    batch_size: int = 64,
    seed: int = 0,
    permutations: int = 2000,
) -> AnalysisResult:
    """Analyse ``run_dir`` on ``data_path``; see the module docstring for what is written."""
    t0 = time.perf_counter()
    if max_articles is not None and max_articles < 20:
        raise ConfigError("--max-articles must be at least 20")
    if projection not in ("tsne", "pca"):
        raise ConfigError("projection must be 'tsne' or 'pca'")
    run = load_run(run_dir)
    net = run.net
    if net.private_encoders is None:
        raise ModelError("%s was trained without private encoders (use_private=False): nothing to analyse" % run_dir)
    topics = list(run.labels["topics"])
    pubs = list(run.labels["publications"])
    data = prepare_data(Path(data_path), run.config)
    if run.data.get("train_fingerprint") and data.info["train_fingerprint"] != run.data["train_fingerprint"]:
        raise DataError(
            "%s does not reproduce the training split of %s (different data file, fields or max_articles)"
            % (data_path, run_dir)
        )
    ex = data.examples
    modelled = set(pubs)
    train_idx = _sample([i for i in data.split.train if ex[i].publication in modelled], max_articles, seed)
    test_idx = _sample([i for i in data.split.test if ex[i].publication in modelled], max_articles, seed + 1)
    if len(test_idx) < 2 or len(train_idx) < 2:
        raise DataError("too few held-out or training articles of the modelled outlets in %s" % data_path)
    bias_labels = list(run.labels.get("bias", []))
    enc_train = encode_examples(
        run.encoder, [ex[i] for i in train_idx], topics=topics, publications=pubs, bias=bias_labels
    )
    enc_test = encode_examples(run.encoder, [ex[i] for i in test_idx], topics=topics, publications=pubs, bias=bias_labels)
    logger.info("analysis sets: %d train (probe fitting), %d test articles", len(train_idx), len(test_idx))

    tokenizer = Tokenizer.from_file(str(Path(run_dir) / "tokenizer.json"))
    classes = TokenClasses(tokenizer, run.encoder.pad_id)
    language = LanguageAccumulator(net, classes)
    with torch.inference_mode():
        f_train = extract_features(net, enc_train, batch_size=batch_size)
        f_test = extract_features(net, enc_test, batch_size=batch_size, on_batch=[language.update])
    logger.info("features extracted in %.1fs", time.perf_counter() - t0)

    bias_of = _outlet_bias(ex, pubs)
    report: dict[str, Any] = {
        "format": ANALYSIS_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": {
            "run_dir": str(run_dir),
            "preset": run.train_config.get("preset"),
            "created_at": run.created_at,
            "model_config": run.model_config.to_dict(),
            "dev_metrics": run.metrics.get("dev", {}),
        },
        "data": {
            "path": str(Path(data_path).resolve()),
            "seed": run.config.seed,
            "split_check": "ok: training split reproduced" if run.data.get("train_fingerprint") else "not checked",
            "n_probe_train": len(train_idx),
            "n_test": len(test_idx),
            "max_articles": max_articles,
            "test_per_publication": {p: int((f_test.publication == i).sum()) for i, p in enumerate(pubs)},
        },
        "labels": {"topics": topics, "publications": pubs, "outlet_bias": bias_of},
    }
    report["probes"] = _probes(f_train, f_test, len(pubs), len(topics), seed, run.model_config)
    logger.info("probes done (%.1fs)", time.perf_counter() - t0)
    report["contributions"] = _contributions(f_test, pubs, topics)
    report["relatedness"] = _relatedness(f_test, pubs, bias_of, permutations=permutations, seed=seed)
    report["language"] = language.results(topics, pubs)
    report["projection"] = _projection(f_test, pubs, topics, method=projection, seed=seed)
    logger.info("relatedness, language and projection done (%.1fs)", time.perf_counter() - t0)
    report["summary"] = _summary(report)
    return _write(report, Path(out_dir), t0)


# -- sections -------------------------------------------------------------------------------


def _shared_blocks(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """Column ranges of the shared feature blocks (CNN, bag of words, bigrams) when there are several."""
    blocks = {"cnn": (0, cfg.shared_dim)}
    offset = cfg.shared_dim
    if cfg.bag_of_words:
        blocks["bag_of_words"] = (offset, offset + cfg.embed_dim)
        offset += cfg.embed_dim
    if cfg.bigram_buckets > 0:
        blocks["bigrams"] = (offset, offset + cfg.bigram_dim)
    return blocks if len(blocks) > 1 else {}


def _probes(
    f_train: Features, f_test: Features, n_pubs: int, n_topics: int, seed: int, cfg: ModelConfig
) -> dict[str, Any]:
    y_tr, y_te = f_train.publication, f_test.publication
    flat_tr = f_train.private.reshape(len(y_tr), -1)
    flat_te = f_test.private.reshape(len(y_te), -1)
    publication = {
        "target": "publication",
        "num_classes": n_pubs,
        **baseline_rates(y_tr, y_te, n_pubs),
        "shared": fit_probe(f_train.shared, y_tr, f_test.shared, y_te, seed=seed),
        "private_own": fit_probe(f_train.private_own, y_tr, f_test.private_own, y_te, seed=seed),
        "private_all": fit_probe(flat_tr, y_tr, flat_te, y_te, seed=seed),
        "shared_plus_private_all": fit_probe(
            np.concatenate([f_train.shared, flat_tr], axis=1), y_tr,
            np.concatenate([f_test.shared, flat_te], axis=1), y_te, seed=seed,
        ),
        "style_head_top1": float(np.mean(f_test.style_logits.argmax(axis=1) == y_te)),
        "note": "private_own selects the encoder by the article's outlet, i.e. by the label itself, so a probe "
        "can partly tell encoders apart rather than styles; private_all (every encoder on every article) is "
        "the label-free comparison.",
    }
    # Where in the shared features the publication information sits, block by block.
    publication["shared_blocks"] = {
        name: fit_probe(f_train.shared[:, a:b], y_tr, f_test.shared[:, a:b], y_te, seed=seed)
        for name, (a, b) in _shared_blocks(cfg).items()
    }
    out: dict[str, Any] = {"publication": publication}
    tr, te = f_train.topic >= 0, f_test.topic >= 0
    if len(np.unique(f_train.topic[tr])) >= 2 and te.any():
        yt_tr, yt_te = f_train.topic[tr], f_test.topic[te]
        out["topic"] = {
            "target": "topic",
            "num_classes": n_topics,
            **baseline_rates(yt_tr, yt_te, n_topics),
            "shared": fit_probe(f_train.shared[tr], yt_tr, f_test.shared[te], yt_te, seed=seed),
            "private_all": fit_probe(flat_tr[tr], yt_tr, flat_te[te], yt_te, seed=seed),
            "model_accuracy": float(np.mean(f_test.predicted_topic[te] == yt_te)),
        }
    return out


def _contributions(f: Features, pubs: Sequence[str], topics: Sequence[str]) -> dict[str, Any]:
    share = f.shared_share
    rows = []
    per_topic: dict[str, dict[str, Any]] = {}
    pred = f.predicted_topic
    for i, name in enumerate(pubs):
        sel = f.publication == i
        if not sel.any():
            continue
        rows.append(
            {
                "publication": name,
                "n": int(sel.sum()),
                "shared_share": float(share[sel].mean()),
                "private_share": float(1.0 - share[sel].mean()),
                "mean_shared_contribution": float(f.shared_contribution[sel].mean()),
                "mean_private_contribution": float(f.private_contribution[sel].mean()),
                "mean_abs_shared": float(np.abs(f.shared_contribution[sel]).mean()),
                "mean_abs_private": float(np.abs(f.private_contribution[sel]).mean()),
                "private_decisive": float(np.mean(f.private_contribution[sel] > f.shared_contribution[sel])),
            }
        )
        per_topic[name] = {
            topics[t]: {"n": int((sel & (pred == t)).sum()), "shared_share": float(share[sel & (pred == t)].mean())}
            for t in range(len(topics))
            if (sel & (pred == t)).any()
        }
    return {
        "definition": "per article: |shared_contribution| / (|shared_contribution| + |private_contribution|) of the "
        "predicted topic's logit (the exported shared_share); averaged per outlet",
        "overall_shared_share": float(share.mean()),
        "per_publication": rows,
        "per_publication_topic": per_topic,
    }


def _relatedness(
    f: Features, pubs: Sequence[str], bias_of: dict[str, str], *, permutations: int, seed: int
) -> dict[str, Any]:
    members = [i for i in range(len(pubs)) if (f.publication == i).any()]
    labels = [pubs[i] for i in members]
    conf = style_confusion(f.style_logits, f.publication, members)
    cka = private_cka_matrix(f.private)[np.ix_(members, members)]
    methods: dict[str, Any] = {}
    for name, sim, extra in (
        ("style_confusion", conf["similarity"], {"confusion": conf["confusion"].tolist()}),
        ("private_cka", cka, {}),
    ):
        clus = cluster_order(sim, seed=seed)
        methods[name] = {
            "matrix": sim.tolist(),
            **extra,
            "order": clus["order"],
            "ordered_labels": [labels[i] for i in clus["order"]],
            "linkage": clus["linkage"],
            "clusters": dict(zip(labels, clus["clusters"], strict=True)),
            "bias_agreement": bias_agreement(sim, labels, bias_of, clus["clusters"], permutations=permutations, seed=seed),
            "expected_groups": expected_group_check(sim, labels),
        }
    return {
        "primary": "style_confusion",
        "labels": labels,
        "excluded_publications": [p for i, p in enumerate(pubs) if i not in members],
        "methods": methods,
        "method_notes": {
            "style_confusion": "M[p,q] = mean style-head probability of outlet q on held-out articles of p; "
            "S = (M + M^T)/2 normalised by sqrt(M[p,p] M[q,q]) (diagonal 1). Behavioural: how easily the model "
            "takes one outlet's writing for the other's.",
            "private_cka": "linear CKA between the private features that outlet p's and outlet q's encoders compute "
            "for the same held-out articles (all outlets' articles). Representational: whether two encoders "
            "learned the same function of the text.",
            "clustering": "order: average linkage on 1 - similarity (similarity rescaled to [0,1] off the diagonal), "
            "optimal leaf ordering; flat clusters: spectral clustering of the rescaled similarity into 3 clusters, "
            "compared with the 3 bias labels by the adjusted Rand index",
            "bias_agreement": "gap = mean within-bias - mean between-bias similarity over outlet pairs; "
            "p_value from random relabellings of the outlets",
        },
    }


def _projection(
    f: Features, pubs: Sequence[str], topics: Sequence[str], *, method: str, seed: int, limit: int = 2000
) -> dict[str, Any]:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(f.publication)
    rng = np.random.default_rng([seed, 0x2D])
    idx = np.sort(rng.choice(n, size=min(n, limit), replace=False))
    out: dict[str, Any] = {"method": method, "n": int(len(idx)), "index": idx.tolist()}
    for name, x in (("shared", f.shared[idx]), ("private", f.private[idx].reshape(len(idx), -1))):
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
        dims = min(50, x.shape[1], len(idx))
        reduced = PCA(n_components=dims, random_state=seed).fit_transform(x) if dims >= 2 else x
        if method == "tsne" and len(idx) >= 5:
            perplexity = float(min(30.0, (len(idx) - 1) / 3.0))
            xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
        else:
            xy = reduced[:, :2] if reduced.shape[1] >= 2 else np.pad(reduced, ((0, 0), (0, 2 - reduced.shape[1])))
        out[name] = np.round(xy.astype(np.float64), 4).tolist()
    out["publication"] = [pubs[int(i)] for i in f.publication[idx]]
    out["topic"] = [topics[int(i)] if i >= 0 else "?" for i in f.topic[idx]]
    return out


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    pub = report["probes"]["publication"]
    rel = report["relatedness"]["methods"]
    return {
        "probe_publication_shared": pub["shared"]["accuracy"],
        "probe_publication_private_own": pub["private_own"]["accuracy"],
        "probe_publication_private_all": pub["private_all"]["accuracy"],
        "chance": pub["chance"],
        "majority": pub["majority"],
        "overall_shared_share": report["contributions"]["overall_shared_share"],
        "bias_gap_style_confusion": rel["style_confusion"]["bias_agreement"].get("gap"),
        "bias_p_value_style_confusion": rel["style_confusion"]["bias_agreement"].get("p_value"),
        "bias_gap_private_cka": rel["private_cka"]["bias_agreement"].get("gap"),
        "bias_p_value_private_cka": rel["private_cka"]["bias_agreement"].get("p_value"),
    }


# -- output ---------------------------------------------------------------------------------


def _figures(report: dict[str, Any]) -> list[Figure]:
    pub = report["probes"]["publication"]
    rows = [("shared features (Ds=%d)" % pub["shared"]["dim"], pub["shared"]["accuracy"])]
    rows += [
        ("  shared: %s block (%d)" % (name.replace("_", " "), probe["dim"]), probe["accuracy"])
        for name, probe in pub.get("shared_blocks", {}).items()
    ]
    rows += [
        ("own private features (Dp=%d)" % pub["private_own"]["dim"], pub["private_own"]["accuracy"]),
        ("all private encoders (P*Dp=%d)" % pub["private_all"]["dim"], pub["private_all"]["accuracy"]),
        ("shared + all private", pub["shared_plus_private_all"]["accuracy"]),
        ("the model's style head", pub["style_head_top1"]),
    ]
    out = [
        Figure(
            file="probes.png",
            section="probes",
            title="Linear probes for the publication",
            png=figs.to_png(figs.probes_figure(rows, pub["chance"], pub["majority"], "Which outlet wrote it? (held-out)")),
            caption=(
                "Held-out accuracy of a fresh logistic-regression probe that predicts the outlet from frozen "
                "features. What to look for: the adversarially trained shared features should sit close to the "
                "dashed chance line (1/P) or the dotted majority-class line, the private features far to the "
                "right. A shared bar well above the majority line means publication information leaks into "
                "the shared space. The own-private bar selects the encoder by the outlet itself, so the "
                "all-encoders bar is the fairer one."
            ),
        )
    ]
    con = report["contributions"]["per_publication"]
    out.append(
        Figure(
            file="contributions.png",
            section="contributions",
            title="Shared vs private contribution to topic decisions",
            png=figs.to_png(
                figs.contributions_figure(
                    [r["publication"] for r in con], [r["shared_share"] for r in con], [r["n"] for r in con]
                )
            ),
            caption=(
                "For each outlet, the mean share of the predicted topic's logit that comes from the shared half "
                "(teal) vs the outlet's own private half (ochre) of its topic head, on held-out articles. What to "
                "look for: topic is mostly a shared matter, so teal should dominate; outlets with a long ochre "
                "bar lean on their own features to decide topics (house-specific topic cues, or too few articles "
                "for the shared head to serve them)."
            ),
        )
    )
    rel = report["relatedness"]
    bias = report["labels"]["outlet_bias"]
    for method, file, title, caption in (
        (
            "style_confusion",
            "relatedness_style.png",
            "Style-head confusion between outlets (primary relatedness)",
            "Symmetrised, normalised style-head confusion between outlets on held-out articles, rows and columns "
            "in hierarchical-clustering order (dendrograms on the sides; diagonal hidden). Tick labels are "
            "coloured by the outlet's AllSides bias (blue left, grey center, red right). What to look for: "
            "bright blocks of same-coloured labels mean the model confuses outlets of the same leaning with each "
            "other, i.e. their house styles are related; the bias-agreement gap and its permutation p-value "
            "in the table quantify it.",
        ),
        (
            "private_cka",
            "relatedness_cka.png",
            "Linear CKA between private encoders",
            "Linear CKA between the private representations that two outlets' private encoders compute for the "
            "same held-out articles, clustered the same way. What to look for: blocks of encoders that learned "
            "the same function of the text. CKA also rewards generic features that any encoder picks up (length, "
            "common words), so read the contrasts rather than the absolute level; compare the clusters with the "
            "style-confusion figure and with the label colours.",
        ),
    ):
        m = rel["methods"][method]
        out.append(
            Figure(
                file=file,
                section="relatedness",
                title=title,
                png=figs.to_png(
                    figs.relatedness_figure(
                        np.asarray(m["matrix"]), rel["labels"], m["linkage"], m["order"], bias, title,
                        hide_diagonal=True,
                    )
                ),
                caption=caption,
            )
        )
    lang = report["language"]
    private_tokens = {p: v["tokens"] for p, v in lang["private"]["per_publication"].items()}
    topic_tokens = {t: v["tokens"] for t, v in lang["shared"]["per_topic"].items()}
    out.append(
        Figure(
            file="language.png",
            section="language",
            title="Tokens that drive the shared and the private features",
            png=figs.to_png(figs.language_figure(topic_tokens, private_tokens)),
            caption=(
                "Teal panels: for each predicted topic, the tokens whose credit to that topic's margin, through "
                "the shared features, is highest on the topic's articles relative to the other articles (exact "
                "max-pool window decomposition; see Methods). Ochre panels: for each outlet, the tokens whose "
                "credit to the outlet's style score, through its own private encoder, is highest on its own "
                "articles relative to other outlets' articles. What to look for: topical content words in the "
                "teal panels; function words, punctuation habits, datelines, captions and formulaic phrases in "
                "the ochre ones. [OUTLET] and pure punctuation are excluded from the rankings (their share of "
                "the credit is in the text)."
            ),
        )
    )
    proj = report["projection"]
    panels = []
    for space in ("shared", "private"):
        for colour_by, names in (("publication", report["labels"]["publications"]), ("topic", report["labels"]["topics"])):
            index = {n: i for i, n in enumerate(names)}
            panels.append(
                {
                    "xy": proj[space],
                    "colour": [index.get(v, -1) for v in proj[colour_by]],
                    "names": names,
                    "title": "%s features, coloured by %s" % (space, colour_by),
                }
            )
    panels = [panels[0], panels[1], panels[2], panels[3]]
    out.append(
        Figure(
            file="projection.png",
            section="projection",
            title="2-D projection of shared and private features",
            png=figs.to_png(figs.projection_figure(panels, proj["method"].upper())),
            caption=(
                "%s of held-out articles' shared features (top) and of all private encoders' features "
                "concatenated (bottom), coloured by outlet (left) and by topic (right). What to look for: the "
                "shared space should group by topic and mix the outlets; the private space should group by "
                "outlet. Distances between far-apart clusters in t-SNE are not meaningful." % proj["method"].upper()
            ),
        )
    )
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write(report: dict[str, Any], out_dir: Path, t0: float) -> AnalysisResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(report)
    paths = []
    for fig in figures:
        path = out_dir / fig.file
        path.write_bytes(fig.png)
        paths.append(path)
    report["figures"] = [{"file": f.file, "section": f.section, "title": f.title, "caption": f.caption} for f in figures]
    report["seconds"] = round(time.perf_counter() - t0, 1)
    clean = _jsonable(report)
    json_path = out_dir / "analysis.json"
    json_path.write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    html_path = out_dir / "index.html"
    html_path.write_text(render_report(clean, figures), encoding="utf-8")
    logger.info("analysis written to %s in %.1fs", out_dir, report["seconds"])
    return AnalysisResult(out_dir=out_dir, html=html_path, json=json_path, figures=paths, summary=clean["summary"])
