from pathlib import Path

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from config.hotpath import db
        from dashboard import live
        from tracking.signals import events_recorded

        db.register_queries(
            Path(self.path) / "sql" / "queries.sql",
            retryable={
                "dashboard_session",
                "dashboard_user",
                "dashboard_summary",
                "dashboard_breakdown",
                "dashboard_tags",
                "dashboard_holds",
            },
        )
        events_recorded.connect(live.on_events_recorded, dispatch_uid="dashboard.live")
