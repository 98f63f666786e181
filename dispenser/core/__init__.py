"""The dispensing core: orders, safety checks, shipments, FEFO stock, packs, and the
journal they are kept in. ``Dispensary`` (``dispenser.core.dispensary``) is the facade the
daemon calls; docs/architecture.md maps the modules.

The core knows nothing of the daemon, the API, the CLI or any device.
"""


from dispenser.core.dispensary import Dispensary
from dispenser.core.views import SYSTEM, Actor

__all__ = ["SYSTEM", "Actor", "Dispensary"]
