"""`batchbridge demo` is the main job: it must account for every request it sends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_500_requests_json_accounts_for_every_request(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHBRIDGE_")}
    env["BATCHBRIDGE_DATA_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "connector", "demo", "--requests", "500", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert summary["requests"] == 500
    assert summary["results"] + summary["deadletters"] == 500
    assert (
        summary["results"] > 400
    )  # the emulator fails ~2% plus a few deliberately invalid requests
    assert summary["batches"] >= 3  # three providers at least
    assert 0 < summary["cost_usd"] < summary["realtime_cost_usd"]
    # The support-policy workload: batch discount, prompt cache and Flex stack past 65%.
    policy = summary["workloads"]["support_policy"]
    assert policy["results"] > 180 and policy["saving_pct"] >= 65
    parts = policy["savings"]
    assert parts["batch_discount_usd"] > 0 and parts["cache_usd"] > 0 and parts["flex_usd"] > 0
    assert sum(parts.values()) == pytest.approx(policy["saving_usd"], abs=1e-5)
    assert summary["workloads"]["mixed"]["saving_pct"] < policy["saving_pct"]
