"""The privacy tests' accounting cases under the installed dp-accounting, for comparing two
installs: Python 3.11 pins dp-accounting 0.4.3 (tensorflow-privacy's pin) and numpy 1.26,
3.12 and later take dp-accounting 0.6.0 and numpy 2.

    python .ci/accounting_cases.py > A.json          (under each install)
    python .ci/accounting_cases.py --compare A.json B.json

What each case must show (measured in December 2026; see compiler/privacy/accounting.py):
- `same`: shuffling's composition of Gaussian mechanisms (closed-form RDP, no sampling):
  identical to 1e-9 relative (seen: 0).
- `pld`: PLD epsilons and the PLD noise search: 1e-7 relative. With one numpy the two
  dp-accounting versions give identical PLDs; numpy 2's FFT rounds differently (seen: at
  most 7.3e-9), and keraspec sizes PLD's grid and search bracket from RDP.
- `rdp`: RDP of Poisson-subsampled Gaussians, whose fractional orders' series 0.4.3 cut
  short: the newer epsilon is never lower, and at most 2% higher (seen: 0.3% on these
  cases, 1% at noise 0.5 and q 0.05; below 1e-6 at an effective noise of 1.5 or more, 1e-13
  at 1.1 with q below 0.002).
"""

import json
import sys


def cases() -> dict:
    from importlib.metadata import version

    from compiler.privacy.accounting import (
        compute_epsilon,
        epsilon_for_steps,
        noise_for_epsilon,
    )

    out: dict[str, dict] = {}

    def add(name: str, accountant: str, value: float, poisson: bool = True) -> None:
        if accountant == "pld":
            expect = "pld"
        elif poisson:
            expect = "rdp"
        else:
            expect = "same"
        out[f"{name} ({accountant})"] = {"value": value, "expect": expect}

    for examples, batch, epochs, noise, delta, micro in [
        (60000, 256, 15, 1.1, 1e-5, False),
        (60000, 256, 15, 1.1, 1e-5, True),
        (10000, 64, 3, 0.8, 1e-4, True),
        (10000, 32, 10, 1.1, 1e-4, False),
    ]:
        for accountant in ("rdp", "pld"):
            add(
                f"epsilon n={examples} b={batch} e={epochs} noise={noise} delta={delta} "
                f"microbatching={micro}",
                accountant,
                compute_epsilon(
                    noise_multiplier=noise,
                    batch_size=batch,
                    examples=examples,
                    epochs=epochs,
                    delta=delta,
                    microbatching=micro,
                    accountant=accountant,
                ),
            )
    for accountant in ("rdp", "pld"):
        add(
            "poisson q=32/20000 steps=1500 noise=1.1",
            accountant,
            epsilon_for_steps(1.1, 32 / 20000, 1500, 1e-6, False, accountant=accountant),
        )
        add(
            "poisson q=32/3376 steps=60 noise=1.0",
            accountant,
            epsilon_for_steps(1.0, 32 / 3376, 60, 1e-4, False, accountant=accountant),
        )
        add(
            "shuffle 3 epochs noise=1.1",
            accountant,
            epsilon_for_steps(
                1.1,
                32 / 20000,
                1251,
                1e-6,
                False,
                accountant=accountant,
                sampling="shuffle",
                per_epoch=625,
            ),
            poisson=False,
        )
        noise = noise_for_epsilon(
            target_epsilon=2.0,
            accountant=accountant,
            q=64 / 20000,
            steps=1560,
            delta=1e-5,
            microbatching=False,
        )
        add("noise for epsilon 2", accountant, noise)
    add(
        "microbatching noise=1.2",
        "rdp",
        epsilon_for_steps(1.2, 64 / 10000, 200, 1e-5, True, accountant="rdp"),
    )
    return {
        "dp_accounting": version("dp-accounting"),
        "numpy": version("numpy"),
        "python": sys.version.split()[0],
        "cases": out,
    }


def compare(old_path: str, new_path: str) -> int:
    old, new = (json.load(open(p)) for p in (old_path, new_path))
    failures, worst = [], {}
    for key, case in old["cases"].items():
        a, b = case["value"], new["cases"][key]["value"]
        rel = (b - a) / abs(a)
        kind = case["expect"]
        worst[kind] = max(worst.get(kind, 0.0), abs(rel))
        ok = {"same": abs(rel) <= 1e-9, "pld": abs(rel) <= 1e-7, "rdp": -1e-12 <= rel <= 0.02}[kind]
        if not ok:
            failures.append(f"  {key}: {a!r} -> {b!r} ({rel:+.3g}, expected {kind})")
    print(
        f"accounting: {len(old['cases'])} cases, dp-accounting {old['dp_accounting']} "
        f"(numpy {old['numpy']}, Python {old['python']}) vs {new['dp_accounting']} (numpy "
        f"{new['numpy']}, Python {new['python']}); largest relative difference: "
        + ", ".join(f"{k} {v:.2g}" for k, v in sorted(worst.items()))
    )
    if failures:
        print(
            "accounting differs beyond what is explained:\n" + "\n".join(failures), file=sys.stderr
        )
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    print(json.dumps(cases(), indent=1))
