"""Which workers may run a model's batches: worker resources restrict a kind of model only once
some worker declares that resource (plain `dask worker` must keep working)."""

from __future__ import annotations

import pytest

from emoface.config import ExecutionParams
from tasks.cluster import Cluster, ClusterError


def cluster_with(workers: dict, timeout_s: float = 0.6) -> Cluster:
    c = Cluster(ExecutionParams(dask="tcp://10.0.0.1:8786", worker_timeout_s=timeout_s))
    c._workers = lambda: workers  # the scheduler's view of its workers, as scheduler_info() gives
    return c


def test_plain_workers_take_any_model():
    c = cluster_with({"tcp://a:1": {}, "tcp://b:1": {"resources": {}}})
    assert c.resources("ollama/gemma3:4b") is None and c.resources("mlx/some-model") is None
    assert c.eligible_workers("ollama/gemma3:4b") == c.eligible_workers("mlx/m") == 2


def test_declared_resources_restrict_their_models_only():
    c = cluster_with({"tcp://mac:1": {"resources": {"mlx": 1}},
                      "tcp://gpu:1": {"resources": {"ollama": 1}},
                      "tcp://plain:1": {}})
    assert c.resources("ollama/gemma3:4b") == {"ollama": 0.125}  # up to 8 batches per worker
    assert c.resources("mlx/m") == {"mlx": 1.0}  # one MLX batch (one model in memory) at a time
    assert c.eligible_workers("ollama/gemma3:4b") == 1 and c.eligible_workers("mlx/m") == 1


def test_no_suitable_worker_fails_within_the_timeout_naming_what_to_start():
    c = cluster_with({"tcp://gpu:1": {"resources": {"ollama": 1}}})
    assert c.wait_for_workers("ollama/gemma3:4b") == 1
    c._workers = lambda: {}  # the only worker left
    with pytest.raises(ClusterError, match=r"no Dask worker able to run ollama/gemma3:4b joined "
                                           r"tcp://10\.0\.0\.1:8786 within 0\.6 s.*dask worker"):
        c.wait_for_workers("ollama/gemma3:4b")
