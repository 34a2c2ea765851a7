"""Building the plugin manager: our hookspecs, the built-in plugins, then
third-party plugins from the C{b2bua} entry-point group, minus the disabled."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

import pluggy

from b2bua import hookspecs

__all__ = ["ENTRY_POINT_GROUP", "PluginError", "build_plugin_manager", "plugin_listing"]

ENTRY_POINT_GROUP = "b2bua"


class PluginError(Exception):
    """A plugin could not be loaded or does not match the hookspecs."""


def build_plugin_manager(builtins: Mapping[str, Any], disabled: Iterable[str] = (),
                         load_entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with every built-in plugin (by name) and, unless
    told otherwise, every installed third-party plugin, except C{disabled}.

    @raise PluginError: when a plugin implements a hook that does not exist
        or with wrong arguments, or a disabled name is unknown.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = set(disabled)
    for name in blocked:
        pm.set_blocked(name)
    for name, plugin in builtins.items():
        if name not in blocked:
            pm.register(plugin, name=name)
    if load_entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as error:
            raise PluginError(f"cannot load plugins: {error}") from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginError(str(error)) from None
    # a blocked name is listed too (with no plugin): it proves nothing
    known = set(builtins) | {name for name, plugin in pm.list_name_plugin()
                             if plugin is not None}
    if load_entry_points:
        known |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    unknown = blocked - known - {d.project_name for _, d in pm.list_plugin_distinfo()}
    if unknown:
        raise PluginError(f"plugins.disabled names unknown plugins: {sorted(unknown)}")
    return pm


def plugin_listing(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Name and implemented hooks of every registered plugin (for OAM)."""
    listing = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or ())
        listing.append({"name": name, "hooks": hooks})
    return listing
