// The web dashboard: the page the head serves on its HTTP port (8265) next to
// the API. Its three files (index.html, app.js, app.css; built from
// dashboard/ with npm and committed in src/dashboard/assets/) are embedded in
// the binary at C++ build time, so the page works offline and without Node.js.
//
// Routes added by RegisterDashboard:
//   GET /                    index.html (Cache-Control: no-cache)
//   GET /static/{name}       app.js, app.css; long-cached when asked for with
//                            the ?v=<hash> that index.html uses; ETag/304
//   POST /api/authenticate   needs the bearer header like every API route;
//                            answers {"authenticated": true} and sets the
//                            HttpOnly, SameSite=Strict cookie kTokenCookie,
//                            which a browser WebSocket (no custom headers)
//                            then carries to /api/jobs/{id}/logs/tail
//   DELETE /api/authenticate clears that cookie
// The page and its files must be public (no token): the caller lists
// kPublicPaths in HttpServer::Options::public_paths; the API stays behind the
// token, and the page asks the user for it.
#pragma once

#include "cohort/net/http_server.h"

namespace cohort::dashboard {

inline constexpr const char* kTokenCookie = "cohort_token";
inline constexpr const char* kPublicPaths[] = {"/", "/static/*"};

void RegisterDashboard(net::HttpServer& server);

}  // namespace cohort::dashboard
