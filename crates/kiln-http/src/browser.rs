//! What browsers may do with Kiln. A local Kiln is reachable from every web page its operator
//! opens: a page can send it requests (a form post needs no preflight) and, by pointing its
//! own DNS name at 127.0.0.1 (DNS rebinding), even read the answers. So:
//!
//! - the `Host` a request names must be this server's: an IP literal, `localhost`, a name
//!   without a dot (a local service name), `--public-url`'s host, or one of `--allowed-hosts`;
//! - a request carrying an `Origin` must come from an allowed origin (`--cors-origins`) or
//!   from Kiln's own pages (same origin), or it is refused before any handler acts;
//! - allowed origins get CORS answers (preflights, `Access-Control-*`), so a browser app can
//!   use Kiln on purpose, as Ollama's `OLLAMA_ORIGINS` allows.
//!
//! curl, the SDKs and Worker runtimes send no `Origin` and pass unchanged.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kiln_core::{ErrorKind, KilnError};

/// The `Host` the Worker AI binding sends (docs/worker-binding.md): accepted on the binding's
/// own routes, from callers that are not browsers.
const BINDING_HOST: &str = "workers-binding.ai";

/// Headers a browser app may read from Kiln's answers.
const EXPOSED_HEADERS: &str = "cf-aig-log-id, cf-aig-event-id, cf-aig-cache-status, cf-aig-step, \
     cf-aig-model, cf-aig-provider, x-kiln-model, retry-after, content-type";

/// See the module documentation.
#[derive(Debug, Default)]
pub struct BrowserPolicy {
    hosts: Vec<String>,
    any_host: bool,
    origins: Vec<String>,
    any_origin: bool,
}

impl BrowserPolicy {
    /// `allowed_hosts`: host names beyond IP literals and `localhost` (`*`: any). `origins`:
    /// `scheme://host[:port]`, `scheme://host:*` for any port, or `*` for any origin.
    pub fn new(allowed_hosts: &[String], origins: &[String]) -> Result<Self, String> {
        let mut policy = Self::default();
        for host in allowed_hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
        {
            if host == "*" {
                policy.any_host = true;
            } else {
                policy.hosts.push(host_part(host).to_ascii_lowercase());
            }
        }
        for origin in origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            if origin == "*" {
                policy.any_origin = true;
                continue;
            }
            let origin = origin.trim_end_matches('/').to_ascii_lowercase();
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .filter(|rest| !rest.is_empty() && !rest.contains(['/', ' ']));
            if authority.is_none() {
                return Err(format!(
                    "--cors-origins: `{origin}` is not an origin: write scheme://host[:port], \
                     scheme://host:* or *"
                ));
            }
            policy.origins.push(origin);
        }
        Ok(policy)
    }

    /// Adds a host name this server is known by (the listening host, `--public-url`'s).
    pub fn with_host(mut self, host: &str) -> Self {
        let host = host_part(host).to_ascii_lowercase();
        if !host.is_empty() && !self.hosts.contains(&host) {
            self.hosts.push(host);
        }
        self
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_part(host).to_ascii_lowercase();
        self.any_host
            || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            // A name without a dot (`kiln` in a compose network) is resolved by the local
            // network, not by public DNS, so no rebinding page can own it.
            || !name.contains('.')
            || self.hosts.contains(&name)
    }

    fn origin_listed(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.any_origin
            || self
                .origins
                .iter()
                .any(|allowed| match allowed.strip_suffix(":*") {
                    Some(prefix) => {
                        origin == prefix
                            || origin
                                .strip_prefix(prefix)
                                .and_then(|rest| rest.strip_prefix(':'))
                                .is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit()))
                    }
                    None => *allowed == origin,
                })
    }
}

/// The middleware; see the module documentation.
pub async fn guard(
    State(policy): State<Arc<BrowserPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = request_host(&request);
    let origin = text(headers, header::ORIGIN);
    let path = request.uri().path();
    let own_host = host.as_deref().is_none_or(|h| policy.host_allowed(h));
    let binding_caller = origin.is_none()
        && is_binding_route(path)
        && host
            .as_deref()
            .is_some_and(|h| host_part(h).eq_ignore_ascii_case(BINDING_HOST));
    if !own_host && !binding_caller {
        let host = host.unwrap_or_default();
        return refuse(
            path,
            format!(
                "Host {host:?} is not a name of this server (a guard against DNS rebinding): \
                 add it with --allowed-hosts"
            ),
        );
    }
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let cross_origin_allowed = policy.origin_listed(&origin);
    let same_origin = own_host
        && host
            .as_deref()
            .is_some_and(|host| same_authority(&origin, host));
    if !cross_origin_allowed && !same_origin {
        return refuse(
            path,
            format!(
                "Origin {origin:?} may not call this server: to let a browser app there use \
                 Kiln, start it with --cors-origins {origin}"
            ),
        );
    }
    let preflight = request.method() == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        let answer = response.headers_mut();
        allow_origin(answer, &origin);
        answer.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        if let Some(requested) = requested {
            answer.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        }
        answer.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let mut response = next.run(request).await;
    allow_origin(response.headers_mut(), &origin);
    response
}

fn allow_origin(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
}

fn refuse(path: &str, message: String) -> Response {
    crate::platform::authorize::refusal(path, KilnError::new(ErrorKind::Forbidden, message))
}

/// `Host`, or the authority of an absolute request URI (HTTP/2).
fn request_host(request: &Request) -> Option<String> {
    text(request.headers(), header::HOST)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
}

fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).trim().to_owned())
}

/// `example.com` of `example.com:8080`, `[::1]` of `[::1]:8080`.
fn host_part(authority: &str) -> &str {
    let authority = authority.trim().trim_end_matches('.');
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Whether `origin` (`scheme://host[:port]`) is the server the request was sent to.
fn same_authority(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let with_port = |authority: &str| {
        let authority = authority.to_ascii_lowercase();
        if host_part(&authority).len() == authority.len() {
            format!("{authority}:{default_port}")
        } else {
            authority
        }
    };
    with_port(authority) == with_port(host)
}

/// The Worker binding's routes (no account in the path: a Worker runtime calls them).
fn is_binding_route(path: &str) -> bool {
    path == "/run"
        || path.starts_with("/ai-gateway/")
        || path.starts_with("/ai-api/")
        || path.starts_with("/vectorize-binding/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_this_server_pass_and_others_do_not() {
        let policy = BrowserPolicy::new(&["kiln.lan".into()], &[])
            .expect("policy")
            .with_host("ai.example.com:443");
        for host in [
            "127.0.0.1:8787",
            "[::1]:8787",
            "localhost:8787",
            "LOCALHOST",
            "app.localhost:3000",
            "10.1.2.3",
            "kiln.lan:8787",
            "ai.example.com",
            "kiln:8787",
        ] {
            assert!(policy.host_allowed(host), "{host}");
        }
        for host in [
            "rebind.attacker.example:8787",
            "localhost.evil.com",
            "kiln.lan.evil",
        ] {
            assert!(!policy.host_allowed(host), "{host}");
        }
        let any = BrowserPolicy::new(&["*".into()], &[]).expect("policy");
        assert!(any.host_allowed("anything.example"));
    }

    #[test]
    fn origins_match_exactly_or_by_port_wildcard() {
        let origins = ["http://127.0.0.1:5173", "https://app.example.com:*"].map(String::from);
        let policy = BrowserPolicy::new(&[], &origins).expect("policy");
        assert!(policy.origin_listed("http://127.0.0.1:5173"));
        assert!(policy.origin_listed("HTTPS://APP.EXAMPLE.COM:8443"));
        assert!(policy.origin_listed("https://app.example.com"));
        assert!(!policy.origin_listed("http://127.0.0.1:5174"));
        assert!(!policy.origin_listed("https://app.example.com.evil:1"));
        assert!(!policy.origin_listed("https://app.example.com:1/x"));
        assert!(!policy.origin_listed("null"));
        assert!(BrowserPolicy::new(&[], &["ftp://x".into()]).is_err());
        assert!(BrowserPolicy::new(&[], &["*".into()])
            .expect("policy")
            .origin_listed("https://evil.example"));
    }

    #[test]
    fn same_origin_compares_authorities_with_default_ports() {
        assert!(same_authority("http://127.0.0.1:8787", "127.0.0.1:8787"));
        assert!(same_authority("http://localhost", "localhost:80"));
        assert!(same_authority("https://ai.example.com", "ai.example.com"));
        assert!(!same_authority("http://127.0.0.1:8788", "127.0.0.1:8787"));
        assert!(!same_authority("https://evil.example", "127.0.0.1:8787"));
        assert!(!same_authority("null", "127.0.0.1:8787"));
    }
}
