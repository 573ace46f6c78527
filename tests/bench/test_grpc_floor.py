"""bench/grpc_floor.py: the do-nothing Predict server answers like serving_default, and the
benchmark records both server flavours."""

import json

from bench import grpc_floor
from shoprec import features


def test_fixed_response_has_serving_defaults_shape():
    response = grpc_floor.fixed_response()
    for name in (features.OUTPUT_ITEM_IDS, features.OUTPUT_SCORES):
        assert [d.size for d in response.outputs[name].tensor_shape.dim] == [1, grpc_floor.TOP_K]
    assert len(response.outputs[features.OUTPUT_ITEM_IDS].string_val) == grpc_floor.TOP_K


def test_benchmark_measures_both_servers(tmp_path, capsys):
    out = tmp_path / "floor.json"
    assert grpc_floor.main(["--requests", "40", "--concurrency", "1", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["servers"]) == set(grpc_floor.FLAVOURS)
    for runs in report["servers"].values():
        assert [run["concurrency"] for run in runs] == [1, 2]
        assert all(run["requests"] == 40 and run["qps"] > 0 and run["p99_ms"] > 0 for run in runs)
    assert report["command"].startswith("python -m bench.grpc_floor")
    assert "[aio] c=2" in capsys.readouterr().out
