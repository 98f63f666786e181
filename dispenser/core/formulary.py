"""The formulary: every drug the dispensary may dispense, keyed by its GTIN-14.

Loaded from a CSV file (columns: drug_code, name, strength, form, pack_size, price,
reimbursement_rate, fridge, manual, manufacturer, atc, ingredients); the demo's is
``dispenser/data/formulary.csv``. Drugs with
``fridge`` or ``manual`` set are never stored in the robot: they go on a shipment's manual
pick list.

Every drug carries its WHO ATC code and its active ingredients (INN names, ``;``-separated):
the duplicate and prescription checks judge therapy by ingredient, not by product (two
makers' acarbose 50 mg are one therapy; a sitagliptin/metformin tablet holds metformin).
A drug the WHO index has no code for carries a local code: a WHO level-4 group, ``-L`` and
two digits (``A10XA-L01``), which cannot be taken for a WHO code.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

COLUMNS = ("drug_code", "name", "strength", "form", "pack_size", "price",
           "reimbursement_rate", "fridge", "manual", "manufacturer", "atc", "ingredients")
REQUIRED = (*COLUMNS[:8], "atc", "ingredients")

# A WHO ATC code at its fifth level (A10BA02), or a local code for a drug the WHO index
# does not list: its WHO level-4 group, "-L" and two digits (A10XA-L01).
_ATC = re.compile(r"^[A-Z][0-9]{2}[A-Z]{2}(?:[0-9]{2}|-L[0-9]{2})$")
# An ingredient's INN as the formulary writes it: lower case, words, digits, hyphens.
_INGREDIENT = re.compile(r"^[a-z][a-z0-9 ()'-]{0,79}$")


class FormularyError(ValueError):
    """The formulary file is malformed; the message names the line and the field."""


def gtin_check_digit(body: str) -> str:
    """GS1 mod-10 check digit for the digits of ``body`` (a GTIN without its last digit)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        total += int(ch) * (3 if i % 2 == 0 else 1)
    return str((10 - total % 10) % 10)


@functools.lru_cache(maxsize=65536)
def is_valid_gtin14(code: str) -> bool:
    # Cached: a day's feed repeats the formulary's few hundred codes hundreds of thousands
    # of times, and the check digit's loop was a fifth of a record's import.
    return len(code) == 14 and code.isdigit() and gtin_check_digit(code[:13]) == code[13]


def is_valid_atc(code: str) -> bool:
    """A WHO ATC code of level 5 (``A10BA02``) or a local code (``A10XA-L01``)."""
    return bool(_ATC.match(code))


def is_local_atc(code: str) -> bool:
    return "-L" in code


def parse_ingredients(text: str) -> tuple[str, ...]:
    """``"sitagliptin;metformin"`` -> ``("metformin", "sitagliptin")`` (sorted, each once);
    raises ``ValueError`` naming a malformed ingredient."""
    names = [part.strip() for part in text.split(";")]
    for name in names:
        if not _INGREDIENT.match(name):
            raise ValueError(f"ingredient {name!r} is not an INN name (lower case letters, "
                             "digits, spaces, hyphens)")
    return tuple(sorted(set(names)))


@dataclass(frozen=True, slots=True)
class Drug:
    drug_code: str
    name: str
    strength: str
    form: str
    pack_size: int
    price: Decimal
    reimbursement_rate: Decimal
    fridge: bool
    manual: bool
    manufacturer: str = ""
    atc: str = ""
    # Active ingredients (INN), sorted; one for a single-ingredient product.
    ingredients: tuple[str, ...] = ()

    @property
    def robot(self) -> bool:
        """True when packs of this drug are stored in and picked by the robot."""
        return not (self.fridge or self.manual)

    @property
    def label(self) -> str:
        """Name, strength, form and pack size, e.g. "metformin 500 mg tablet x60"."""
        text = _LABELS.get(self)
        if text is None:
            text = _LABELS[self] = (f"{self.name} {self.strength} {self.form} "
                                    f"x{self.pack_size}")
        return text


# One label string per drug, shared by every billing line and pick list that shows it.
_LABELS: dict[Drug, str] = {}


def _bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no", ""):
        return False
    raise FormularyError(f"{where}: expected true/false, got {value!r}")


class Formulary(Mapping[str, Drug]):
    """Read-only mapping drug_code -> Drug; ``by_atc`` maps each ATC code of the formulary
    to the ingredients its products hold."""

    def __init__(self, drugs: Iterable[Drug]) -> None:
        self._drugs: dict[str, Drug] = {}
        self.by_atc: dict[str, tuple[str, ...]] = {}
        # drug_code -> its ingredients (the checks ask for every item of every order)
        self.ingredients: dict[str, tuple[str, ...]] = {}
        for d in drugs:
            if d.drug_code in self._drugs:
                raise FormularyError(f"drug_code {d.drug_code} appears twice")
            self._drugs[d.drug_code] = d
            if d.ingredients:
                self.ingredients[d.drug_code] = d.ingredients
            if d.atc:
                self.by_atc.setdefault(d.atc, d.ingredients)

    def ingredients_of(self, drug_code: str | None, atc: str | None) -> tuple[str, ...]:
        """The ingredients of a product (by drug code) or of an ATC code the formulary
        knows; ``()`` when neither is known."""
        if drug_code is not None:
            drug = self._drugs.get(drug_code)
            if drug is not None:
                return drug.ingredients
        if atc is not None:
            return self.by_atc.get(atc, ())
        return ()

    def __getitem__(self, code: str) -> Drug:
        return self._drugs[code]

    def get(self, code: str, default: Any = None) -> Any:
        # The dict's own get: Mapping.get goes through __getitem__ and an exception for
        # every miss, and the checks ask several times per order.
        return self._drugs.get(code, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._drugs)

    def __len__(self) -> int:
        return len(self._drugs)

    @classmethod
    def load(cls, path: str | Path) -> Formulary:
        with open(path, newline="", encoding="utf-8") as fh:
            return cls.from_rows(csv.DictReader(fh), source=str(path))

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]], source: str = "formulary") -> Formulary:
        drugs = []
        for n, row in enumerate(rows, start=2):
            where = f"{source} line {n}"
            missing = [c for c in REQUIRED if c not in row or row[c] is None]
            if missing:
                raise FormularyError(f"{where}: missing column(s) {', '.join(missing)}")
            code = row["drug_code"].strip()
            if not is_valid_gtin14(code):
                raise FormularyError(f"{where}: drug_code {code!r} is not a valid GTIN-14")
            try:
                price = Decimal(row["price"])
                rate = Decimal(row["reimbursement_rate"])
                pack_size = int(row["pack_size"])
            except (InvalidOperation, ValueError) as exc:
                raise FormularyError(f"{where}: bad number ({exc})") from None
            if price < 0 or not (0 <= rate <= 1) or pack_size < 1:
                raise FormularyError(f"{where}: price, reimbursement_rate or pack_size out "
                                     "of range")
            atc = row["atc"].strip()
            if not is_valid_atc(atc):
                raise FormularyError(
                    f"{where}: atc {atc!r} is not a valid ATC code (a WHO code such as "
                    "A10BA02, or a local code such as A10XA-L01)")
            if not row["ingredients"].strip():
                raise FormularyError(f"{where}: ingredients is empty; give the INN name of "
                                     "each active ingredient, ';'-separated")
            try:
                ingredients = parse_ingredients(row["ingredients"])
            except ValueError as exc:
                raise FormularyError(f"{where}: {exc}") from None
            drugs.append(Drug(
                drug_code=code, name=row["name"].strip(), strength=row["strength"].strip(),
                form=row["form"].strip(), pack_size=pack_size, price=price,
                reimbursement_rate=rate, fridge=_bool(row["fridge"], where),
                manual=_bool(row.get("manual") or "", where),
                manufacturer=(row.get("manufacturer") or "").strip(), atc=atc,
                ingredients=ingredients))
        return cls(drugs)
