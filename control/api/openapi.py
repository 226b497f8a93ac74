"""Placeholder until this module lands (issue 3)."""

from control.api import ApiRoute

ROUTES: tuple[ApiRoute, ...] = ()
