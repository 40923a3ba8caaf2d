"""The instance the LiteLLM proxy's config names, set up from the environment:

    litellm_settings:
      callbacks: tollgate_litellm.proxy.handler

(settings.py lists the variables; a missing TOLLGATE_URL or TOLLGATE_API_KEY
stops the proxy at start, not at its first request.)
"""

from tollgate_litellm.logger import TollgateLogger

handler = TollgateLogger()
