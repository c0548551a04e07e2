"""The cashier screen (issue 7, docs/cashier-screen.md): a touchscreen page on the agent.

- :func:`create_cashier_app` is the ECR app with the page added; :func:`add_cashier_routes`
  adds the page to an ECR app built elsewhere;
- :class:`CashierFeed` is the :class:`~terminal_agent.display.Display` that pushes prompts to
  open pages as server-sent events; :func:`health` makes the device and link banners.
"""

from __future__ import annotations

from terminal_agent.cashier.app import DEFAULT_CURRENCIES, add_cashier_routes, create_cashier_app
from terminal_agent.cashier.feed import Banner, CashierFeed, health

__all__ = [
    "DEFAULT_CURRENCIES",
    "Banner",
    "CashierFeed",
    "add_cashier_routes",
    "create_cashier_app",
    "health",
]
