//! Reading credentials off a request; [`crate::platform::authorize`] decides what they allow.

use axum::http::{header, HeaderMap};

/// The token of `Authorization: Bearer <token>`, when the request carries one.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers_with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn reads_bearer_tokens_only() {
        assert_eq!(
            bearer_token(&headers_with("Bearer sk-abc")).as_deref(),
            Some("sk-abc")
        );
        assert_eq!(
            bearer_token(&headers_with("bearer  tok ")).as_deref(),
            Some("tok")
        );
        assert_eq!(bearer_token(&headers_with("Basic dXNlcjpw")), None);
        assert_eq!(bearer_token(&headers_with("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
