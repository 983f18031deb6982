//! Cloudflare's V4 page pagination for list routes: `?page=N&per_page=M` (pages from 1) and
//! `result_info: {page, per_page, count, total_count}` on the answer, which SDK loops read to
//! stop.

use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_core::{KilnError, KilnResult};
use serde_json::{json, Value};

/// As Cloudflare's list routes default.
pub const DEFAULT_PER_PAGE: usize = 20;
pub const MAX_PER_PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: usize,
    pub per_page: usize,
}

impl Paging {
    /// From a route's query pairs; other parameters are the route's own business.
    pub fn from_pairs(pairs: &[(String, String)]) -> KilnResult<Self> {
        let number = |name: &str, default: usize, max: usize| -> KilnResult<usize> {
            match pairs.iter().rev().find(|(key, _)| key == name) {
                None => Ok(default),
                Some((_, value)) => value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        KilnError::bad_input(format!(
                            "'{name}' must be a whole number from 1 to {max}, got {value:?}"
                        ))
                    }),
            }
        };
        Ok(Self {
            page: number("page", 1, usize::MAX)?,
            per_page: number("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)?,
        })
    }

    /// The envelope with this page of `items` and its `result_info`.
    pub fn answer(self, items: Vec<Value>) -> Response {
        let total_count = items.len();
        let start = self.page.saturating_sub(1).saturating_mul(self.per_page);
        let page: Vec<Value> = items.into_iter().skip(start).take(self.per_page).collect();
        let info = ResultInfo {
            page: self.page as u64,
            per_page: self.per_page as u64,
            count: page.len() as u64,
            total_count: total_count as u64,
        };
        info.envelope(Value::Array(page))
    }
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
            Paging::from_pairs(&[]).expect("default"),
            Paging {
                page: 1,
                per_page: DEFAULT_PER_PAGE
            }
        );
        let paging = Paging::from_pairs(&pairs(&[("page", "3"), ("per_page", "5")]));
        assert_eq!(paging.expect("given").page, 3);
        for bad in [
            ("page", "0"),
            ("per_page", "1001"),
            ("page", "two"),
            ("per_page", "-1"),
        ] {
            let error = Paging::from_pairs(&pairs(&[bad])).expect_err("refused");
            assert!(error.message.contains(bad.0), "{}", error.message);
        }
    }
}
