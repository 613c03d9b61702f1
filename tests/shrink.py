"""Scale any spec down to test size while keeping its structure and its rules satisfied."""

import compiler
from compiler.lang.render import dump_json, to_data

VOCAB, WIDTH, BATCH, STEPS = 12, 8, 4, 6


def shrink(spec: compiler.Spec) -> compiler.Spec:
    data = to_data(spec)
    data["input"]["vocab_size"] = VOCAB
    if data["input"].get("batch_size"):
        data["input"]["batch_size"] = BATCH
    if data["input"].get("sequence_length"):
        data["input"]["sequence_length"] = STEPS
    output = data["model"]["output"]
    for layer in data["model"]["layers"]:
        if layer["type"] == "embedding":
            layer["input_dim"], layer["output_dim"] = VOCAB, WIDTH
        if "units" in layer:
            layer["units"] = VOCAB if layer["name"] == output else WIDTH
    training = data["training"]
    training["batch_size"], training["sequence_length"] = BATCH, STEPS
    if training.get("privacy"):
        privacy = training["privacy"]
        privacy["num_microbatches"] = BATCH if privacy["num_microbatches"] > 1 else 1
    if training["tokenizer"]["type"] == "sentencepiece":
        training["tokenizer"]["vocab_size"] = VOCAB
    return compiler.load_spec(dump_json(data), name=f"<{spec.name} shrunk>")
