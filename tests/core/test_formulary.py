"""The demo formulary is generated, complete and valid."""

from __future__ import annotations

import importlib.util
from decimal import Decimal

import pytest

from dispenser.core.formulary import Formulary, FormularyError, gtin_check_digit, is_valid_gtin14
from dispenser.testing.data import ROOT


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_formulary",
                                                  ROOT / "scripts" / "gen_formulary.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_csv_matches_the_generator() -> None:
    committed = (ROOT / "dispenser" / "data" / "formulary.csv").read_text(encoding="utf-8")
    assert _generator().render() == committed, "run scripts/gen_formulary.py and commit"


def test_formulary_has_1400_valid_drugs(formulary: Formulary) -> None:
    assert len(formulary) == 1400
    assert all(is_valid_gtin14(code) for code in formulary)
    names = {d.name for d in formulary.values()}
    for name in ("metformin", "insulin glargine", "insulin aspart", "insulin lispro",
                 "insulin degludec", "gliclazide", "glimepiride", "sitagliptin", "linagliptin",
                 "dapagliflozin", "empagliflozin", "pioglitazone", "acarbose", "liraglutide",
                 "amlodipine", "valsartan", "losartan", "irbesartan", "enalapril",
                 "atorvastatin", "rosuvastatin", "clopidogrel", "bisoprolol", "epalrestat",
                 "mecobalamin", "calcium dobesilate"):
        assert name in names, name


def test_insulins_and_glp1_pens_are_fridge_items(formulary: Formulary) -> None:
    for d in formulary.values():
        if "insulin" in d.name or d.name in ("liraglutide", "dulaglutide", "semaglutide",
                                             "exenatide"):
            assert d.fridge and not d.robot, d
    assert any(d.manual for d in formulary.values())
    assert all(Decimal(0) <= d.reimbursement_rate <= 1 for d in formulary.values())


def test_check_digit() -> None:
    assert gtin_check_digit("0950110102091") == "7"  # GS1 example 09501101020917
    assert is_valid_gtin14("09501101020917")
    assert not is_valid_gtin14("09501101020918")


def test_malformed_rows_are_named() -> None:
    row = {"drug_code": "09501101020918", "name": "x", "strength": "1 mg", "form": "tablet",
           "pack_size": "10", "price": "1.00", "reimbursement_rate": "0.5", "fridge": "false",
           "atc": "A10BA02", "ingredients": "metformin"}
    with pytest.raises(FormularyError, match=r"line 2.*GTIN"):
        Formulary.from_rows([row])
    row["drug_code"] = "09501101020917"
    row["fridge"] = "maybe"
    with pytest.raises(FormularyError, match="true/false"):
        Formulary.from_rows([row])
