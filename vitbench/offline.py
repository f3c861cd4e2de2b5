"""Offline mode: `VITBENCH_OFFLINE=1` (any value but empty or 0) promises there is no network,
as on the compute nodes of many clusters. Nothing is downloaded then: a checkpoint not in the
cache and a TFDS dataset not prepared in the data dir are reported missing before any work,
with where to put them, instead of failing after TFDS's and urllib's retries. Fetch them first
where there is network (`vitbench checkpoints --download NAME`, `vitbench tasks --suite S
--prepare`)."""

from __future__ import annotations

import os

VARIABLE = "VITBENCH_OFFLINE"


def is_offline() -> bool:
    return os.environ.get(VARIABLE, "") not in ("", "0")
