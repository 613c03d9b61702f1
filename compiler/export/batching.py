"""TF Serving's server-side batching: the `batching_parameters` file an export comes with.

`tensorflow_model_server --enable_batching --batching_parameters_file=FILE` merges
concurrent requests to one signature along their first dimension. keraspec's generation
signatures take every input per row, and each row depends only on its own inputs, so a
merged request answers each client exactly as it would alone.

The file is a `tensorflow.serving.BatchingParameters` text proto
(`tensorflow_serving/servables/tensorflow/session_bundle_config.proto`). The
tensorflow-serving-api wheel ships the request and config protos but not that one, so its
message class is built here from the proto's published field numbers and types.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from compiler.files import write_atomic
from compiler.lang.spec import ExportLimits

BATCHING_FILE = "batching_parameters.txt"
# (name, field number, type), as session_bundle_config.proto declares them
_FIELDS = [
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"),
    ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"),
    ("allowed_batch_sizes", 6, "repeated int64"),
    ("pad_variable_length_inputs", 7, "bool"),
]


@functools.cache
def batching_parameters_class() -> type:
    """The `tensorflow.serving.BatchingParameters` message class."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"],
        syntax="proto3",
    )
    message = proto.message_type.add(name="BatchingParameters")
    types = descriptor_pb2.FieldDescriptorProto
    for name, number, kind in _FIELDS:
        field = message.field.add(name=name, number=number)
        if kind.endswith("Value"):
            field.type, field.type_name = types.TYPE_MESSAGE, f".google.protobuf.{kind}"
            field.label = types.LABEL_OPTIONAL
        elif kind == "repeated int64":
            field.type, field.label = types.TYPE_INT64, types.LABEL_REPEATED
        else:
            field.type, field.label = types.TYPE_BOOL, types.LABEL_OPTIONAL
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    return message_factory.GetMessageClass(descriptor)


def batching_parameters(limits: ExportLimits) -> Any:
    """Parameters that suit a keraspec export on a CPU server.

    - max_batch_size: the export's own row limit (export.limits.max_batch), so a merged
      batch is never refused by the signature's checks.
    - batch_timeout_micros: 2 ms, small beside a generation request (milliseconds per token).
    - num_batch_threads: the server's cores (generation is compute-bound).
    - pad_variable_length_inputs: `generate`'s prompts differ in length. TF Serving pads
      them with the first element of each request's prompt, not with 0: clients merging
      `generate` requests send prompts of one length (or use `generate_text`, whose
      inputs are all one value per row and merge freely).
    """
    message = batching_parameters_class()()
    message.max_batch_size.value = limits.max_batch
    message.batch_timeout_micros.value = 2000
    message.max_enqueued_batches.value = 64
    message.num_batch_threads.value = os.cpu_count() or 1
    message.pad_variable_length_inputs = True
    return message


def write_batching_parameters(base: str, limits: ExportLimits) -> str:
    """Write BASE/batching_parameters.txt (atomically); returns its path.

    The file serves every model of BASE (the server takes one). An existing file keeps the
    smaller max_batch_size, so a merged batch stays within every exported model's limit;
    one that does not parse is replaced.
    """
    from google.protobuf import text_format

    path = os.path.join(base, BATCHING_FILE)
    message = batching_parameters(limits)
    if os.path.exists(path):
        existing = batching_parameters_class()()
        try:
            with open(path, encoding="utf-8") as f:
                text_format.Parse(f.read(), existing)
            if existing.HasField("max_batch_size"):
                message.max_batch_size.value = min(
                    message.max_batch_size.value, existing.max_batch_size.value
                )
        except (OSError, text_format.ParseError):
            pass
    write_atomic(path, text_format.MessageToString(message))
    return path
