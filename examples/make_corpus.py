"""Generate the bundled corpus: synthetic card transactions, one CSV record per line.

Columns: date, merchant category, amount, city, payment method, approved flag. The values
follow simple rules a model can learn (amounts depend on the category, weekends are busier,
online payments have no city), so a trained model's samples can be checked by eye and by
field count. Deterministic: the same seed writes the same file.

    python examples/make_corpus.py [-o examples/transactions.csv] [--records 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import tempfile

CATEGORIES = {  # category: (typical amount, spread)
    "groceries": (45.0, 20.0),
    "restaurant": (32.0, 15.0),
    "fuel": (60.0, 15.0),
    "pharmacy": (18.0, 10.0),
    "electronics": (240.0, 150.0),
    "travel": (410.0, 200.0),
    "books": (22.0, 8.0),
    "utilities": (95.0, 30.0),
}
CITIES = ["Lisbon", "Porto", "Madrid", "Lyon", "Berlin", "Vienna", "Oslo", "Turin"]
METHODS = ["card", "contactless", "online"]


def record(rng: random.Random, start: datetime.date) -> str:
    day = start + datetime.timedelta(days=rng.randrange(365))
    while day.weekday() < 5 and rng.random() < 0.3:  # weekends are busier
        day = start + datetime.timedelta(days=rng.randrange(365))
    category = rng.choice(list(CATEGORIES))
    mean, spread = CATEGORIES[category]
    amount = max(1.0, rng.gauss(mean, spread))
    method = rng.choice(METHODS)
    city = "" if method == "online" else rng.choice(CITIES)
    approved = "N" if amount > 500 and rng.random() < 0.5 else "Y"
    return f"{day.isoformat()},{category},{amount:.2f},{city},{method},{approved}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("-o", "--output", default=os.path.join(here, "transactions.csv"))
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    start = datetime.date(2025, 1, 1)
    text = "".join(record(rng, start) + "\n" for _ in range(args.records))
    directory = os.path.dirname(os.path.abspath(args.output))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".corpus-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.output)
    print(f"wrote {args.records} records ({len(text.encode()):,} bytes) to {args.output}")


if __name__ == "__main__":
    main()
