from pathlib import Path

from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from budgets import api, jobs
        from config import jobs as worker
        from config.hotpath import db

        db.register_queries(
            Path(self.path) / "sql" / "queries.sql",
            retryable={"authenticate_key", "list_budgets", "alert_counts", "ping"},
            # A check holds nothing: its only writes are idempotent upserts (a
            # team, user or window registered on first sight).
            retryable_when={"decide": lambda params: params.get("hold") is False},
        )
        db.register_background_task(api.sweep_expired_reservations)
        worker.register("expire reservations", jobs.expire_reservations)
        worker.register("forecast budgets", jobs.forecast_budgets)
        worker.register("deliver alerts", jobs.deliver_alerts)
        worker.register("prune reservations", jobs.prune_reservations)
