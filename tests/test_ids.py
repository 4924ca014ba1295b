"""Event ids made by mats.ids are the library's uuid5 of the parts' JSON, to the character."""

from __future__ import annotations

import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from mats.blocks import event_id
from mats.ids import text_uuid5

NAMESPACE = uuid.UUID("5d0c7a8e-2f4b-4f6e-9a51-3c1b8e7d9f20")


@given(st.lists(st.text(), min_size=0, max_size=5), st.uuids())
def test_the_same_id_as_uuid5_of_the_json(parts: list[str], namespace: uuid.UUID) -> None:
    assert text_uuid5(namespace, *parts) == str(uuid.uuid5(namespace, json.dumps(parts)))


def test_ids_of_events_already_stored_do_not_change() -> None:
    # ids a store may hold from before: a block replayed after an upgrade repeats them
    assert event_id("GRO-1", "child_order", "prime-a") == str(
        uuid.uuid5(NAMESPACE, '["GRO-1", "child_order", "prime-a"]'))
    assert event_id("ÜBER-\"1\"", "signal") == str(
        uuid.uuid5(NAMESPACE, '["\\u00dcBER-\\"1\\"", "signal", ""]'))
