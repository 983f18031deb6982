//! Token counts read from a provider's answer, and what they cost (spec §4.8).

use kiln_catalog::Catalog;
use serde_json::Value;

/// `(tokens_in, tokens_out)` from a JSON answer (`usage`, or Workers AI's `result.usage`) or
/// from the last event of an SSE stream that carries usage (a Responses stream's last event
/// holds it in `response.usage`).
pub fn usage(body: &[u8], streamed: bool) -> Option<(u64, u64)> {
    if !streamed {
        let value: Value = serde_json::from_slice(body).ok()?;
        return from_value(&value);
    }
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find_map(|event| from_value(&event))
}

fn from_value(value: &Value) -> Option<(u64, u64)> {
    let usage = value
        .get("usage")
        .or_else(|| value.get("result")?.get("usage"))
        .or_else(|| value.get("response")?.get("usage"))
        .filter(|usage| usage.is_object())?;
    let count = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|name| usage.get(*name).and_then(Value::as_u64))
    };
    let tokens_in = count(["prompt_tokens", "input_tokens"]);
    let tokens_out = count(["completion_tokens", "output_tokens"]);
    (tokens_in.is_some() || tokens_out.is_some())
        .then(|| (tokens_in.unwrap_or(0), tokens_out.unwrap_or(0)))
}

/// US dollars at the catalog's public price; `None` for models the catalog does not price.
pub fn cost_of(catalog: &Catalog, model: &str, tokens_in: u64, tokens_out: u64) -> Option<f64> {
    let rates = catalog.get(model)?.neurons.as_ref()?;
    Some(rates.usd_for_tokens(tokens_in, tokens_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_from_every_shape() {
        let openai = br#"{"usage":{"prompt_tokens":7,"completion_tokens":3}}"#;
        assert_eq!(usage(openai, false), Some((7, 3)));
        let native = br#"{"result":{"response":"hi","usage":{"prompt_tokens":5,"completion_tokens":2}},"success":true}"#;
        assert_eq!(usage(native, false), Some((5, 2)));
        let stream = b"data: {\"response\":\"a\"}\n\ndata: {\"response\":\"\",\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n";
        assert_eq!(usage(stream, true), Some((4, 9)));
        let responses = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":6,\"output_tokens\":2}}}\n\n";
        assert_eq!(usage(responses, true), Some((6, 2)));
        assert_eq!(usage(b"{\"result\":{}}", false), None);
        assert_eq!(usage(b"not json", false), None);
    }
}
