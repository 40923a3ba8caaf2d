"""Content-Security-Policy on Django's pages (dashboard, sign-in, admin).

Django 5.2 sets the other security headers itself (SecurityMiddleware:
X-Content-Type-Options, Referrer-Policy, HSTS; XFrameOptionsMiddleware) but
has no CSP yet. The pages load only their own scripts and styles (no inline
script: the dashboard's configuration is a json_script block, which is data),
so the policy allows nothing from anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response
