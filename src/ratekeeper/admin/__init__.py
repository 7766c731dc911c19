"""The admin app, the live dashboard and the decision service (the ``admin`` extra:
``pip install 'ratekeeper[admin]'``), and the rules kept in shared stores.

.. code-block:: python

    from ratekeeper.admin import create_admin_app

    app.mount("/admin", create_admin_app(token=os.environ["RATEKEEPER_ADMIN_TOKEN"]))

Processes that do not serve the admin app keep their limiters in step with the rules changed
through it with ``sync_rules(registry)`` (see `ratekeeper.admin.rules`).
"""

from ratekeeper.admin.app import MIN_TOKEN_LENGTH, AdminApp, create_admin_app
from ratekeeper.admin.rules import POLL_INTERVAL, RuleSync, sync_rules
from ratekeeper.admin.stats import DashboardStats

__all__ = [
    "MIN_TOKEN_LENGTH",
    "POLL_INTERVAL",
    "AdminApp",
    "DashboardStats",
    "RuleSync",
    "create_admin_app",
    "sync_rules",
]
