from django.core.management.base import BaseCommand

from ...seed import seed


class Command(BaseCommand):
    help = "Create the demo accounts if the registry is empty."

    def handle(self, *args: object, **options: object) -> None:
        created = seed()
        self.stdout.write(f"seeded {created} account(s)")
