//! Cloudflare's V4 page pagination for list routes: `?page=N&per_page=M` (pages from 1) and
//! `result_info: {page, per_page, count, total_count}` on the answer, which SDK loops read to
//! stop.

use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_core::{KilnError, KilnResult};
use serde_json::{json, Value};

use crate::envelope::ApiError;
use crate::offload::off_runtime;

/// As Cloudflare's list routes default.
pub const DEFAULT_PER_PAGE: usize = 20;
pub const MAX_PER_PAGE: usize = 1000;

/// What a list answers when the client names no page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unasked {
    /// `DEFAULT_PER_PAGE` items: routes Cloudflare pages (gateways, providers, logs), whose
    /// clients loop on `result_info`.
    DefaultPage,
    /// Every item: routes Cloudflare answers in one page (indexes, fine-tunes), whose clients
    /// read one answer and would silently lose the rest of a default-sized page.
    Everything,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: usize,
    /// `None`: everything on page 1.
    pub per_page: Option<usize>,
}

impl Paging {
    /// From a route's query pairs; other parameters are the route's own business.
    pub fn from_pairs(pairs: &[(String, String)], unasked: Unasked) -> KilnResult<Self> {
        let number = |name: &str, max: usize| -> KilnResult<Option<usize>> {
            match pairs.iter().rev().find(|(key, _)| key == name) {
                None => Ok(None),
                Some((_, value)) => value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .map(Some)
                    .ok_or_else(|| {
                        KilnError::bad_input(format!(
                            "'{name}' must be a whole number from 1 to {max}, got {value:?}"
                        ))
                    }),
            }
        };
        let page = number("page", usize::MAX)?;
        let per_page = number("per_page", MAX_PER_PAGE)?;
        let per_page = match (per_page, page, unasked) {
            (Some(size), _, _) => Some(size),
            (None, None, Unasked::Everything) => None,
            (None, _, _) => Some(DEFAULT_PER_PAGE),
        };
        Ok(Self {
            page: page.unwrap_or(1),
            per_page,
        })
    }

    /// The envelope with this page of `items` and its `result_info`.
    pub fn answer(self, items: Vec<Value>) -> Response {
        let total_count = items.len();
        let per_page = self.per_page.unwrap_or(total_count.max(1));
        let start = self.page.saturating_sub(1).saturating_mul(per_page);
        let page: Vec<Value> = items.into_iter().skip(start).take(per_page).collect();
        let info = ResultInfo {
            page: self.page as u64,
            per_page: per_page as u64,
            count: page.len() as u64,
            total_count: total_count as u64,
        };
        info.envelope(Value::Array(page))
    }
}

/// A list route's answer: the page `pairs` ask for of what `call` lists (on the blocking pool,
/// since lists read storage).
pub async fn paged(
    what: &'static str,
    pairs: &[(String, String)],
    unasked: Unasked,
    call: impl FnOnce() -> KilnResult<Vec<Value>> + Send + 'static,
) -> Response {
    let paging = match Paging::from_pairs(pairs, unasked) {
        Ok(paging) => paging,
        Err(error) => return ApiError::from(error).into_response(),
    };
    off_runtime(what, move || Ok(paging.answer(call()?)))
        .await
        .unwrap_or_else(|error| ApiError::from(error).into_response())
}

/// `result_info` of a page, however the list route computed it (here, in SQL, in the catalog).
pub struct ResultInfo {
    pub page: u64,
    pub per_page: u64,
    /// Items on this page.
    pub count: u64,
    /// Items on all pages.
    pub total_count: u64,
}

impl ResultInfo {
    /// The success envelope with `result` and this `result_info`.
    pub fn envelope(self, result: Value) -> Response {
        Json(json!({
            "result": result,
            "result_info": {
                "page": self.page,
                "per_page": self.per_page,
                "count": self.count,
                "total_count": self.total_count,
            },
            "success": true,
            "errors": [],
            "messages": [],
        }))
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pages_default_and_are_bounded() {
        assert_eq!(
            Paging::from_pairs(&[], Unasked::DefaultPage).expect("default"),
            Paging {
                page: 1,
                per_page: Some(DEFAULT_PER_PAGE)
            }
        );
        assert_eq!(
            Paging::from_pairs(&[], Unasked::Everything).expect("default"),
            Paging {
                page: 1,
                per_page: None
            }
        );
        // A page number alone pages at the default size, whatever the route's default.
        let paging = Paging::from_pairs(&pairs(&[("page", "3")]), Unasked::Everything);
        assert_eq!(paging.expect("given").per_page, Some(DEFAULT_PER_PAGE));
        let paging = Paging::from_pairs(
            &pairs(&[("page", "3"), ("per_page", "5")]),
            Unasked::DefaultPage,
        );
        assert_eq!(
            paging.expect("given"),
            Paging {
                page: 3,
                per_page: Some(5)
            }
        );
        for bad in [
            ("page", "0"),
            ("per_page", "1001"),
            ("page", "two"),
            ("per_page", "-1"),
        ] {
            let error =
                Paging::from_pairs(&pairs(&[bad]), Unasked::DefaultPage).expect_err("refused");
            assert!(error.message.contains(bad.0), "{}", error.message);
        }
    }
}
