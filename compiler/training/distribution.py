"""Distribution: the tf.distribute strategy a spec trains under, and each worker's data.

`training.distribution` names the strategy; this module makes it. `one_device` is
TensorFlow's default strategy. `mirrored` is MirroredStrategy over the machine's first N
GPUs, or over N logical CPU devices on a machine without GPUs. `multi_worker` is
MultiWorkerMirroredStrategy over a cluster given in TensorFlow's `TF_CONFIG` form
({"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}): the
CLI makes it from `--cluster --task`, or reads the `TF_CONFIG` variable; this module reads
no environment.

Data: every worker reads the same corpus and cuts the same examples in the same order. Each
global batch is split into one contiguous share per replica, in replica order, so the
replicas of all workers together see exactly the global batches a single process would,
and each example is seen by one replica only.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

from compiler.diagnostics import Diagnostic, RunError
from compiler.lang import spec as s


def _error(code: str, message: str, where: str = "<environment>") -> RunError:
    return RunError([Diagnostic("error", code, message, "training.distribution", where)])


def cluster_config(cluster: list[str], task: int) -> dict[str, Any]:
    """The TF_CONFIG of worker `task` in a cluster of `host:port` addresses.

    Raises:
        RunError: an address is not host:port, or the task is not an index of the cluster.
    """
    for address in cluster:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _error(
                "cluster_address",
                f"expected --cluster addresses as host:port, received {address!r}",
                "--cluster",
            )
    if not 0 <= task < len(cluster):
        raise _error(
            "cluster_task",
            f"expected --task between 0 and {len(cluster) - 1} (an index into --cluster), "
            f"received {task}",
            "--task",
        )
    return {"cluster": {"worker": list(cluster)}, "task": {"type": "worker", "index": task}}


def parse_tf_config(text: str) -> dict[str, Any]:
    """A cluster in TensorFlow's TF_CONFIG form (the CLI reads the variable), checked.

    Raises:
        RunError: the text is not a TF_CONFIG with a cluster and a chief or worker task.
    """
    try:
        config = json.loads(text)
        workers = list(config["cluster"].get("chief", [])) + list(config["cluster"]["worker"])
        kind, index = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _error(
            "tf_config",
            'expected TF_CONFIG as {"cluster": {"worker": ["host:port", ...]}, "task": '
            f'{{"type": "worker", "index": N}}}}, received {text[:200]!r} ({e})',
        ) from None
    if kind not in ("chief", "worker") or index < 0 or not workers:
        raise _error(
            "tf_config",
            f"expected a task of type chief or worker with an index >= 0, received {kind} "
            f"{index}",
        )
    return config


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where this process stands in a distributed run.

    Attributes:
        strategy: The tf.distribute strategy (TensorFlow's default one without a
            distribution block).
        workers: Number of worker processes.
        worker: This process's index among them (the chief is 0).
        replicas: Number of replicas in all.
    """

    strategy: Any
    workers: int
    worker: int
    replicas: int

    @property
    def chief(self) -> bool:
        return self.worker == 0

    @property
    def replicas_per_worker(self) -> int:
        return self.replicas // self.workers


def _local_devices(tf: Any, count: int) -> list[str]:
    """The first `count` GPUs, or `count` logical CPU devices made from the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < count:
            raise _error(
                "devices",
                f"expected at least devices_per_worker = {count} GPUs, received {len(gpus)}",
            )
        return [f"/gpu:{i}" for i in range(count)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as e:  # TensorFlow has started: keep its devices if there are enough
        if len(tf.config.list_logical_devices("CPU")) < count:
            raise _error(
                "devices",
                f"expected to split the CPU into {count} logical devices, but TensorFlow had "
                f"already started in this process ({e}); run training in a fresh process",
            ) from None
    return [f"/cpu:{i}" for i in range(count)]


def place(tf: Any, spec: s.Spec, cluster: Optional[dict[str, Any]] = None) -> Placement:
    """Make the spec's strategy; call it before TensorFlow runs anything else.

    Args:
        tf: TensorFlow.
        spec: The (checked) spec.
        cluster: For multi_worker, the cluster and this process's task, in TF_CONFIG's
            form (`cluster_config`, or `parse_tf_config` of the variable's text).

    Raises:
        RunError: the cluster or the devices do not match the spec.
    """
    d = spec.training.distribution
    if d is None or d.strategy == "one_device":
        return Placement(tf.distribute.get_strategy(), 1, 0, 1)
    if d.strategy == "mirrored":
        devices = _local_devices(tf, d.devices_per_worker)
        return Placement(tf.distribute.MirroredStrategy(devices), 1, 0, len(devices))
    config = cluster
    if config is None:
        raise _error(
            "tf_config",
            "expected the cluster for strategy multi_worker (TF_CONFIG in the environment, "
            "or --cluster and --task; in Python, train(..., cluster=...)), received none",
        )
    cluster = config["cluster"]
    addresses = list(cluster.get("chief", [])) + list(cluster["worker"])
    if len(addresses) != d.workers:
        raise _error(
            "cluster_size",
            f"expected a cluster of training.distribution.workers = {d.workers} workers, "
            f"received {len(addresses)}: {', '.join(addresses)}",
        )
    if tf.config.list_physical_devices("GPU") == [] and d.devices_per_worker > 1:
        raise _error(
            "devices",
            f"expected GPUs for devices_per_worker = {d.devices_per_worker} under "
            "multi_worker (MultiWorkerMirroredStrategy uses one CPU device per worker), "
            "received none",
        )
    task = config["task"]
    worker = int(task["index"]) + (len(cluster.get("chief", [])) if task["type"] == "worker" else 0)
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=d.peer_timeout_seconds
    )
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster),
        task_type=task["type"],
        task_id=int(task["index"]),
        rpc_layer=config.get("rpc_layer", "grpc"),
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver, communication_options=options
    )
    return Placement(strategy, d.workers, worker, strategy.num_replicas_in_sync)


def worker_order(order: Any, global_batch: int, placement: Placement) -> Any:
    """This worker's examples, in the order its replicas take them.

    `order` holds whole global batches. Batch k's share for replica r is
    order[k * B + r * b : k * B + (r + 1) * b] with b = B / replicas; this worker's
    replicas are numbered worker * replicas_per_worker onwards, and take their shares in
    turn (a distributed dataset hands consecutive per-replica batches to its replicas).
    """
    import numpy as np

    share = global_batch // placement.replicas
    batches = np.asarray(order).reshape(-1, placement.replicas, share)
    first = placement.worker * placement.replicas_per_worker
    return batches[:, first : first + placement.replicas_per_worker, :].reshape(-1)


def _sum_over_replicas(placement: Placement, values: list[float], *, chief_only: bool) -> Any:
    """Sum `values` over every replica (or take the chief's, with chief_only)."""
    import numpy as np

    from compiler.tf import tensorflow

    tf = tensorflow()
    strategy = placement.strategy

    def contribute() -> Any:
        mine = tf.constant(values, tf.float64)
        if chief_only:
            first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
            mine = tf.where(first, mine, tf.zeros_like(mine))
        return mine

    total = strategy.reduce("SUM", strategy.run(contribute), axis=None)
    return np.asarray(total)


def agree(placement: Placement, value: int) -> int:
    """The chief's `value` (an int below 2^31), on every worker."""
    return int(round(float(_sum_over_replicas(placement, [float(value)], chief_only=True)[0])))


def agree_bytes(placement: Placement, data: bytes) -> bytes:
    """The chief's `data` (of even length), on every worker."""
    chunks = [float(int.from_bytes(data[i : i + 2], "big")) for i in range(0, len(data), 2)]
    total = _sum_over_replicas(placement, chunks, chief_only=True)
    return b"".join(int(round(float(v))).to_bytes(2, "big") for v in total)


def check_same_data(placement: Placement, data: Any, tokenizer: Any) -> None:
    """Fail unless every worker tokenised the corpus into the same examples.

    Raises:
        RunError: the workers' corpus files or tokenizers differ.
    """
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for name, content in sorted(tokenizer.files().items()):
        digest.update(name.encode() + b"\0" + content)
    for part in (data.train.inputs, data.train.targets):
        digest.update(np.ascontiguousarray(part).tobytes())
    chunks = [float(int.from_bytes(digest.digest()[i : i + 2], "big")) for i in range(0, 8, 2)]
    n = placement.replicas
    sums = _sum_over_replicas(placement, chunks + [c * c for c in chunks], chief_only=False)
    spread = sums[4:] / n - (sums[:4] / n) ** 2
    if np.any(np.abs(spread) > 1e-6):
        raise _error(
            "workers_disagree",
            "expected every worker to cut the same examples from the same corpus, received "
            "different ones: give every worker the same --data file, spec and keraspec "
            "version",
        )


def peer_errors(tf: Any) -> tuple[type, ...]:
    """The errors TensorFlow raises when a worker of the cluster stops answering."""
    e = tf.errors
    return (
        e.UnavailableError,
        e.DeadlineExceededError,
        e.CancelledError,
        e.AbortedError,
        e.InternalError,
        e.UnknownError,
    )


def lost_peer(placement: Placement, step: int, error: Exception) -> RunError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return _error(
        "worker_lost",
        f"expected all {placement.workers} workers to keep training, but worker "
        f"{placement.worker} lost contact with the others after step {step} ({first}); "
        "restart every worker with the same command: training resumes from the last "
        "checkpoint",
    )
