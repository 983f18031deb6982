//! [`ApiRouter`]: an axum `Router` that records every (method, path) it is given together with
//! the route's [`Operation`], so the OpenAPI document is the router's own table. A route
//! registered without a description does not compile: there is no way to add one.

use std::convert::Infallible;

use axum::extract::Request;
use axum::handler::Handler;
use axum::http::Method;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, Route};
use axum::Router;
use tower::{Layer, Service};

use super::Operation;

/// One documented route: what the router serves and what the document says about it.
#[derive(Debug, Clone)]
pub struct DocumentedRoute {
    pub method: Method,
    /// The full path in axum's syntax (`/accounts/{account_id}/ai/run/{*model}`).
    pub path: String,
    pub operation: Operation,
}

impl DocumentedRoute {
    /// The path as OpenAPI writes it: `{*model}` becomes `{model}`.
    pub fn openapi_path(&self) -> String {
        self.path.replace("{*", "{")
    }
}

/// A router whose routes carry their OpenAPI description.
pub struct ApiRouter<S = ()> {
    router: Router<S>,
    routes: Vec<DocumentedRoute>,
}

impl<S> Clone for ApiRouter<S> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Default for ApiRouter<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> ApiRouter<S> {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            routes: Vec::new(),
        }
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H, op: Operation) -> Self {
        self.route(path, &[Method::GET], axum::routing::get(handler), op)
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H, op: Operation) -> Self {
        self.route(path, &[Method::POST], axum::routing::post(handler), op)
    }

    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H, op: Operation) -> Self {
        self.route(path, &[Method::PUT], axum::routing::put(handler), op)
    }

    pub fn patch<H: Handler<T, S>, T: 'static>(
        self,
        path: &str,
        handler: H,
        op: Operation,
    ) -> Self {
        self.route(path, &[Method::PATCH], axum::routing::patch(handler), op)
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(
        self,
        path: &str,
        handler: H,
        op: Operation,
    ) -> Self {
        self.route(path, &[Method::DELETE], axum::routing::delete(handler), op)
    }

    /// A prepared `MethodRouter` (one with a layer of its own, say) serving `methods`. axum
    /// merges method routers given for the same path, so each method may come in its own call.
    /// The live-server test probes every recorded method, so a `methods` that disagrees with
    /// `method_router` fails it.
    pub fn route(
        mut self,
        path: &str,
        methods: &[Method],
        method_router: MethodRouter<S>,
        op: Operation,
    ) -> Self {
        self.router = self.router.route(path, method_router);
        for method in methods {
            self.routes.push(DocumentedRoute {
                method: method.clone(),
                path: path.to_owned(),
                operation: op.clone(),
            });
        }
        self
    }

    /// A router built elsewhere (another crate's), merged with the description of its routes.
    pub fn merge_described(mut self, router: Router<S>, routes: Vec<DocumentedRoute>) -> Self {
        self.router = self.router.merge(router);
        self.routes.extend(routes);
        self
    }

    pub fn nest(mut self, prefix: &str, other: ApiRouter<S>) -> Self {
        self.router = self.router.nest(prefix, other.router);
        self.routes
            .extend(other.routes.into_iter().map(|route| DocumentedRoute {
                path: join(prefix, &route.path),
                ..route
            }));
        self
    }

    pub fn merge(mut self, other: ApiRouter<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.routes.extend(other.routes);
        self
    }

    pub fn route_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.route_layer(layer);
        self
    }

    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.layer(layer);
        self
    }

    pub fn fallback<H: Handler<T, S>, T: 'static>(mut self, handler: H) -> Self {
        self.router = self.router.fallback(handler);
        self
    }

    pub fn method_not_allowed_fallback<H: Handler<T, S>, T: 'static>(mut self, handler: H) -> Self {
        self.router = self.router.method_not_allowed_fallback(handler);
        self
    }

    pub fn with_state<S2>(self, state: S) -> ApiRouter<S2> {
        ApiRouter {
            router: self.router.with_state(state),
            routes: self.routes,
        }
    }

    pub fn into_parts(self) -> (Router<S>, Vec<DocumentedRoute>) {
        (self.router, self.routes)
    }
}

/// `prefix` + `path` as axum's `nest` joins them (`/x` + `/` is `/x`).
fn join(prefix: &str, path: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if path == "/" {
        prefix.to_owned()
    } else {
        format!("{prefix}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::Tag;

    #[test]
    fn nesting_prefixes_paths_and_wildcards_become_parameters() {
        let inner: ApiRouter = ApiRouter::new().get(
            "/ai/run/{*model}",
            || async {},
            Operation::new(Tag::WorkersAi, "run"),
        );
        let outer: ApiRouter = ApiRouter::new().nest(
            "/client/v4",
            ApiRouter::new().nest("/accounts/{account_id}", inner),
        );
        let (_, routes) = outer.into_parts();
        assert_eq!(routes.len(), 1);
        assert_eq!(
            routes[0].path,
            "/client/v4/accounts/{account_id}/ai/run/{*model}"
        );
        assert_eq!(
            routes[0].openapi_path(),
            "/client/v4/accounts/{account_id}/ai/run/{model}"
        );
    }

    /// Every route goes through `ApiRouter`: outside it, the only bare axum router is the one
    /// `crate::router` wraps the finished app in (a fallback service, no routes).
    #[test]
    fn no_route_bypasses_the_record() {
        fn visit(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    visit(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("openapi/router.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let bare = text.matches("Router::new()").count()
                        - text.matches("ApiRouter::new()").count();
                    for _ in 0..bare {
                        found.push(path.display().to_string());
                    }
                }
            }
        }
        let mut found = Vec::new();
        visit(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert_eq!(found.len(), 1, "bare axum routers: {found:?}");
        assert!(found[0].ends_with("src/lib.rs"), "{found:?}");
    }
}
