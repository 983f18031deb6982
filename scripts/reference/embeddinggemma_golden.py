#!/usr/bin/env python3
"""Golden vectors for Kiln's EmbeddingGemma-300m engine, from the reference implementation.

Loads the files Kiln's model store installed (`kiln models pull embeddinggemma-300m`, by default
from ~/.cache/kiln/data/models/embeddinggemma-300m) with sentence-transformers on the CPU in
float32, embeds the sentences below with the prompt Kiln applies (the model's "document" prompt,
and its "query" prompt for the items marked so), and writes the vectors, rounded to 6 decimals,
with each input's token count, to the fixture that
crates/kiln-engine-bert/tests/embeddinggemma.rs compares Kiln's vectors against.

Run once, when the fixture needs to change:

    python3 -m venv ~/.cache/kiln/reference-venv
    ~/.cache/kiln/reference-venv/bin/pip install torch sentence-transformers
    ~/.cache/kiln/reference-venv/bin/python scripts/reference/embeddinggemma_golden.py

(PyPI's torch wheel carries CUDA libraries it does not need here; it runs on the CPU all the same.)
"""

import argparse
import json
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURE = REPO / "crates/kiln-engine-bert/tests/fixtures/embeddinggemma_golden.json"

# Long enough (well past 257 tokens with the prompt) that the sliding-window layers' bidirectional
# window, |query - key| <= 256, masks real positions.
LONG_TEXT = " ".join(
    f"Paragraph {n}: the river carried silt from the mountains to the delta, where farmers "
    f"planted rice in the spring and harvested it before the autumn floods of year {1900 + n}."
    for n in range(1, 25)
)

SENTENCES = [
    ("document", "A man is eating food."),
    ("document", "A man is eating a piece of bread."),
    ("document", "The stock market fell sharply today after the central bank raised rates."),
    ("document", "Hi"),
    ("document", "What is the capital of France?"),
    ("document", "Paris is the capital and most populous city of France."),
    ("document", "Le chat dort sur le canapé pendant que la pluie tombe dehors."),
    ("document", "Der schnelle braune Fuchs springt über den faulen Hund."),
    ("document", "¿Dónde está la biblioteca más cercana a la estación de tren?"),
    ("document", "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。"),
    ("document", "東京は日本の首都であり、世界有数の大都市です。"),
    ("document", "القاهرة هي عاصمة مصر وأكبر مدنها."),
    ("document", "Москва — столица России и крупнейший город страны."),
    ("document", "भारत एक विशाल और विविधतापूर्ण देश है।"),
    ("document", "fn main() { println!(\"Hello, world!\"); }"),
    ("document", "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 5;"),
    ("document", "The price rose from $3.50 to $4.25 (+21.4%) between 2019-03-01 and 2024-12-31."),
    ("document", "I love this! 🎉🔥 Best day ever 😀"),
    ("document", "   leading and trailing spaces   "),
    ("document", "Photosynthesis converts light energy into chemical energy stored in glucose, "
                 "releasing oxygen as a by-product; it takes place in the chloroplasts of plant "
                 "cells and depends on chlorophyll, water and carbon dioxide."),
    ("document", LONG_TEXT),
    ("query", "how do plants make food from sunlight"),
    ("query", "capital of France"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data_dir = Path(os.environ.get("KILN_DATA_DIR") or Path.home() / ".cache/kiln/data")
    parser.add_argument("--model-dir", type=Path, default=data_dir / "models/embeddinggemma-300m")
    parser.add_argument("--out", type=Path, default=DEFAULT_FIXTURE)
    args = parser.parse_args()

    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(str(args.model_dir), device="cpu")
    model = model.to(torch.float32)
    prompts = model.prompts
    tokenizer = model.tokenizer

    items = []
    for kind, text in SENTENCES:
        prompt = prompts[kind]
        vector = model.encode([text], prompt=prompt, convert_to_numpy=True, batch_size=1)[0]
        token_count = len(tokenizer(prompt + text, truncation=True, max_length=2048)["input_ids"])
        items.append(
            {
                "prompt": kind,
                "text": text,
                "tokens": token_count,
                "vector": [round(float(x), 6) for x in vector],
            }
        )

    fixture = {
        "model": "embeddinggemma-300m",
        "generated_by": "scripts/reference/embeddinggemma_golden.py",
        "reference": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "dtype": "float32",
            "device": "cpu",
        },
        "prompts": {"document": prompts["document"], "query": prompts["query"]},
        "dimensions": len(items[0]["vector"]),
        "items": items,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(fixture, out, ensure_ascii=False, separators=(",", ":"))
        out.write("\n")
    longest = max(item["tokens"] for item in items)
    print(f"wrote {len(items)} vectors ({longest} tokens at most) to {args.out}")


if __name__ == "__main__":
    main()
