"""Outlet self-name masking.

Most outlets name themselves in their own copy: datelines ("WASHINGTON (Reuters) -"), photo
credits ("AP Photo/..."), plugs ("Follow Fox News on ..."), "USA TODAY" in captions. 99% of
reuters.com bodies say "Reuters", 86% of cnn.com bodies say "CNN". A model that may see these
names learns to read bylines instead of house style, so every name in the table below is replaced
by ``[OUTLET]`` in training *and* at inference (the same :class:`OutletMasker` is stored with the
model). Names of every outlet are masked in every article, whatever its claimed outlet: the
serving side must not depend on a publication field that may be missing or wrong, and an outlet
citing another ("CNN reported ...") would otherwise leak the cited outlet's identity into style.

Matching is literal, case-sensitive and on word boundaries (``(?<!\\w)name(?!\\w)``), longest name
first, so "The New York Times" wins over "New York Times" and "CNN's" becomes "[OUTLET]'s".
Case-sensitive on purpose: "AP" and "The Hill" are outlet names, "ap" and "the hill" are not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from newsmtl._errors import ConfigError

__all__ = ["DEFAULT_OUTLET_NAMES", "OUTLET_TOKEN", "OutletMasker"]

OUTLET_TOKEN = "[OUTLET]"  # noqa: S105 - a token, not a password

# Self-names of the 25 outlets with >= 300 articles in the allsides data, plus a few frequent
# others. Variants were chosen by measuring how often each string occurs in the outlet's own
# articles versus in other outlets' articles (e.g. "AP": 99% of apnews.com vs 5% elsewhere).
DEFAULT_OUTLET_NAMES: Mapping[str, tuple[str, ...]] = {
    "foxnews.com": ("Fox News Channel", "Fox News", "FOX News", "FoxNews.com", "FoxNews", "Fox Business",
                    "FOX Business", "Fox & Friends", "foxnews.com"),
    "cnn.com": ("CNN Money", "CNNMoney", "CNN Politics", "CNN.com", "CNN", "cnn.com"),
    "washingtontimes.com": ("The Washington Times", "Washington Times", "washingtontimes.com"),
    "politico.com": ("POLITICO Magazine", "POLITICO Pro", "POLITICO", "Politico", "politico.com"),
    "npr.org": ("National Public Radio", "NPR News", "NPR", "npr.org"),
    "usatoday.com": ("USA TODAY Network", "USA TODAY", "USA Today", "usatoday.com"),
    "nytimes.com": ("The New York Times", "New York Times", "NYTimes.com", "NYTimes", "nytimes.com"),
    "vox.com": ("Vox.com", "Vox", "vox.com"),
    "townhall.com": ("Townhall.com", "Townhall", "townhall.com"),
    "thehill.com": ("The Hill", "TheHill.com", "thehill.com"),
    "csmonitor.com": ("The Christian Science Monitor", "Christian Science Monitor", "CSMonitor.com",
                      "CSMonitor", "csmonitor.com"),
    "nationalreview.com": ("National Review Online", "National Review", "NRO", "nationalreview.com"),
    "reuters.com": ("Thomson Reuters Foundation", "Thomson Reuters", "Reuters", "reuters.com"),
    "bbc.com": ("BBC News", "BBC World Service", "BBC", "bbc.com", "bbc.co.uk"),
    "newsmax.com": ("Newsmax TV", "Newsmax.com", "Newsmax", "NewsMax", "newsmax.com"),
    "salon.com": ("Salon.com", "Salon", "salon.com"),
    "theguardian.com": ("The Guardian", "Guardian US", "Guardian", "theguardian.com"),
    "reason.com": ("Reason.com", "Reason magazine", "Reason TV", "Reason Foundation", "reason.com"),
    "cbn.com": ("Christian Broadcasting Network", "CBN News", "CBN", "cbn.com"),
    "breitbart.com": ("Breitbart News Network", "Breitbart News", "Breitbart", "breitbart.com"),
    "apnews.com": ("The Associated Press", "Associated Press", "AP Photo", "(AP)", "AP", "apnews.com"),
    "spectator.org": ("The American Spectator", "American Spectator", "spectator.org"),
    "abcnews.go.com": ("ABC News", "ABC", "abcnews.go.com"),
    "wsj.com": ("The Wall Street Journal", "Wall Street Journal", "WSJ", "wsj.com"),
    "dailycaller.com": ("Daily Caller News Foundation", "The Daily Caller", "Daily Caller", "DCNF",
                        "dailycaller.com"),
    "thedailybeast.com": ("The Daily Beast", "Daily Beast", "thedailybeast.com"),
    "theblaze.com": ("TheBlaze", "The Blaze", "theblaze.com"),
    "nypost.com": ("New York Post", "NY Post", "nypost.com"),
    "theatlantic.com": ("The Atlantic", "theatlantic.com"),
    "bloomberg.com": ("Bloomberg News", "Bloomberg", "bloomberg.com"),
    "cbsnews.com": ("CBS News", "CBS", "cbsnews.com"),
    "nbcnews.com": ("NBC News", "NBC", "nbcnews.com"),
    "washingtonpost.com": ("The Washington Post", "Washington Post", "washingtonpost.com"),
    "aljazeera.com": ("Al Jazeera", "aljazeera.com"),
}


class OutletMasker:
    """Replaces outlet self-names by a placeholder token; serialisable to/from a JSON dict.

    >>> OutletMasker.default().mask("WASHINGTON (Reuters) - the CNN anchor said")
    'WASHINGTON ([OUTLET]) - the [OUTLET] anchor said'
    """

    def __init__(self, outlets: Mapping[str, Iterable[str]], *, token: str = OUTLET_TOKEN) -> None:
        if not token:
            raise ConfigError("the outlet mask token must not be empty")
        self.token = token
        table: dict[str, tuple[str, ...]] = {}
        for outlet, names in outlets.items():
            if isinstance(names, str):
                raise ConfigError("outlet %r: names must be a list of strings, not a string" % outlet)
            cleaned = tuple(dict.fromkeys(str(n) for n in names if str(n).strip()))
            table[str(outlet)] = cleaned
        self.outlets: dict[str, tuple[str, ...]] = table
        names_all = sorted({n for names in table.values() for n in names}, key=lambda n: (-len(n), n))
        if names_all:
            alternation = "|".join(re.escape(n) for n in names_all)
            self._pattern: re.Pattern[str] | None = re.compile(r"(?<!\w)(?:%s)(?!\w)" % alternation)
        else:
            self._pattern = None

    @classmethod
    def default(cls) -> OutletMasker:
        return cls(DEFAULT_OUTLET_NAMES)

    @classmethod
    def disabled(cls) -> OutletMasker:
        """A masker that changes nothing (for ablations; never for style evaluation)."""
        return cls({})

    @classmethod
    def from_config(cls, override: Mapping[str, Any] | None = None) -> OutletMasker:
        """The default table updated by ``override``.

        ``override`` looks like ``{"outlets": {"reuters.com": ["Reuters"], "cnn.com": []},
        "replace_defaults": false, "token": "[OUTLET]"}``: each listed outlet's names replace
        the default names of that outlet (an empty list switches masking off for it); with
        ``replace_defaults`` the default table is dropped entirely.
        """
        if override is None:
            return cls.default()
        if not isinstance(override, Mapping):
            raise ConfigError("masking config must be a JSON object")
        unknown = set(override) - {"outlets", "replace_defaults", "token"}
        if unknown:
            raise ConfigError("unknown masking config keys: %s" % ", ".join(sorted(unknown)))
        outlets = override.get("outlets", {})
        if not isinstance(outlets, Mapping) or not all(isinstance(v, list) for v in outlets.values()):
            raise ConfigError("masking config 'outlets' must map outlet -> list of names")
        table: dict[str, Iterable[str]] = {} if override.get("replace_defaults") else dict(DEFAULT_OUTLET_NAMES)
        table.update(outlets)
        return cls(table, token=str(override.get("token", OUTLET_TOKEN)))

    @classmethod
    def from_json_file(cls, path: Path) -> OutletMasker:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError("cannot read masking config %s: %s" % (path, exc)) from None
        return cls.from_config(data)

    def to_dict(self) -> dict[str, Any]:
        """The full table (not a diff against the defaults), so a stored model never changes."""
        return {"token": self.token, "outlets": {k: list(v) for k, v in sorted(self.outlets.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutletMasker:
        try:
            return cls(data["outlets"], token=data.get("token", OUTLET_TOKEN))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError("invalid masking table: %s" % exc) from None

    def mask(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(self.token, text)

    def mask_batch(self, texts: Iterable[str]) -> list[str]:
        return [self.mask(t) for t in texts]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutletMasker) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return "OutletMasker(%d outlets, token=%r)" % (len(self.outlets), self.token)
