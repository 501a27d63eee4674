"""cordon_synapse: a Synapse module that asks cordon before any membership or
state change is accepted in cordon's incident rooms.

    modules:
      - module: cordon_synapse.CordonGate
        config:
          endpoint: "http://127.0.0.1:9479/_cordon/prevention/v1/check"
          secret_file: "/etc/cordon/prevention.secret"
"""

from ._version import __version__
from .gate import CordonGate

__all__ = ["CordonGate", "__version__"]
