"""A synthetic ShareGPT corpus shaped like m-a-p/neo_sft_phase2: CJK and English text, code,
1 to 10 rounds, system prompts, and a few bad records of every skip reason.

    python bench/corpus.py OUT.json --mb 200
"""

from __future__ import annotations

import argparse
import json
import random

_CJK = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"
_EN = "the model answers each question with care and shows its reasoning step by step before giving a final result".split()
_CODE = 'def f(x):\n    """Return x squared."""\n    return x ** 2\n\nprint(f(3))  # {"k": [1, 2]}\n'


def _text(rng: random.Random, lo: int, hi: int) -> str:
    kind = rng.random()
    n = rng.randint(lo, hi)
    if kind < 0.7:
        return "".join(rng.choices(_CJK, k=n)) + "。"
    if kind < 0.9:
        return " ".join(rng.choices(_EN, k=max(1, n // 4))) + "."
    return "请看下面的代码：\n```python\n" + _CODE * max(1, n // 80) + "```\n"


def record(rng: random.Random) -> object:
    """One record; about 3% are bad, spread over every skip reason."""
    bad = rng.random()
    rounds = min(10, 1 + int(rng.expovariate(0.8)))  # mostly 1 to 3, up to 10
    turns = []
    if rng.random() < 0.1:
        turns.append({"from": "system", "value": "你是一个乐于助人的助手。"})
    for _ in range(rounds):
        turns.append({"from": rng.choice(("human", "user")), "value": _text(rng, 10, 150)})
        turns.append({"from": rng.choice(("gpt", "assistant")), "value": _text(rng, 30, 500)})
    if bad < 0.005:
        return {"conversations": "not a list"}
    if bad < 0.01:
        return {"conversations": [{"from": "human", "value": "only a question"}]}
    if bad < 0.02:
        turns.append({"from": "gpt", "value": "a second answer"})
    elif bad < 0.03:
        turns[-1]["value"] = "   "
    elif bad < 0.1:
        turns.append({"from": "human", "value": "an unanswered question"})
    return {"conversations": turns, "id": rng.randrange(1 << 30)}


def write(path: str, megabytes: float, seed: int = 0) -> int:
    """Write a JSON array of at least `megabytes` MB to `path`; returns the record count."""
    rng = random.Random(seed)
    target, size, count = megabytes * 1e6, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        while size < target:
            line = json.dumps(record(rng), ensure_ascii=False)
            f.write(("" if count == 0 else ",\n") + line)
            size += len(line.encode())
            count += 1
        f.write("\n]\n")
    return count


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=200)
    args = ap.parse_args()
    print(f"{write(args.out, args.mb)} records -> {args.out}")
