"""WWKS2 articles: the pharmacy software's article ids and the machine's drug codes.

With ``article_mapping = "drug_code"`` an article id is the drug code itself (a GTIN-14,
or an EAN-13 read with a leading 0). With ``"article_master"`` the ArticleMasterSet maps
each article id to a drug through its product codes (the first that is a drug of the
formulary, else the article id itself if it is one); a drug no article maps to is reported
under its drug code.

The article master is kept in the journal (``wwks2_articles``, replaced whole by each
ArticleMasterSet, in one transaction with its audit row) and in memory. Names, forms and
pack sizes it gives are reported in StockInfo; its ``RequiresFridge`` is respected: a
fridge article is never stored in the robot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from dispenser.core.formulary import Formulary, is_valid_gtin14
from dispenser.core.views import Actor
from dispenser.journal import Journal, Migration
from dispenser.wwks2.backend import ArticleDetails, MasterArticle

__all__ = ["WWKS2_MIGRATIONS", "Articles", "drug_code_of"]

# A component of its own: the WWKS2 front door's tables.
WWKS2_MIGRATIONS: tuple[Migration, ...] = (
    Migration("wwks2", 1, "article master", """
CREATE TABLE wwks2_articles (
    article_id TEXT PRIMARY KEY,
    drug_code TEXT,
    data TEXT NOT NULL
);
CREATE INDEX wwks2_articles_drug ON wwks2_articles(drug_code);
"""),
)


def drug_code_of(code: str) -> str | None:
    """The GTIN-14 a code names: itself, or an EAN-13 / UPC-A with leading zeros."""
    code = code.strip()
    if code.isdigit() and 8 <= len(code) <= 14:
        full = code.rjust(14, "0")
        if is_valid_gtin14(full):
            return full
    return None


@dataclass(frozen=True, slots=True)
class _Entry:
    article: MasterArticle
    drug_code: str | None


class Articles:
    """Article ids <-> drug codes, the article master and its persistence."""

    def __init__(self, journal: Journal, formulary: Formulary, mapping: str,
                 clock: Callable[[], datetime]) -> None:
        self.journal = journal
        self.formulary = formulary
        self.clock = clock
        self.by_master = mapping == "article_master"
        self.reload()

    def reload(self) -> None:
        """The master as the journal holds it."""
        self.master: dict[str, _Entry] = {}
        self.of_drug: dict[str, str] = {}
        for drug, data in self.journal.query(
                "SELECT drug_code, data FROM wwks2_articles ORDER BY article_id"):
            d = json.loads(data)
            d["product_codes"] = tuple(d["product_codes"])
            self._add(_Entry(MasterArticle(**d), drug))

    def _add(self, entry: _Entry) -> None:
        self.master[entry.article.article_id] = entry
        if entry.drug_code is not None:
            self.of_drug.setdefault(entry.drug_code, entry.article.article_id)

    def _drug_of_master(self, article: MasterArticle) -> str | None:
        for code in (*article.product_codes, article.article_id):
            drug = drug_code_of(code)
            if drug is not None and drug in self.formulary:
                return drug
        return None

    # ------------------------------------------------------------------ mapping
    def drug_of(self, article_id: str) -> str | None:
        """The drug an article id names, None if it names none the machine knows."""
        drug = drug_code_of(article_id)
        if self.by_master:
            entry = self.master.get(article_id)
            if entry is not None:
                return entry.drug_code
            # A drug no article maps to is reported under its drug code.
            if drug is None or drug in self.of_drug:
                return None
        return drug if drug is not None and drug in self.formulary else None

    def article_of(self, drug_code: str) -> str:
        """The article id stock of this drug is reported under."""
        if self.by_master:
            return self.of_drug.get(drug_code, drug_code)
        return drug_code

    def requires_fridge(self, drug_code: str, article_id: str | None = None) -> bool:
        """Fridge by the formulary, or by the article master's RequiresFridge."""
        drug = self.formulary.get(drug_code)
        if drug is not None and drug.fridge:
            return True
        ids = [article_id] if article_id else []
        ids += [a for a in (self.of_drug.get(drug_code),) if a]
        return any(e.article.requires_fridge for a in ids if (e := self.master.get(a)))

    def details(self, drug_code: str) -> ArticleDetails:
        drug = self.formulary[drug_code]
        entry = self.master.get(self.article_of(drug_code))
        a = entry.article if entry is not None else None
        return ArticleDetails(
            name=(a.name if a and a.name else f"{drug.name} {drug.strength}".strip()),
            dosage_form=(a.dosage_form if a and a.dosage_form else drug.form),
            packaging_unit=(a.packaging_unit if a and a.packaging_unit
                            else str(drug.pack_size)),
            max_sub_item_quantity=(a.max_sub_item_quantity if a else 0))

    # ------------------------------------------------------------------ ArticleMasterSet
    def write(self, articles: Sequence[MasterArticle], actor: Actor) -> str:
        """Replace the whole master in the journal (call inside a transaction, then
        ``reload`` once it is committed). Returns "" or why the list is refused (nothing
        is written then)."""
        ids = [a.article_id for a in articles]
        twice = sorted({a for a in ids if ids.count(a) > 1}) if len(set(ids)) != len(ids) \
            else []
        if twice:
            return "article ids appear more than once: " + ", ".join(twice[:10])
        entries = [_Entry(a, self._drug_of_master(a)) for a in articles]
        self.journal.write("DELETE FROM wwks2_articles")
        self.journal.write_many(
            "INSERT INTO wwks2_articles (article_id, drug_code, data) VALUES (?,?,?)",
            [(e.article.article_id, e.drug_code, json.dumps(asdict(e.article)))
             for e in entries])
        mapped = sum(e.drug_code is not None for e in entries)
        self.journal.audit(self.clock().isoformat(), actor.name, actor.role,
                           "wwks2.article_master_set", "wwks2:articles", None,
                           {"articles": len(entries), "mapped_to_drugs": mapped,
                            "fridge": sum(e.article.requires_fridge for e in entries)})
        return ""
