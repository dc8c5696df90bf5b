"""Process-wide interpreter settings changed for bulk work hold while any user needs them and come back after."""

from __future__ import annotations

import gc
import sys
from contextlib import ExitStack

from clarion.kit.interpreter import rarer_young_collections, shorter_switch_interval


def test_overlapping_users_keep_the_settings_until_the_last_one_leaves() -> None:
    before = (gc.get_threshold(), sys.getswitchinterval())
    with ExitStack() as first:
        first.enter_context(rarer_young_collections())
        first.enter_context(shorter_switch_interval())
        changed = (gc.get_threshold(), sys.getswitchinterval())
        assert changed[0][0] >= 50_000 and changed[0][1:] == before[0][1:]
        assert changed[1] < before[1]
        second = ExitStack()
        second.enter_context(rarer_young_collections())
        second.enter_context(shorter_switch_interval())
    # The first user left while the second still runs: the settings stay as the bulk work wants them.
    assert (gc.get_threshold(), sys.getswitchinterval()) == changed
    second.close()
    assert (gc.get_threshold(), sys.getswitchinterval()) == before
