#!/usr/bin/env python3
"""Generate the demo formulary (1,400 drugs), deterministically: the package data
``dispenser/data/formulary.csv`` the daemon uses when no ``[formulary] path`` is set.

Real names of diabetes medicines and of medicines for its complications (hypertension,
lipids, cardio-/cerebrovascular, neuropathy, retinopathy) in several strengths, forms, pack
sizes and manufacturers, each with its WHO ATC code and active ingredients (INN). GTIN-14
codes carry valid check digits. Insulins and GLP-1 pens are fridge items; bulky kits and
bottles are manual items.

Usage: scripts/gen_formulary.py [OUTPUT]   (default dispenser/data/formulary.csv)
"""

from __future__ import annotations

import csv
import io
import random
import sys
from decimal import Decimal
from pathlib import Path

COUNT = 1400
SEED = 20261123
COLUMNS = ("drug_code", "name", "strength", "form", "pack_size", "price",
           "reimbursement_rate", "fridge", "manual", "manufacturer", "atc", "ingredients")

# Product name -> (WHO ATC code, its active ingredients by INN, ";"-separated). Codes from
# the WHO ATC/DDD index. Epalrestat has no WHO code: it carries a local code in the WHO
# group of the aldose reductase inhibitors (A10XA, where tolrestat is A10XA01), marked
# "-L" so that it can never be taken for (or collide with) a WHO code. Biphasic and
# isophane insulins are their own therapy (a patient may take a basal and a prandial
# preparation of one molecule together), as the ATC index keeps them apart.
IDENTITY = {
    "metformin": ("A10BA02", "metformin"),
    "metformin extended-release": ("A10BA02", "metformin"),
    "insulin glargine": ("A10AE04", "insulin glargine"),
    "insulin aspart": ("A10AB05", "insulin aspart"),
    "insulin aspart 30": ("A10AD05", "insulin aspart biphasic"),
    "insulin lispro": ("A10AB04", "insulin lispro"),
    "insulin lispro 25": ("A10AD04", "insulin lispro biphasic"),
    "insulin degludec": ("A10AE06", "insulin degludec"),
    "insulin detemir": ("A10AE05", "insulin detemir"),
    "human insulin": ("A10AB01", "insulin human"),
    "isophane insulin": ("A10AC01", "insulin human isophane"),
    "liraglutide": ("A10BJ02", "liraglutide"),
    "dulaglutide": ("A10BJ05", "dulaglutide"),
    "semaglutide": ("A10BJ06", "semaglutide"),
    "exenatide": ("A10BJ01", "exenatide"),
    "gliclazide": ("A10BB09", "gliclazide"),
    "gliclazide modified-release": ("A10BB09", "gliclazide"),
    "glimepiride": ("A10BB12", "glimepiride"),
    "glipizide": ("A10BB07", "glipizide"),
    "gliquidone": ("A10BB08", "gliquidone"),
    "repaglinide": ("A10BX02", "repaglinide"),
    "nateglinide": ("A10BX03", "nateglinide"),
    "sitagliptin": ("A10BH01", "sitagliptin"),
    "sitagliptin/metformin": ("A10BD07", "sitagliptin;metformin"),
    "linagliptin": ("A10BH05", "linagliptin"),
    "saxagliptin": ("A10BH03", "saxagliptin"),
    "vildagliptin": ("A10BH02", "vildagliptin"),
    "alogliptin": ("A10BH04", "alogliptin"),
    "dapagliflozin": ("A10BK01", "dapagliflozin"),
    "empagliflozin": ("A10BK03", "empagliflozin"),
    "canagliflozin": ("A10BK02", "canagliflozin"),
    "pioglitazone": ("A10BG03", "pioglitazone"),
    "rosiglitazone": ("A10BG02", "rosiglitazone"),
    "acarbose": ("A10BF01", "acarbose"),
    "voglibose": ("A10BF03", "voglibose"),
    "miglitol": ("A10BF02", "miglitol"),
    "glucagon": ("H04AA01", "glucagon"),
    "amlodipine": ("C08CA01", "amlodipine"),
    "nifedipine controlled-release": ("C08CA05", "nifedipine"),
    "felodipine": ("C08CA02", "felodipine"),
    "valsartan": ("C09CA03", "valsartan"),
    "losartan": ("C09CA01", "losartan"),
    "irbesartan": ("C09CA04", "irbesartan"),
    "telmisartan": ("C09CA07", "telmisartan"),
    "candesartan": ("C09CA06", "candesartan"),
    "enalapril": ("C09AA02", "enalapril"),
    "benazepril": ("C09AA07", "benazepril"),
    "perindopril": ("C09AA04", "perindopril"),
    "hydrochlorothiazide": ("C03AA03", "hydrochlorothiazide"),
    "indapamide": ("C03BA11", "indapamide"),
    "metoprolol succinate": ("C07AB02", "metoprolol"),
    "metoprolol tartrate": ("C07AB02", "metoprolol"),
    "bisoprolol": ("C07AB07", "bisoprolol"),
    "atorvastatin": ("C10AA05", "atorvastatin"),
    "rosuvastatin": ("C10AA07", "rosuvastatin"),
    "simvastatin": ("C10AA01", "simvastatin"),
    "pitavastatin": ("C10AA08", "pitavastatin"),
    "ezetimibe": ("C10AX09", "ezetimibe"),
    "fenofibrate": ("C10AB05", "fenofibrate"),
    "aspirin enteric-coated": ("B01AC06", "acetylsalicylic acid"),
    "clopidogrel": ("B01AC04", "clopidogrel"),
    "ticagrelor": ("B01AC24", "ticagrelor"),
    "cilostazol": ("B01AC23", "cilostazol"),
    "beraprost sodium": ("B01AC19", "beraprost"),
    "epalrestat": ("A10XA-L01", "epalrestat"),
    "mecobalamin": ("B03BA05", "mecobalamin"),
    "alpha-lipoic acid": ("A16AX01", "thioctic acid"),
    "calcium dobesilate": ("C05BX01", "calcium dobesilate"),
    "pregabalin": ("N03AX16", "pregabalin"),
    "duloxetine": ("N06AX21", "duloxetine"),
    "isosorbide mononitrate": ("C01DA14", "isosorbide mononitrate"),
    "trimetazidine": ("C01EB15", "trimetazidine"),
    "atorvastatin/amlodipine": ("C10BX03", "atorvastatin;amlodipine"),
    "lactulose": ("A06AD11", "lactulose"),
    "sacubitril/valsartan": ("C09DX04", "sacubitril;valsartan"),
    "spironolactone": ("C03DA01", "spironolactone"),
    "furosemide": ("C03CA01", "furosemide"),
    "levothyroxine": ("H03AA01", "levothyroxine"),
    "calcitriol": ("A11CC04", "calcitriol"),
    "sevelamer": ("V03AE02", "sevelamer"),
}

# name | form | strengths | pack sizes | base price per pack (CNY) | reimbursement | flags
TABLE = """
metformin | tablet | 250 mg; 500 mg; 850 mg; 1000 mg | 30 48 60 100 | 12 | 0.80 | -
metformin extended-release | tablet | 500 mg; 750 mg; 1000 mg | 30 60 | 28 | 0.80 | -
insulin glargine | prefilled pen | 100 U/mL 3 mL | 1 3 5 | 180 | 0.80 | fridge
insulin aspart | prefilled pen | 100 U/mL 3 mL | 1 3 5 | 160 | 0.80 | fridge
insulin aspart 30 | prefilled pen | 100 U/mL 3 mL | 1 3 5 | 165 | 0.80 | fridge
insulin lispro | prefilled pen | 100 U/mL 3 mL; 200 U/mL 3 mL | 1 5 | 170 | 0.80 | fridge
insulin lispro 25 | cartridge | 100 U/mL 3 mL | 1 5 | 150 | 0.80 | fridge
insulin degludec | prefilled pen | 100 U/mL 3 mL; 200 U/mL 3 mL | 1 5 | 260 | 0.70 | fridge
insulin detemir | prefilled pen | 100 U/mL 3 mL | 1 5 | 210 | 0.80 | fridge
human insulin | vial | 100 U/mL 10 mL; 40 U/mL 10 mL | 1 | 60 | 0.90 | fridge
isophane insulin | cartridge | 100 U/mL 3 mL | 1 5 | 55 | 0.90 | fridge
liraglutide | prefilled pen | 6 mg/mL 3 mL | 1 2 3 | 410 | 0.70 | fridge
dulaglutide | prefilled pen | 0.75 mg/0.5 mL; 1.5 mg/0.5 mL | 1 2 4 | 460 | 0.70 | fridge
semaglutide | prefilled pen | 0.25 mg; 0.5 mg; 1 mg | 1 | 680 | 0.70 | fridge
exenatide | prefilled pen | 5 ug; 10 ug | 1 | 420 | 0.70 | fridge
gliclazide | tablet | 40 mg; 80 mg | 30 60 | 15 | 0.90 | -
gliclazide modified-release | tablet | 30 mg; 60 mg | 30 60 | 38 | 0.80 | -
glimepiride | tablet | 1 mg; 2 mg; 4 mg | 15 30 | 22 | 0.90 | -
glipizide | tablet | 2.5 mg; 5 mg | 30 48 100 | 10 | 0.90 | -
gliquidone | tablet | 30 mg | 24 48 | 26 | 0.80 | -
repaglinide | tablet | 0.5 mg; 1 mg; 2 mg | 30 | 30 | 0.80 | -
nateglinide | tablet | 120 mg | 12 24 | 34 | 0.80 | -
sitagliptin | tablet | 25 mg; 50 mg; 100 mg | 7 14 28 | 95 | 0.70 | -
sitagliptin/metformin | tablet | 50 mg/500 mg; 50 mg/850 mg | 28 56 | 120 | 0.70 | -
linagliptin | tablet | 5 mg | 7 10 30 | 110 | 0.70 | -
saxagliptin | tablet | 2.5 mg; 5 mg | 7 14 28 | 98 | 0.70 | -
vildagliptin | tablet | 50 mg | 14 28 56 | 85 | 0.70 | -
alogliptin | tablet | 6.25 mg; 12.5 mg; 25 mg | 10 28 | 90 | 0.70 | -
dapagliflozin | tablet | 5 mg; 10 mg | 14 28 30 | 105 | 0.70 | -
empagliflozin | tablet | 10 mg; 25 mg | 10 30 | 115 | 0.70 | -
canagliflozin | tablet | 100 mg; 300 mg | 10 30 | 100 | 0.70 | -
pioglitazone | tablet | 15 mg; 30 mg | 7 14 28 | 25 | 0.80 | -
rosiglitazone | tablet | 4 mg | 14 28 | 22 | 0.80 | -
acarbose | tablet | 50 mg; 100 mg | 30 60 | 40 | 0.90 | -
voglibose | tablet | 0.2 mg | 30 60 | 35 | 0.80 | -
miglitol | tablet | 50 mg | 30 | 45 | 0.80 | -
glucagon | injection kit | 1 mg | 1 | 190 | 0.50 | manual
amlodipine | tablet | 2.5 mg; 5 mg; 10 mg | 7 14 28 | 18 | 0.90 | -
nifedipine controlled-release | tablet | 30 mg; 60 mg | 7 14 28 | 32 | 0.90 | -
felodipine | tablet | 2.5 mg; 5 mg | 10 20 30 | 24 | 0.80 | -
valsartan | capsule | 40 mg; 80 mg; 160 mg | 7 14 28 | 30 | 0.80 | -
losartan | tablet | 50 mg; 100 mg | 7 14 28 | 28 | 0.80 | -
irbesartan | tablet | 75 mg; 150 mg; 300 mg | 7 14 28 | 26 | 0.80 | -
telmisartan | tablet | 20 mg; 40 mg; 80 mg | 7 14 28 | 27 | 0.80 | -
candesartan | tablet | 4 mg; 8 mg | 7 14 28 | 29 | 0.80 | -
enalapril | tablet | 5 mg; 10 mg | 16 32 | 9 | 0.90 | -
benazepril | tablet | 5 mg; 10 mg | 14 28 | 21 | 0.90 | -
perindopril | tablet | 4 mg; 8 mg | 30 | 33 | 0.80 | -
hydrochlorothiazide | tablet | 12.5 mg; 25 mg | 30 100 | 6 | 0.90 | -
indapamide | tablet | 1.5 mg; 2.5 mg | 10 30 | 14 | 0.90 | -
metoprolol succinate | tablet | 23.75 mg; 47.5 mg; 95 mg | 7 14 28 | 31 | 0.80 | -
metoprolol tartrate | tablet | 25 mg; 50 mg | 20 60 | 8 | 0.90 | -
bisoprolol | tablet | 2.5 mg; 5 mg | 10 18 30 | 19 | 0.90 | -
atorvastatin | tablet | 10 mg; 20 mg; 40 mg | 7 14 28 | 35 | 0.80 | -
rosuvastatin | tablet | 5 mg; 10 mg; 20 mg | 7 14 28 | 37 | 0.80 | -
simvastatin | tablet | 20 mg; 40 mg | 10 28 | 16 | 0.90 | -
pitavastatin | tablet | 1 mg; 2 mg | 7 14 28 | 39 | 0.70 | -
ezetimibe | tablet | 10 mg | 5 10 30 | 48 | 0.70 | -
fenofibrate | capsule | 200 mg | 10 20 30 | 29 | 0.80 | -
aspirin enteric-coated | tablet | 100 mg | 30 60 100 | 14 | 0.90 | -
clopidogrel | tablet | 25 mg; 75 mg | 7 14 28 | 45 | 0.80 | -
ticagrelor | tablet | 60 mg; 90 mg | 14 28 | 88 | 0.70 | -
cilostazol | tablet | 50 mg; 100 mg | 12 30 | 36 | 0.80 | -
beraprost sodium | tablet | 20 ug; 40 ug | 10 20 | 58 | 0.70 | -
epalrestat | tablet | 50 mg | 10 20 30 | 34 | 0.80 | -
mecobalamin | tablet | 0.5 mg | 20 50 | 25 | 0.80 | -
alpha-lipoic acid | capsule | 200 mg; 300 mg | 20 30 | 62 | 0.70 | -
calcium dobesilate | capsule | 250 mg; 500 mg | 20 30 | 42 | 0.80 | -
pregabalin | capsule | 75 mg; 150 mg | 8 14 28 | 55 | 0.70 | -
duloxetine | capsule | 20 mg; 30 mg; 60 mg | 7 14 28 | 64 | 0.70 | -
isosorbide mononitrate | tablet | 20 mg; 40 mg | 24 48 | 17 | 0.90 | -
trimetazidine | tablet | 20 mg; 35 mg | 30 60 | 33 | 0.80 | -
atorvastatin/amlodipine | tablet | 10 mg/5 mg; 20 mg/5 mg | 7 14 28 | 52 | 0.70 | -
lactulose | oral solution | 667 mg/mL 100 mL; 667 mg/mL 200 mL | 1 | 39 | 0.70 | manual
sacubitril/valsartan | tablet | 50 mg; 100 mg; 200 mg | 14 28 | 125 | 0.70 | -
spironolactone | tablet | 20 mg | 30 100 | 7 | 0.90 | -
furosemide | tablet | 20 mg | 30 100 | 5 | 0.90 | -
levothyroxine | tablet | 25 ug; 50 ug; 100 ug | 30 100 | 24 | 0.90 | -
calcitriol | capsule | 0.25 ug | 10 20 | 30 | 0.80 | -
sevelamer | tablet | 800 mg | 36 180 | 150 | 0.70 | manual
"""

Entry = tuple[str, str, tuple[str, ...], tuple[int, ...], float, str, bool, bool]


def drugs() -> list[Entry]:
    out = []
    for line in TABLE.strip().splitlines():
        name, form, strengths, packs, base, rate, flags = (f.strip() for f in line.split("|"))
        out.append((name, form, tuple(s.strip() for s in strengths.split(";")),
                    tuple(int(n) for n in packs.split()), float(base), rate,
                    "fridge" in flags, "manual" in flags))
    return out


MANUFACTURERS = (
    "Sino-American Tianjin Smith Kline", "Tianjin Tasly", "Zhejiang Huahai",
    "Beijing Double-Crane", "Jiangsu Hengrui", "Shijiazhuang Pharma", "Sanofi",
    "Novo Nordisk", "Merck Sharp & Dohme", "AstraZeneca", "Boehringer Ingelheim",
    "Lilly", "Bayer", "Servier", "Qilu Pharmaceutical", "Tonghua Dongbao",
)


def gtin14(n: int) -> str:
    body = f"0690{n // 100000:04d}{n % 100000:05d}"[:13].rjust(13, "0")
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def rows() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    combos = []
    for name, form, strengths, packs, base, rate, fridge, manual in drugs():
        for s_i, strength in enumerate(strengths):
            for pack in packs:
                for maker in MANUFACTURERS:
                    combos.append((name, form, strength, s_i, pack, maker, base, rate,
                                   fridge, manual))
    # Every drug name in at least one variant, then a seeded sample for the rest.
    rng.shuffle(combos)
    chosen: list[tuple[str, str, str, int, int, str, float, str, bool, bool]] = []
    seen_names: set[str] = set()
    for c in combos:
        if c[0] not in seen_names:
            seen_names.add(c[0])
            chosen.append(c)
    rest = [c for c in combos if c not in chosen]
    chosen += rest[: COUNT - len(chosen)]
    chosen.sort(key=lambda c: (c[0], c[3], c[4], c[5]))
    out = []
    for i, (name, form, strength, s_i, pack, maker, base, rate, fridge, manual) in enumerate(
            chosen):
        unit = base * (1 + 0.35 * s_i) / 30
        price = Decimal(str(round(max(1.0, unit * pack * rng.uniform(0.8, 1.25)), 2)))
        out.append({
            "drug_code": gtin14(1000 + i * 7),
            "name": name, "strength": strength, "form": form, "pack_size": str(pack),
            "price": f"{price:.2f}", "reimbursement_rate": rate,
            "fridge": "true" if fridge else "false", "manual": "true" if manual else "false",
            "manufacturer": maker, "atc": IDENTITY[name][0],
            "ingredients": IDENTITY[name][1],
        })
    return out


def render() -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows())
    return buf.getvalue()


def main(argv: list[str]) -> int:
    default = Path(__file__).resolve().parent.parent / "dispenser" / "data" / "formulary.csv"
    out = Path(argv[1]) if len(argv) > 1 else default
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
