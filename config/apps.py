from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TollgateConfig(AppConfig):
    """The project itself: installs every app's SQL functions after migrate
    and holds the project-wide commands (demo, run_worker, move_data)."""

    name = "config"
    label = "tollgate"

    def ready(self) -> None:
        from config import sqlfunctions

        post_migrate.connect(
            sqlfunctions.install_after_migrate, sender=self, dispatch_uid="tollgate.sqlfunctions"
        )
