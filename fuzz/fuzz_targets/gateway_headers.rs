//! AI Gateway's `cf-aig-*` request headers: one `name: value` per line.
#![no_main]
use kiln_core::ErrorKind;
use kiln_gateway::{GatewayConfig, RequestOptions, RetryBackoff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pairs = kiln_fuzz::pairs(data, ':');
    let headers = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    match RequestOptions::from_headers(headers) {
        Ok(options) => {
            let most = GatewayConfig {
                cache_ttl: Some(u64::MAX),
                retry_max_attempts: 5,
                retry_delay: 5000,
                retry_backoff: RetryBackoff::Exponential,
                ..GatewayConfig::default()
            };
            for gateway in [GatewayConfig::default(), most] {
                let _ = options.cache_ttl_secs(&gateway);
                let _ = options.collects_log(&gateway);
                let plan = options.retries(&gateway);
                let _ = format!("{plan:?}");
                for retry in 0..6 {
                    let _ = plan.delay_before(retry);
                }
            }
            if let Some(cost) = options.custom_cost {
                let _ = cost.cost(u64::MAX, u64::MAX);
            }
        }
        Err(error) => assert_eq!(error.kind, ErrorKind::BadInput, "{}", error.message),
    }
});
