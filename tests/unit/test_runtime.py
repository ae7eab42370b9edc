"""Process settings applied by exdd's entry points (never by ``import exdd``): freed tensors'
memory is reused, not refaulted; OpenMP threads wait passively."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Blocks the size of a small activation tensor (kept under 2 MiB so that transparent huge
# pages do not hide the faults being counted).
BLOCK = 1536 << 10
ROUNDS = 100
PROBE = f"""
BLOCK, ROUNDS = {BLOCK}, {ROUNDS}
import resource, sys
import exdd, numpy as np
from exdd import runtime
applied = runtime.configure_malloc()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(ROUNDS):
    block = np.ones(BLOCK, dtype=np.uint8)  # written: every page is touched
    del block
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(env_extra: dict[str, str]) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    applied, tuned = faults({})
    # glibc's own default threshold, set by the user: exdd must leave it alone
    left_alone, default = faults({"MALLOC_MMAP_THRESHOLD_": str(128 << 10)})
    assert applied and not left_alone
    pages = BLOCK // os.sysconf("SC_PAGE_SIZE")
    assert default >= ROUNDS * pages * 0.9  # each block faulted in anew
    assert tuned <= 3 * pages               # the first block faults in; the rest reuse it


def _env_after(code: str, **env_extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_openmp_wait_policy_is_passive_unless_set() -> None:
    code = ("from exdd import runtime; import os; runtime.configure(); "
            "print(os.environ['OMP_WAIT_POLICY'])")
    assert _env_after(code) == "PASSIVE"
    assert _env_after(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_import_exdd_changes_nothing_but_the_command_applies_the_settings() -> None:
    plain = "import exdd, os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    assert _env_after(plain) == "unset"
    command = ("import os, contextlib, io\nfrom exdd.cli import main\n"
               "with contextlib.redirect_stdout(io.StringIO()):\n"
               "    try:\n        main(['--version'])\n    except SystemExit:\n        pass\n"
               "print(os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    assert _env_after(command) == "PASSIVE"
