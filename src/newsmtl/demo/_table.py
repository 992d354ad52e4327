"""The demo's results table (rich)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from newsmtl.schemas import Article, ClassificationResult

__all__ = ["results_table", "shorten", "top_styles"]


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters at a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: max(1, width - 1)]
    if " " in cut[width // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-") + "…"


def top_styles(result: ClassificationResult, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` publications the article reads most like, best first (ties by name)."""
    ranked = sorted(result.style.styles.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:k]


def _outlet(article: Article, result: ClassificationResult) -> Text:
    claimed = result.topic.publication
    if claimed is None:
        return Text("(none)", style="dim")
    if result.topic.topic_head == "publication":
        return Text(claimed, style="bold")
    return Text.assemble(claimed, (" (unmodelled)", "dim"))


def results_table(
    articles: Sequence[Article],
    results: Sequence[ClassificationResult | None],
    *,
    title: str | None = None,
    caption: str | None = None,
    extra: Sequence[str] | None = None,
    extra_header: str = "",
    title_width: int = 46,
) -> Table:
    """One row per article: id, title, claimed outlet, topic + probability, shared / private
    share of the topic decision, top-3 publication styles. ``None`` results show as pending.
    ``extra`` adds a last column (the Kafka demo's latencies)."""
    table = Table(title=title, caption=caption, show_lines=False, expand=False, header_style="bold")
    table.add_column("id", no_wrap=True, style="cyan")
    table.add_column("title", max_width=title_width)
    table.add_column("claimed outlet", max_width=34)
    table.add_column("topic", no_wrap=True)
    table.add_column("shared / private", justify="center", no_wrap=True)
    table.add_column("top-3 publication styles")
    if extra is not None:
        table.add_column(extra_header, justify="right", no_wrap=True)
    for i, article in enumerate(articles):
        result = results[i] if i < len(results) else None
        cells: list[str | Text]
        if result is None:
            cells = [article.id, shorten(article.title, title_width), Text("…", style="dim"), "", "", ""]
        else:
            topic = result.topic
            probability = topic.topic_scores.get(topic.topic, 0.0)
            shared = topic.shared_share
            cells = [
                article.id,
                shorten(article.title, title_width),
                _outlet(article, result),
                Text.assemble((topic.topic, "green"), " %.2f" % probability),
                "%3.0f%% / %3.0f%%" % (100 * shared, 100 * (1 - shared)),
                ", ".join("%s %.2f" % (name, score) for name, score in top_styles(result)),
            ]
        if extra is not None:
            cells.append(extra[i] if i < len(extra) else "")
        table.add_row(*cells)
    return table
