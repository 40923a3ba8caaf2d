from pathlib import Path

from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from config import jobs as worker
        from config.hotpath import db
        from tracking import jobs

        db.register_queries(
            Path(self.path) / "sql" / "api.sql", retryable={"price_catalog", "price_of_model"}
        )
        worker.register("aggregate usage", jobs.aggregate_usage, heavy=True)
