#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (tiny files, checked in).

Run from anywhere: `python3 fuzz/make_corpus.py`. Standard library only.
"""
import io
import json
import os
import struct
import wave
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- audio ---------------------------------------------------------------------------------
def wav(rate, channels, width, frames):
    buf = io.BytesIO()
    w = wave.open(buf, "wb")
    w.setnchannels(channels)
    w.setsampwidth(width)
    w.setframerate(rate)
    w.writeframes(frames)
    w.close()
    return buf.getvalue()


put("audio_decode", "mono16.wav", wav(8000, 1, 2, struct.pack("<16h", *[i * 1000 for i in range(-8, 8)])))
put("audio_decode", "stereo8.wav", wav(44100, 2, 1, bytes(range(0, 256, 8))))
put("audio_decode", "mono16_48k.wav", wav(48000, 1, 2, b"\x00\x10" * 64))
# Two silent MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz): 417 bytes each.
frame = b"\xff\xfb\x90\x00" + bytes(413)
put("audio_decode", "silence.mp3", frame * 2)
put("audio_decode", "flac_magic.flac", b"fLaC\x80\x00\x00\x22" + bytes(34))
put("audio_decode", "ogg_magic.ogg", b"OggS\x00\x02" + bytes(20))


# --- images --------------------------------------------------------------------------------
def png(width, height, color_type, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


put("image_preprocess", "rgb2x2.png", png(2, 2, 2, [b"\xff\x00\x00\x00\xff\x00", b"\x00\x00\xff\xff\xff\xff"]))
put("image_preprocess", "gray1x3.png", png(1, 3, 0, [b"\x00", b"\x80", b"\xff"]))
put("image_preprocess", "rgba3x1.png", png(3, 1, 6, [b"\x01\x02\x03\x04" * 3]))
# Baseline JPEG, 8×8 grey, one block with every coefficient zero; one-code Huffman tables.
jpeg = (
    b"\xff\xd8"
    + b"\xff\xdb\x00\x43\x00" + bytes([1] * 64)
    + b"\xff\xc0\x00\x0b\x08\x00\x08\x00\x08\x01\x01\x11\x00"
    + b"\xff\xc4\x00\x14\x00" + bytes([1] + [0] * 15) + b"\x00"
    + b"\xff\xc4\x00\x14\x10" + bytes([1] + [0] * 15) + b"\x00"
    + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    + b"\x3f"
    + b"\xff\xd9"
)
put("image_preprocess", "grey8x8.jpg", jpeg)
put("image_preprocess", "webp_header.webp", b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00")

# --- request validation: first byte picks the model ----------------------------------------
bodies = [
    {"prompt": "hello", "max_tokens": 16, "temperature": 0.5, "stream": True},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
     "tools": [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}]},
    {"text": ["a", "b"], "pooling": "cls"},
    {"text": "one"},
    {"audio": [82, 73, 70, 70, 0, 0], "language": "en"},
    {"audio": {"body": "UklGRg==", "contentType": "audio/wav"}},
    {"requests": [{"prompt": "a"}, {"prompt": "b"}]},
    {"query": "q", "contexts": [{"text": "c"}], "top_k": 2},
    {"image": [1, 2, 3]},
    {"prompt": "x" * 40, "seed": 1, "top_p": 2, "lora": "my-lora", "response_format": {"type": "json_object"}},
]
for i, body in enumerate(bodies):
    for pick in (0, 1, 2, 3, 5, 8, 13):
        put("catalog_validate", f"body{i}_{pick}.json", bytes([pick]) + json.dumps(body).encode())

# --- JSON mode: first byte's low bit: 0 native input, 1 OpenAI response_format --------------
schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": ["number", "string", "boolean"]}}},
          "required": ["a"], "additionalProperties": False}
put("json_mode", "native_rf", b"\x00" + json.dumps({"response_format": {"type": "json_schema", "json_schema": schema}}).encode())
put("json_mode", "native_guided", b"\x00" + json.dumps({"guided_json": {"$ref": "#/$defs/x", "$defs": {"x": {"enum": [1, "a", None]}}}}).encode())
put("json_mode", "openai_envelope", b"\x01" + json.dumps({"type": "json_schema", "json_schema": {"name": "n", "strict": True, "schema": schema}}).encode())
put("json_mode", "openai_object", b"\x01" + json.dumps({"type": "json_object"}).encode())
put("json_mode", "openai_text", b"\x01" + json.dumps({"type": "text"}).encode())
put("json_mode", "patterns", b"\x01" + json.dumps({"type": "json_schema", "json_schema": {"type": "string", "pattern": "^(a+)+$", "format": "date-time", "minLength": 2}}).encode())
put("json_mode", "combinators", b"\x00" + json.dumps({"guided_json": {"anyOf": [{"type": "object", "minProperties": 1}, {"oneOf": [{"const": []}, {"not": {"type": "null"}}]}], "if": {"type": "object"}, "then": {"required": ["a"]}}}).encode())

# --- gateway headers ------------------------------------------------------------------------
put("gateway_headers", "all", "\n".join([
    "cf-aig-authorization: Bearer tok",
    "cf-aig-cache-ttl: 3600",
    "cf-aig-skip-cache: true",
    "cf-aig-cache-key: k",
    'cf-aig-metadata: {"user": "u", "n": 1, "ok": true}',
    "cf-aig-collect-log: false",
    "cf-aig-event-id: e1",
    'cf-aig-custom-cost: {"per_token_in": 0.000001, "per_token_out": 0.00002}',
    "cf-aig-request-timeout: 1000",
    "cf-aig-max-attempts: 3",
    "cf-aig-retry-delay: 500",
    "cf-aig-backoff: exponential",
]))
put("gateway_headers", "legacy", "cf-cache-ttl: 60\ncf-skip-cache: 1\nCF-AIG-BACKOFF: Linear")
put("gateway_headers", "bad", "cf-aig-metadata: [1]\ncf-aig-custom-cost: {\"per_token_in\": -1}")

# --- gateway log query ----------------------------------------------------------------------
put("gateway_log_query", "basic", "page=2\nper_page=50\norder_by=cost\norder_by_direction=asc\ncached=true\nsuccess=false")
put("gateway_log_query", "dates", "start_date=2024-01-01T00:00:00Z\nend_date=2024-12-31T23:59:59.999+02:00\nfeedback=1\nsearch=Llama")
put("gateway_log_query", "bounds", "min_cost=0.5\nmax_duration=100\nmin_tokens_in=1\nmax_total_tokens=1e3\nmodel=@cf/x\nprovider=workers-ai")
put("gateway_log_query", "filters", 'filters=[{"key":"model","operator":"eq","value":["a","b"]},{"key":"cost","operator":"gt","value":[1]},{"key":"metadata.user","operator":"contains","value":["x"]},{"key":"created_at","operator":"lt","value":["2024-01-01T00:00:00Z"]}]')

# --- vectorize query ------------------------------------------------------------------------
queries = [
    {"vector": [1, 0, 0, 0], "topK": 3, "returnValues": True, "returnMetadata": "all"},
    {"vector": [0.1, 0.2, 0.3, 0.4], "filter": {"genre": "jazz", "year": {"$gte": 1950, "$lt": 2000}, "ok": {"$ne": False}}},
    {"vector": [1, 1, 1, 1], "namespace": "ns", "filter": {"genre": {"$in": ["jazz", "rock", None]}, "a.b": {"$nin": ["y"]}}, "returnMetadata": "indexed"},
    {"vectorId": "v1", "topK": 2, "filter": {"year": {"$eq": 1959}}},
    {"vector": [1, 2, 3, 4], "filter": {"genre": {"$gt": "a", "$lte": "z"}}, "topK": 100},
]
for i, q in enumerate(queries):
    put("vectorize_query", f"q{i}.json", json.dumps(q))

# --- vectorize ndjson -----------------------------------------------------------------------
put("vectorize_ndjson", "ndjson", "\n".join(json.dumps(v) for v in [
    {"id": "a", "values": [1, 2, 3]},
    {"id": "b", "values": [0.5, -1e30, 3], "namespace": "n", "metadata": {"k": "v", "x": {"y": [1, 2]}}},
    {"id": "c", "values": "AAAAAA=="},
]) + "\n\n")
put("vectorize_ndjson", "json", json.dumps({"vectors": [{"id": "a", "values": [1, 2]}, {"id": "é", "values": [3, 4], "metadata": {}}]}))

# --- multipart: first line is the boundary --------------------------------------------------
def form(boundary, parts):
    out = boundary.encode() + b"\n"
    for headers, body in parts:
        out += b"--" + boundary.encode() + b"\r\n" + headers.encode() + b"\r\n\r\n" + body + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


put("multipart", "finetune", form("XyZ", [
    ('Content-Disposition: form-data; name="file_name"', b"adapter_config.json"),
    ('Content-Disposition: form-data; name="file"; filename="adapter_config.json"\r\nContent-Type: application/json', b'{"r": 8}'),
]))
put("multipart", "audio", form("----b", [
    ('Content-Disposition: form-data; name="model"', b"whisper-1"),
    ('Content-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav', b"RIFF\x00\x00"),
]))
put("multipart", "vectors", form("b", [('Content-Disposition: form-data; name="vectors"', b'{"id":"a","values":[1]}\n')]))


# --- CTranslate2 model.bin ------------------------------------------------------------------
def ct2(variables, aliases=()):
    def s(text):
        raw = text.encode() + b"\x00"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<II", 1, len(variables))
    for name, dims, dtype, data in variables:
        out += s(name) + bytes([len(dims)]) + b"".join(struct.pack("<I", d) for d in dims)
        out += bytes([dtype]) + struct.pack("<I", len(data)) + data
    if aliases:
        out += struct.pack("<I", len(aliases)) + b"".join(s(a) + s(t) for a, t in aliases)
    return out


def f32(n):
    return struct.pack(f"<{n}f", *[0.25] * n)


tiny = [
    ("decoder/embeddings/weight", [4, 2], 0, f32(8)),
    ("encoder/conv1/weight", [2, 2, 3], 0, f32(12)),
    ("encoder/position_encodings/encodings", [2, 2], 0, f32(4)),
    ("decoder/position_encodings/encodings", [2, 2], 0, f32(4)),
    ("encoder/num_heads", [], 3, struct.pack("<i", 1)),
    ("decoder/num_heads", [], 1, b"\x01"),
    ("encoder/layer_0/ffn/linear_0/weight", [2, 2], 4, b"\x00\x3c" * 4),
    ("decoder/layer_0/ffn/linear_0/weight", [2, 2], 5, b"\x80\x3f" * 4),
]
put("ct2_reader", "tiny.bin", ct2(tiny, [("decoder/projection/weight", "decoder/embeddings/weight")]))
put("ct2_reader", "empty.bin", ct2([]))
put("ct2_reader", "int16.bin", ct2([("x", [3], 2, struct.pack("<3h", -1, 0, 1))]))


# --- legacy PyTorch .pth (as kiln-engine-vision's pth_tests.rs encodes it) ------------------
class P:
    def __init__(self):
        self.b = bytearray(b"\x80\x02")

    def op(self, x):
        self.b += x
        return self

    def glob(self, m, n):
        return self.op(b"c" + m.encode() + b"\n" + n.encode() + b"\n")

    def str(self, s):
        return self.op(b"X" + struct.pack("<I", len(s)) + s.encode())

    def int(self, v):
        return self.op(bytes([ord("K"), v]))

    def ints(self, vs):
        self.op(b"(")
        for v in vs:
            self.int(v)
        return self.op(b"t")

    def tensor(self, key, numel, offset, size, stride):
        self.glob("torch._utils", "_rebuild_tensor_v2").op(b"((").str("storage").glob("torch", "FloatStorage")
        self.str(key).str("cpu").int(numel).op(b"N").op(b"tQ").int(offset).ints(size).ints(stride).op(b"\x89")
        return self.glob("collections", "OrderedDict").op(b")R").op(b"tR")

    def stop(self):
        return bytes(self.op(b".").b)


MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def legacy(state_dict, storages):
    out = MAGIC + P().op(b"M" + struct.pack("<H", 1001)).stop()
    out += P().op(b"}(").str("protocol_version").op(b"M" + struct.pack("<H", 1001)).str("little_endian").op(b"\x88u").stop()
    out += state_dict
    keys = P().op(b"](")
    for k, _ in storages:
        keys.str(k)
    out += keys.op(b"e").stop()
    for _, data in storages:
        out += struct.pack("<Q", len(data)) + struct.pack(f"<{len(data)}f", *data)
    return out


sd = (P().glob("collections", "OrderedDict").op(b")R(")
      .str("a").tensor("s0", 6, 0, [2, 3], [1, 2])
      .str("b").tensor("s0", 6, 1, [2], [2])
      .str("c").tensor("s1", 8, 0, [1, 2, 2, 2], [8, 1, 4, 2])
      .str("d").tensor("s2", 1, 0, [], [])
      .op(b"u").stop())
put("pth_reader", "sample.pth", legacy(sd, [("s0", [float(i) for i in range(6)]), ("s1", [i * 10.0 for i in range(8)]), ("s2", [7.0])]))


# --- fine-tune assets: config 0xFF safetensors ----------------------------------------------
def safetensors(tensors):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


pre = "base_model.model.model.layers.0."
q_pair = [
    (pre + "self_attn.q_proj.lora_A.weight", "F32", [2, 4], f32(8)),
    (pre + "self_attn.q_proj.lora_B.weight", "F32", [8, 2], f32(16)),
]
kv_pair = [
    (pre + "self_attn.k_proj.lora_A.weight", "F16", [2, 4], b"\x00\x3c" * 8),
    (pre + "self_attn.k_proj.lora_B.weight", "BF16", [4, 2], b"\x80\x3f" * 8),
]
cfg = json.dumps({"model_type": "llama", "r": 2, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj"]}).encode()
put("finetune_adapter", "q_only", cfg + b"\xff" + safetensors(q_pair))
put("finetune_adapter", "q_and_k", cfg + b"\xff" + safetensors(q_pair + kv_pair))
put("finetune_adapter", "weights_only", safetensors(kv_pair))
put("finetune_adapter", "gemma_config", json.dumps({"model_type": "gemma", "r": 32, "target_modules": "all"}).encode() + b"\xff" + safetensors(q_pair[:1]))
