"""A fault for cordon's tests: a homeserver slow to write a new room's initial state.

Synapse takes a room's alias, and writes its create event and its creator's join,
before the rest of the room's initial state. This module holds the first power-levels
event of each room created by a user whose id ends in `sender_suffix` for
`delay_seconds`, so that a test can act in that window (which every createRoom has,
briefly): it first writes an empty file named after the room into `marker_dir`.
"""

import os


class SlowCreation:
    def __init__(self, config, api):
        self._api = api
        self._suffix = config["sender_suffix"]
        self._delay = float(config["delay_seconds"])
        self._dir = config["marker_dir"]
        self._held = set()
        api.register_third_party_rules_callbacks(check_event_allowed=self._check)

    @staticmethod
    def parse_config(config):
        return config

    async def _check(self, event, state_events):
        if (
            event.type == "m.room.power_levels"
            and event.sender.endswith(self._suffix)
            and event.room_id not in self._held
        ):
            self._held.add(event.room_id)
            with open(os.path.join(self._dir, event.room_id), "w"):
                pass
            await self._api.sleep(self._delay)
        return True, None
