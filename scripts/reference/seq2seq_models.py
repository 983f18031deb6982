#!/usr/bin/env python3
"""Reference fixtures for Kiln's translation and summarization engine (crates/kiln-engine-seq2seq).

No real m2m100, opus-mt or bart-large-cnn weights are available to Kiln's tests, so this script
builds a SMALL RANDOM model of each real encoder-decoder architecture with Hugging Face
`transformers`, saves it in the Hugging Face layout (config.json, generation_config.json when
transformers writes one, tokenizer.json, model.safetensors), and records what `transformers`
computes on the same files:

  m2m100-tiny/   M2M100ForConditionalGeneration: pre-LayerNorm, sinusoidal positions after the
                 padding id, scale_embedding; language tokens `__en__`, `__fr__`, … (the
                 architecture of @cf/meta/m2m100-1.2b)
  marian-tiny/   MarianMTModel: post-LayerNorm, sinusoidal positions from 0, scale_embedding,
                 final_logits_bias, decoding starts at <pad> and never emits it (opus-mt)
  bart-tiny/     BartForConditionalGeneration: post-LayerNorm, learned positions (offset 2),
                 layernorm_embedding, final_logits_bias, forced <s> and forced </s> (the
                 architecture of @cf/facebook/bart-large-cnn)

Each directory also gets `reference.json`: for several inputs the source token ids, a slice of
the encoder output, the first decoding step's logits (a slice), and the greedy continuation
`model.generate(do_sample=False, num_beams=1, max_new_tokens=MAX_NEW_TOKENS)` as ids and as text.
The Rust tests (crates/kiln-engine-seq2seq/tests/reference.rs) load the same files and must match
the floats within `tolerance` and the generated ids exactly.

M2M100's own tokenizer is a slow SentencePiece one with no tokenizer.json; Kiln reads a
tokenizer.json and builds the source as M2M100Tokenizer does: the source language token, the
text's pieces, `</s>`. This script builds the ids the same way.

Tokenizers are built from a small built-in corpus (no training, so every run gives the same
files); weights are drawn with a fixed seed and a wide initializer range, and final_logits_bias
is filled with random values so that Kiln's handling of it is checked. Every greedy step's best
logit leads the runner-up by at least MIN_MARGIN, so the continuation is decided by the model,
not by float rounding.

Run it once, when the fixtures need to change:

    python3 -m venv ~/.cache/kiln/reference-venv
    ~/.cache/kiln/reference-venv/bin/pip install torch transformers safetensors
    ~/.cache/kiln/reference-venv/bin/python scripts/reference/seq2seq_models.py
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
FIXTURES = REPO / "crates/kiln-engine-seq2seq/tests/fixtures"

MAX_POSITIONS = 64
MAX_NEW_TOKENS = 12
TOLERANCE = 1e-4
MIN_MARGIN = 10 * TOLERANCE
# How many leading values of each float vector reference.json keeps.
SLICE = 16
EMBEDDING_SHRINK = 0.3
LANGUAGES = ["en", "fr", "de", "es", "it", "ja", "zh"]

CORPUS = [
    "The film was a delight from start to finish.",
    "Paris is the capital and most populous city of France.",
    "Berlin is the capital of Germany.",
    "The kiln fires clay at temperatures above a thousand degrees.",
    "Pottery is shaped on a wheel, dried, glazed and fired.",
    "Stoneware and porcelain need a hotter kiln than earthenware.",
    "The stock market fell sharply after the central bank raised rates.",
    "Photosynthesis turns light into chemical energy in plants.",
    "Cats sleep for most of the day.",
    "Rust programs are fast and memory safe.",
    "Inference servers batch requests to use the hardware well.",
    "Le chat dort sur le canapé toute la journée.",
    "La capitale de la France est Paris.",
    "Der Ofen brennt den Ton bei hohen Temperaturen.",
    "I would like a cup of coffee, please.",
    "The weather will be sunny tomorrow with a light breeze.",
]

INPUTS = [
    "I would like a cup of coffee, please.",
    "The kiln fires clay at temperatures above a thousand degrees.",
    "Cats sleep.",
    "Zyxw unseen-words 12345 €",
]

# Longer than MAX_POSITIONS tokens with every tokenizer here.
OVERLONG_TEXT = " ".join(["kiln pottery clay glaze fire"] * 20)


def corpus_words(tokenizer: Tokenizer) -> Counter:
    counts = Counter()
    for text in CORPUS:
        normalized = tokenizer.normalizer.normalize_str(text) if tokenizer.normalizer else text
        counts.update(word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    return counts


def unigram_tokenizer(head: list[str], tail: list[str], unk: str) -> Tokenizer:
    """A SentencePiece-style Unigram vocabulary from the corpus: special tokens `head` first, every
    `▁word` scored by frequency, every character at a low score, then `tail` (special tokens
    appended after the pieces, as M2M100's language tokens and Marian's <pad> are)."""
    shaper = Tokenizer(models.Unigram([(unk, 0.0)], 0))
    shaper.normalizer = normalizers.NFKC()
    shaper.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    words = corpus_words(shaper)
    total = sum(words.values())
    chars = sorted({char for word in words for char in word})
    scored = [(piece, 0.0) for piece in head]
    scored += [(word, math.log(words[word] / total)) for word in sorted(words)]
    scored += [(char, -12.0) for char in chars if char not in words]
    scored += [(piece, 0.0) for piece in tail]
    tokenizer = Tokenizer(models.Unigram(scored, head.index(unk)))
    tokenizer.normalizer = shaper.normalizer
    tokenizer.pre_tokenizer = shaper.pre_tokenizer
    tokenizer.add_special_tokens(head + tail)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tokenizer


def byte_level_tokenizer() -> Tokenizer:
    """A GPT-2/RoBERTa-style byte-level BPE like BART's, with BART's special tokens and ids
    (<s> 0, <pad> 1, </s> 2, <unk> 3); merges make each corpus word whole, in a fixed order."""
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    words = Counter()
    for text in CORPUS:
        words.update(word for word, _ in pre.pre_tokenize_str(text))
    vocab = {piece: index for index, piece in enumerate(special + alphabet)}
    merges = []
    for word in sorted(words):
        left = word[0]
        for char in word[1:]:
            if (left, char) not in merges:
                merges.append((left, char))
            left += char
            vocab.setdefault(left, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre
    tokenizer.add_special_tokens(special)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def save(model, tokenizer: Tokenizer, name: str) -> Path:
    out = FIXTURES / name
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save(str(out / "tokenizer.json"))
    keep = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")
    for extra in out.iterdir():
        if extra.name not in keep:
            extra.unlink()
    return out


def provenance() -> dict:
    return {
        "script": "scripts/reference/seq2seq_models.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "python": platform.python_version(),
    }


def randomize_final_logits_bias(model) -> None:
    if hasattr(model, "final_logits_bias"):
        with torch.no_grad():
            model.final_logits_bias.copy_(torch.randn_like(model.final_logits_bias) * 0.5)


def shrink_embeddings(model, factor: float) -> None:
    """M2M100's random token embeddings, scaled by sqrt(d_model), swamp its pre-LayerNorm layers'
    contributions, and a
    model that only echoes its last token would not exercise the decoder's cache; shrinking
    them lets attention decide the continuation."""
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(factor)


def set_generation(model, **fields) -> None:
    """transformers 5 no longer writes generation fields into config.json; real checkpoints carry
    them in config.json or generation_config.json, and Kiln reads both."""
    for key, value in fields.items():
        setattr(model.generation_config, key, value)


def record(
    model, tokenizer: Tokenizer, source_ids: list[int], text: str, gen: dict, new_tokens=None
) -> dict:
    """Encoder output, first-step logits and the greedy continuation of one source."""
    input_ids = torch.tensor([source_ids])
    with torch.no_grad():
        encoder_out = model.get_encoder()(input_ids=input_ids).last_hidden_state[0]
        start = torch.tensor([[gen["decoder_start_token_id"]]])
        first = model(input_ids=input_ids, decoder_input_ids=start).logits[0, -1]
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            num_beams=1,
            max_new_tokens=new_tokens or MAX_NEW_TOKENS,
            output_scores=True,
            return_dict_in_generate=True,
            **gen,
        )
    sequence = out.sequences[0].tolist()
    assert sequence[0] == gen["decoder_start_token_id"], sequence
    generated = sequence[1:]
    # The logits after the whole continuation but its last token, in one pass without a cache:
    # Kiln computes them step by step with its cache, so positions and cached keys are checked.
    prefix = sequence[:-1]
    with torch.no_grad():
        last = model(input_ids=input_ids, decoder_input_ids=torch.tensor([prefix])).logits[0, -1]
    for step, scores in enumerate(out.scores):
        top = torch.topk(scores[0], 2).values
        if torch.isfinite(top[1]):
            margin = (top[0] - top[1]).item()
            assert margin > MIN_MARGIN, f"{text!r} step {step}: margin {margin}"
    return {
        "text": text,
        "source_ids": source_ids,
        "encoder_output_first_token": encoder_out[0, :SLICE].tolist(),
        "encoder_output_last_token": encoder_out[-1, :SLICE].tolist(),
        "first_step_logits": first[:SLICE].tolist(),
        "first_step_argmax": int(first.argmax()),
        "last_step_decoder_ids": prefix,
        "last_step_logits": last[:SLICE].tolist(),
        "generated_ids": generated,
        "generated_text": tokenizer.decode(generated, skip_special_tokens=True),
    }


def write_reference(out: Path, architecture: str, cases: list, gen: dict, extra: dict) -> None:
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert len(tokenizer.encode(OVERLONG_TEXT).ids) > MAX_POSITIONS
    reference = {
        "architecture": architecture,
        "tolerance": TOLERANCE,
        "max_positions": MAX_POSITIONS,
        "max_new_tokens": MAX_NEW_TOKENS,
        "generation": gen,
        "overlong_text": OVERLONG_TEXT,
        **extra,
        "cases": cases,
        "generated_by": provenance(),
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


def common(tokenizer: Tokenizer) -> dict:
    return dict(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=MAX_POSITIONS,
        init_std=0.3,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )


def build_m2m100() -> None:
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    languages = [f"__{code}__" for code in LANGUAGES]
    tokenizer = unigram_tokenizer(special, languages, "<unk>")
    config = transformers.M2M100Config(
        **common(tokenizer),
        activation_function="relu",
        scale_embedding=True,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    torch.manual_seed(18)
    model = transformers.M2M100ForConditionalGeneration(config).eval()
    shrink_embeddings(model, EMBEDDING_SHRINK)
    out = save(model, tokenizer, "m2m100-tiny")
    model = transformers.M2M100ForConditionalGeneration.from_pretrained(out).eval()
    en, eos = tokenizer.token_to_id("__en__"), tokenizer.token_to_id("</s>")
    cases = []
    for target in ["fr", "de"]:
        forced = tokenizer.token_to_id(f"__{target}__")
        gen = {"decoder_start_token_id": 2, "eos_token_id": 2, "forced_bos_token_id": forced}
        for text in INPUTS:
            ids = [en] + tokenizer.encode(text, add_special_tokens=False).ids + [eos]
            case = record(model, tokenizer, ids, text, gen)
            assert case["generated_ids"][0] == forced
            cases.append({"source_lang": "en", "target_lang": target, **case})
    # What Kiln's translation route produces: it decodes until </s> or the decoder's positions
    # run out (MAX_POSITIONS - 1 new tokens after the start token).
    fr = tokenizer.token_to_id("__fr__")
    gen = {"decoder_start_token_id": 2, "eos_token_id": 2, "forced_bos_token_id": fr}
    text = INPUTS[0]
    ids = [en] + tokenizer.encode(text, add_special_tokens=False).ids + [eos]
    served = record(model, tokenizer, ids, text, gen, MAX_POSITIONS - 1)
    served = {"source_lang": "en", "target_lang": "fr", "max_new_tokens": MAX_POSITIONS - 1, **served}
    write_reference(
        out,
        "M2M100ForConditionalGeneration",
        cases,
        {"decoder_start_token_id": 2, "eos_token_id": 2, "forced_bos_token_id": "target language"},
        {"languages": languages, "served_translation": served},
    )


def build_marian() -> None:
    tokenizer = unigram_tokenizer(["</s>", "<unk>"], ["<pad>"], "<unk>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 0)]
    )
    pad = tokenizer.token_to_id("<pad>")
    config = transformers.MarianConfig(
        **common(tokenizer),
        activation_function="swish",
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
        bad_words_ids=[[pad]],
    )
    torch.manual_seed(18)
    model = transformers.MarianMTModel(config).eval()
    randomize_final_logits_bias(model)
    set_generation(model, bad_words_ids=[[pad]])
    out = save(model, tokenizer, "marian-tiny")
    model = transformers.MarianMTModel.from_pretrained(out).eval()
    gen = {
        "decoder_start_token_id": pad,
        "eos_token_id": 0,
        "forced_eos_token_id": 0,
        "bad_words_ids": [[pad]],
    }
    cases = [record(model, tokenizer, tokenizer.encode(t).ids, t, gen) for t in INPUTS]
    write_reference(out, "MarianMTModel", cases, gen, {})


def build_bart() -> None:
    tokenizer = byte_level_tokenizer()
    config = transformers.BartConfig(
        **common(tokenizer),
        activation_function="gelu",
        scale_embedding=False,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
    )
    torch.manual_seed(18)
    model = transformers.BartForConditionalGeneration(config).eval()
    randomize_final_logits_bias(model)
    set_generation(model, forced_bos_token_id=0)
    out = save(model, tokenizer, "bart-tiny")
    model = transformers.BartForConditionalGeneration.from_pretrained(out).eval()
    gen = {
        "decoder_start_token_id": 2,
        "eos_token_id": 2,
        "forced_bos_token_id": 0,
        "forced_eos_token_id": 2,
    }
    cases = [record(model, tokenizer, tokenizer.encode(t).ids, t, gen) for t in INPUTS]
    write_reference(out, "BartForConditionalGeneration", cases, gen, {})


def main() -> None:
    torch.set_num_threads(1)
    build_m2m100()
    build_marian()
    build_bart()
    for path in sorted(FIXTURES.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(REPO)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
