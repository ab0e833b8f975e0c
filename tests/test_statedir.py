"""Worker state directories: stable slots, one process each, free again when it dies."""

from __future__ import annotations

import gc
import subprocess
import sys

from connector.statedir import claim


def test_a_second_claim_gets_the_next_slot_and_a_released_slot_is_reused(tmp_path):
    first = claim(str(tmp_path), "app")
    second = claim(str(tmp_path), "app")
    assert (first.slot, second.slot) == (0, 1)
    assert first.path == tmp_path / "app" / "worker-0"
    first.release()
    again = claim(str(tmp_path), "app")
    assert again.slot == 0
    again.release()
    second.release()


def test_a_killed_process_leaves_its_slot_free(tmp_path):
    code = f"from connector.statedir import claim; import os; s = claim({str(tmp_path)!r}, 'app'); print(s.slot, flush=True); os.kill(os.getpid(), 9)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == -9 and run.stdout.strip() == "0"
    state = claim(str(tmp_path), "app")
    assert state.slot == 0
    state.release()


def test_a_claim_holds_its_slot_even_when_the_caller_keeps_no_reference(tmp_path):
    claim(str(tmp_path), "app")  # the worker's start-up code drops what claim returns
    gc.collect()
    second = claim(str(tmp_path), "app")
    assert second.slot == 1  # slot 0 is still locked by the first claim
    second.release()
