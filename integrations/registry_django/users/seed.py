"""Demo data for an empty registry."""

from .models import Account

SEED_ACCOUNTS = (
    ("alice", "alice@example.com"),
    ("bob", "bob@example.com"),
    ("carol", "carol@example.com"),
)


def seed() -> int:
    """Create the demo accounts if the table is empty; return how many."""
    if Account.objects.exists():
        return 0

    accounts = [Account(username=u, email=e) for u, e in SEED_ACCOUNTS]
    Account.objects.bulk_create(accounts)

    return len(accounts)
