#!/usr/bin/env python3
"""Writes a patient/lab CSV of a given size for the CSV streaming benchmark.

    python3 engine/benches/gen_lab_csv.py /tmp/lab_100mb.csv 100

The columns are those of fixtures/csv/lab_results.csv (the `csv-lab` channel's script maps
them); every 50th row has a quoted field with an embedded delimiter, quote and newline, so the
reader's slow path is exercised too. Deterministic: the same size gives the same file.
Target (issue 9): a 100 MB file streams through with resident memory under 128 MB.
"""
import sys

HEADER = "mrn,family,given,birth_date,sex,loinc,test_name,value,unit,ref_low,ref_high,collected_at\n"
TESTS = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mmol/L", 3.9, 6.1),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/L", 120, 160),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "umol/L", 45, 90),
]
FAMILIES = ["Lindqvist", "Nguyễn", "Okafor", "Dupont", "Øyen-Müller", "Smith"]
GIVENS = ["Åsa", "Thị Lan", "Chidi", "Zoé", "Åse", "John"]


def main(path: str, megabytes: float) -> None:
    target = int(megabytes * 1024 * 1024)
    written = 0
    i = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(HEADER)
        written += len(HEADER.encode())
        while written < target:
            i += 1
            code, name, unit, low, high = TESTS[i % len(TESTS)]
            family = FAMILIES[i % len(FAMILIES)]
            if i % 50 == 0:
                family = f'"{family}, ""jr""\nline two"'
            value = round(low + (high - low) * ((i * 7919) % 1000) / 800, 1)
            day = 1 + i % 28
            row = (
                f"MRN-{i % 100000:06d},{family},{GIVENS[i % len(GIVENS)]},"
                f"19{50 + i % 50}-0{1 + i % 9}-{day:02d},{'FM'[i % 2]},{code},{name},"
                f"{value},{unit},{low},{high},2026-11-{day:02d}T08:{i % 60:02d}:00Z\n"
            )
            f.write(row)
            written += len(row.encode())
    print(f"{path}: {written} bytes, {i} rows")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 100)
