"""The admin panel and its API (contract section 7): sign-in, settings, the page."""

from routstr_node.admin.routes import add_routes, admin_guard

__all__ = ["add_routes", "admin_guard"]
