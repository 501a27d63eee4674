"""A fault for cordon's tests: a homeserver that does not finish creating a room.

Synapse takes a room's alias, and writes its create event and its creator's join,
before the rest of the room's initial state. This module acts on the first
power-levels event of each room created by a user whose id ends in `sender_suffix`,
after writing an empty file named after the room into `marker_dir`:

- `action: hold` holds it for `delay_seconds`, so that a test can act while the room
  is half made (a window every createRoom has, briefly);
- `action: refuse` refuses it, so that the createRoom fails and the room stays half
  made for good (as after a homeserver stopped in the middle of one).
"""

import os


class CreationFault:
    def __init__(self, config, api):
        self._api = api
        self._suffix = config["sender_suffix"]
        self._action = config["action"]
        self._delay = float(config.get("delay_seconds", 0))
        self._dir = config["marker_dir"]
        self._seen = set()
        api.register_third_party_rules_callbacks(check_event_allowed=self._check)

    @staticmethod
    def parse_config(config):
        if config.get("action") not in ("hold", "refuse"):
            raise ValueError("action must be hold or refuse")
        return config

    async def _check(self, event, state_events):
        if (
            event.type != "m.room.power_levels"
            or not event.sender.endswith(self._suffix)
            or event.room_id in self._seen
        ):
            return True, None
        self._seen.add(event.room_id)
        with open(os.path.join(self._dir, event.room_id), "w"):
            pass
        if self._action == "refuse":
            return False, None
        await self._api.sleep(self._delay)
        return True, None
