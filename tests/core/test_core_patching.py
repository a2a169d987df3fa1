"""``PatchSet``: changes made by other code (an engine's registry) are undone like our own ``set``."""

from __future__ import annotations

import pytest

from attn_sched_plugin.patching import PatchSet


class Owner:
    def method(self):
        return "original"


def test_a_change_made_by_other_code_is_undone_in_order_with_the_rest():
    original = Owner.__dict__["method"]
    patches = PatchSet()
    patches.set(Owner, "method", lambda self: "ours")
    patches.changed_by(Owner, "method", lambda: setattr(Owner, "method", lambda self: "registry's"))
    assert Owner().method() == "registry's"
    assert patches.undo() == []
    assert Owner.__dict__["method"] is original


def test_a_change_that_raises_after_setting_is_still_undone():
    original = Owner.__dict__["method"]

    def change():
        Owner.method = lambda self: "half-applied"
        raise RuntimeError("the registry failed after setting")

    with pytest.raises(RuntimeError), PatchSet() as patches:
        patches.changed_by(Owner, "method", change)
    assert Owner.__dict__["method"] is original


def test_a_change_wrapped_again_afterwards_is_left_in_place():
    original = Owner.__dict__["method"]
    patches = PatchSet()
    patches.changed_by(Owner, "method", lambda: setattr(Owner, "method", lambda self: "registry's"))
    theirs = Owner.method = lambda self: "theirs"
    try:
        assert patches.undo() == ["Owner.method"]
        assert Owner.__dict__["method"] is theirs
    finally:
        Owner.method = original
