#!/usr/bin/env python3
"""Reference fixtures for Kiln's text-classification and reranker engines (crates/kiln-engine-text).

No real DistilBERT-SST-2 or bge-reranker weights are available to Kiln's tests, so this script
builds a SMALL RANDOM model of each real architecture with Hugging Face `transformers`, saves it in
the Hugging Face layout (config.json, tokenizer.json, model.safetensors), and records what
`transformers` computes on the same files:

  distilbert-sst2-tiny/   DistilBertForSequenceClassification, id2label NEGATIVE / POSITIVE
                          (the architecture of @cf/huggingface/distilbert-sst-2-int8)
  bge-reranker-tiny/      XLMRobertaForSequenceClassification with one label: a cross-encoder
                          (the architecture of @cf/baai/bge-reranker-base)

Each directory also gets `reference.json`: token ids, raw logits and scores for several inputs, and
for the reranker the scores and order of query/context sets. The Rust tests
(crates/kiln-engine-text/tests/reference.rs) load the same files and must match the logits within
`tolerance` and the ranking exactly.

Tokenizers are built here from a small built-in corpus with the `tokenizers` library (a WordPiece
vocabulary like BERT's for DistilBERT, a Unigram one with XLM-R's special tokens for the reranker),
so the fixtures stay small; the script gives the same files every run. Weights are drawn with a fixed seed and a wide initializer range, so
different inputs get clearly different logits and rankings are not decided by rounding.

Run it once, when the fixtures need to change:

    python3 -m venv ~/.cache/kiln/reference-venv
    ~/.cache/kiln/reference-venv/bin/pip install torch transformers safetensors
    ~/.cache/kiln/reference-venv/bin/python scripts/reference/text_models.py
"""

import json
import math
import platform
import shutil
from collections import Counter
from pathlib import Path

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "crates/kiln-engine-text/tests/fixtures"

# Positions of the small models: inputs longer than this are refused, which the tests check
# without building a 512-token input.
MAX_POSITIONS = 128
# Logits agree with Kiln's within this (absolute); both run float32 on the CPU.
TOLERANCE = 1e-4
# Adjacent reranker scores in the reference differ by at least this, so the order is decided by
# the model and not by float rounding.
MIN_SCORE_GAP = 10 * TOLERANCE

CORPUS = [
    "The film was a delight from start to finish.",
    "A dull, lifeless script and wooden acting.",
    "I loved the soundtrack but the plot dragged.",
    "Worst purchase I have made this year; it broke in a week.",
    "The kiln fires clay at temperatures above a thousand degrees.",
    "Paris is the capital and most populous city of France.",
    "Berlin is the capital of Germany.",
    "Pottery is shaped on a wheel, dried, glazed and fired.",
    "Stoneware and porcelain need a hotter kiln than earthenware.",
    "The stock market fell sharply after the central bank raised rates.",
    "Photosynthesis turns light into chemical energy in plants.",
    "What is the capital of France?",
    "How hot does a pottery kiln get?",
    "Cats sleep for most of the day.",
    "A cyberpunk lizard and a cyberpunk cat walk into a bar.",
    "The service was friendly and the food arrived quickly.",
    "Terrible customer support, nobody answered my emails.",
    "An absolute masterpiece, moving and beautifully shot.",
    "Rust programs are fast and memory safe.",
    "Inference servers batch requests to use the hardware well.",
] * 4

CLASSIFY_TEXTS = [
    "The film was a delight from start to finish.",
    "A dull, lifeless script and wooden acting.",
    "Terrible customer support, nobody answered my emails.",
    "An absolute masterpiece!",
    "ok",
    "Zyxw qqq unseen-words 12345 €",
    "Pottery is shaped on a wheel, dried, glazed and fired; stoneware needs a hotter kiln.",
]

RERANK_CASES = [
    {
        "query": "What is the capital of France?",
        "contexts": [
            "Berlin is the capital of Germany.",
            "Paris is the capital and most populous city of France.",
            "Cats sleep for most of the day.",
            "The capital of France is Paris.",
        ],
    },
    {
        "query": "How hot does a pottery kiln get?",
        "contexts": [
            "The kiln fires clay at temperatures above a thousand degrees.",
            "Stoneware and porcelain need a hotter kiln than earthenware.",
            "Rust programs are fast and memory safe.",
            "The stock market fell sharply after the central bank raised rates.",
            "Pottery is shaped on a wheel, dried, glazed and fired.",
        ],
    },
    {
        "query": "Which one is cooler?",
        "contexts": ["a cyberpunk lizard", "a cyberpunk cat"],
    },
]

# Longer than MAX_POSITIONS tokens with either tokenizer.
OVERLONG_TEXT = " ".join(["kiln pottery clay glaze fire"] * 40)


def corpus_words(tokenizer: Tokenizer) -> Counter:
    """Each word of the corpus as `tokenizer` normalizes and pre-tokenizes it, with its count."""
    counts = Counter()
    for text in CORPUS:
        normalized = tokenizer.normalizer.normalize_str(text)
        counts.update(word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    return counts


def wordpiece_tokenizer() -> Tokenizer:
    """A BERT-style WordPiece vocabulary made from the corpus: every word whole, every character
    alone and as a `##` continuation, and a few suffixes (built, not trained: training breaks
    frequency ties differently from run to run)."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    shaper = Tokenizer(models.WordPiece(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    shaper.normalizer = normalizers.BertNormalizer(lowercase=True)
    shaper.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = corpus_words(shaper)
    chars = sorted({char for word in words for char in word})
    suffixes = ["##s", "##ed", "##ing", "##er", "##ly", "##est"]
    pieces = special + chars + [f"##{c}" for c in chars] + suffixes + sorted(words)
    vocab = {piece: index for index, piece in enumerate(dict.fromkeys(pieces))}
    tokenizer = Tokenizer(
        models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100)
    )
    tokenizer.normalizer = shaper.normalizer
    tokenizer.pre_tokenizer = shaper.pre_tokenizer
    tokenizer.add_special_tokens(special)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def unigram_tokenizer() -> Tokenizer:
    """A SentencePiece-style Unigram vocabulary made from the corpus, with XLM-R's special tokens
    and ids (<s> 0, <pad> 1, </s> 2, <unk> 3): every `▁word` scored by its frequency, and every
    character at a low score so unseen words split into characters."""
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    shaper = Tokenizer(models.Unigram([("<unk>", 0.0)], 0))
    shaper.normalizer = normalizers.NFKC()
    shaper.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    words = corpus_words(shaper)
    total = sum(words.values())
    chars = sorted({char for word in words for char in word})
    scored = [(piece, 0.0) for piece in special]
    scored += [(word, math.log(words[word] / total)) for word in sorted(words)]
    scored += [(char, -12.0) for char in chars if char not in words]
    tokenizer = Tokenizer(models.Unigram(scored, 3))
    tokenizer.normalizer = shaper.normalizer
    tokenizer.pre_tokenizer = shaper.pre_tokenizer
    tokenizer.add_special_tokens(special)
    assert [tokenizer.token_to_id(t) for t in special] == [0, 1, 2, 3]
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tokenizer


def padded(batch_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch_ids)
    ids = [row + [pad_id] * (width - len(row)) for row in batch_ids]
    mask = [[1] * len(row) + [0] * (width - len(row)) for row in batch_ids]
    return torch.tensor(ids), torch.tensor(mask)


def logits_of(model, batch_ids: list[list[int]], pad_id: int) -> torch.Tensor:
    """One padded forward pass, checked against each input run alone."""
    input_ids, mask = padded(batch_ids, pad_id)
    with torch.no_grad():
        together = model(input_ids=input_ids, attention_mask=mask).logits
        for row, ids in enumerate(batch_ids):
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            assert torch.allclose(alone, together[row], atol=1e-5), "padding changed a logit"
    return together


def save(model, tokenizer: Tokenizer, name: str) -> Path:
    out = FIXTURES / name
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save(str(out / "tokenizer.json"))
    # save_pretrained may add a generation config; Kiln reads only these three files.
    for extra in out.iterdir():
        if extra.name not in ("config.json", "model.safetensors", "tokenizer.json"):
            extra.unlink()
    return out


def provenance() -> dict:
    return {
        "script": "scripts/reference/text_models.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "python": platform.python_version(),
    }


def build_classifier() -> None:
    tokenizer = wordpiece_tokenizer()
    config = transformers.DistilBertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        activation="gelu",
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=0.3,
        pad_token_id=tokenizer.token_to_id("[PAD]"),
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    torch.manual_seed(18)
    model = transformers.DistilBertForSequenceClassification(config).eval()
    out = save(model, tokenizer, "distilbert-sst2-tiny")
    model = transformers.DistilBertForSequenceClassification.from_pretrained(out).eval()

    ids = [tokenizer.encode(text).ids for text in CLASSIFY_TEXTS]
    logits = logits_of(model, ids, config.pad_token_id)
    cases = []
    for text, token_ids, row in zip(CLASSIFY_TEXTS, ids, logits):
        probabilities = torch.softmax(row, dim=-1).tolist()
        ranked = sorted(zip(config.id2label.values(), probabilities), key=lambda p: -p[1])
        cases.append({
            "text": text,
            "token_ids": token_ids,
            "logits": row.tolist(),
            "scores": [{"label": label, "score": score} for label, score in ranked],
        })
    assert len(tokenizer.encode(OVERLONG_TEXT).ids) > MAX_POSITIONS
    reference = {
        "architecture": "DistilBertForSequenceClassification",
        "tolerance": TOLERANCE,
        "max_input_tokens": MAX_POSITIONS,
        "labels": list(config.id2label.values()),
        "overlong_text": OVERLONG_TEXT,
        "cases": cases,
        "generated_by": provenance(),
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


def build_reranker() -> None:
    tokenizer = unigram_tokenizer()
    config = transformers.XLMRobertaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        # XLM-R's positions start after the padding id, as bge-reranker-base's 514 do.
        max_position_embeddings=MAX_POSITIONS + 2,
        type_vocab_size=1,
        initializer_range=0.3,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
    )
    torch.manual_seed(18)
    model = transformers.XLMRobertaForSequenceClassification(config).eval()
    out = save(model, tokenizer, "bge-reranker-tiny")
    model = transformers.XLMRobertaForSequenceClassification.from_pretrained(out).eval()

    cases = []
    for case in RERANK_CASES:
        pairs = [tokenizer.encode(case["query"], context).ids for context in case["contexts"]]
        logits = logits_of(model, pairs, config.pad_token_id)[:, 0].tolist()
        order = sorted(range(len(logits)), key=lambda i: -logits[i])
        gaps = [logits[a] - logits[b] for a, b in zip(order, order[1:])]
        assert min(gaps) > MIN_SCORE_GAP, f"scores too close to rank reliably: {logits}"
        cases.append({
            **case,
            "token_ids": pairs,
            "logits": logits,
            "order": order,
        })
    overlong = tokenizer.encode("a query", OVERLONG_TEXT).ids
    assert len(overlong) > MAX_POSITIONS
    reference = {
        "architecture": "XLMRobertaForSequenceClassification",
        "tolerance": TOLERANCE,
        "max_input_tokens": MAX_POSITIONS,
        "overlong_text": OVERLONG_TEXT,
        "cases": cases,
        "generated_by": provenance(),
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


def main() -> None:
    torch.set_num_threads(1)
    build_classifier()
    build_reranker()
    for path in sorted(FIXTURES.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(REPO)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
