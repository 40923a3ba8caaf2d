// The API reference page (/docs/api/): Swagger UI, vendored (no CDN), renders
// GET /v1/openapi.json. A file rather than an inline script: the pages' CSP
// allows only this origin's scripts.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("api-docs");
  window.SwaggerUIBundle({
    url: root.dataset.url,
    domNode: root,
    deepLinking: true,
    // The default badge asks an online validator about the document.
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    defaultModelsExpandDepth: 0,
  });
});
