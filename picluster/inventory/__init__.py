"""Load and validate an inventory (hosts/*.yml) into typed objects.

Every problem is reported as one `InventoryError` line that names the file, the key path and the fix.
Vars are layered: a host's `vars` override its group's (`groups.<role>.vars`), which override `vars`;
`Host.settings` gives them typed.

The model is in `model`, the vars' grammars and `HostSettings` in `settings`, the loader in `load` and the
rules across keys in `checks`; everything public is importable from here.
"""

from picluster.inventory.load import DEFAULT_INVENTORY, INVENTORY_ENV, default_inventory_path, load_inventory
from picluster.inventory.model import (
    ROLES,
    AdminUser,
    Cluster,
    DataPartition,
    Device,
    Host,
    Inventory,
    InventoryError,
    LabSettings,
    Lan,
    SshTarget,
    Wan,
    Wifi,
)
from picluster.inventory.settings import VAR_SCHEMA, HostSettings, ShutdownGrace, settings_of

__all__ = [
    "DEFAULT_INVENTORY",
    "INVENTORY_ENV",
    "ROLES",
    "VAR_SCHEMA",
    "AdminUser",
    "Cluster",
    "DataPartition",
    "Device",
    "Host",
    "HostSettings",
    "Inventory",
    "InventoryError",
    "LabSettings",
    "Lan",
    "ShutdownGrace",
    "SshTarget",
    "Wan",
    "Wifi",
    "default_inventory_path",
    "load_inventory",
    "settings_of",
]
