#!/usr/bin/env python3
"""Read a GGUF with llama.cpp's own Python reader (`gguf` on PyPI) and print
what it sees as JSON: every tensor's name, type and shape, and a few metadata
keys. The export test compares this with what sqlora wrote.

Exit 3 (and a message) when the `gguf` package is missing, so the caller can
skip instead of failing."""
import json
import sys

try:
    from gguf import GGUFReader
except ImportError as e:  # the test skips with this message
    print(f"python package `gguf` not available: {e}", file=sys.stderr)
    sys.exit(3)


def field_value(field):
    """A scalar or string metadata value, as Python sees it."""
    if not field.data:
        return None
    part = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(part).decode("utf-8")
    return part.tolist()[0]


def main(path):
    reader = GGUFReader(path)
    tensors = [
        {
            "name": t.name,
            "type": t.tensor_type.name,
            # GGUF stores dims fastest-varying first (ne0, ne1, ...).
            "shape": [int(d) for d in t.shape],
        }
        for t in reader.tensors
    ]
    keys = ["general.architecture", "llama.block_count", "llama.embedding_length", "sqlora.prompt_settings"]
    meta = {k: field_value(reader.fields[k]) for k in keys if k in reader.fields}
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    meta["tokenizer.ggml.tokens.count"] = len(tokens.data) if tokens else 0
    print(json.dumps({"tensors": tensors, "metadata": meta}))


if __name__ == "__main__":
    main(sys.argv[1])
