//! The features kept beside gateways: custom providers, stored provider keys (BYOK),
//! datasets, evaluations and dynamic routes, in the gateways' database (SQLite, or PostgreSQL
//! shared by a cluster's nodes). Their logic is in each feature's module, over its rows trait.

use kiln_core::KilnResult;
use serde_json::Value;

use crate::{
    datasets, dynamic_routes, evaluations, provider_configs, providers, stored_key_window,
    CustomProvider, Dataset, GatewayStore, ProviderConfig, StoredKey,
};

impl GatewayStore {
    // Stored provider keys (BYOK).

    pub fn create_provider_config(
        &self,
        account: &str,
        gateway: &str,
        body: &Value,
    ) -> KilnResult<ProviderConfig> {
        provider_configs::create(&*self.rows(), account, gateway, body)
    }

    pub fn list_provider_configs(
        &self,
        account: &str,
        gateway: &str,
    ) -> KilnResult<Vec<ProviderConfig>> {
        provider_configs::list(&*self.rows(), account, gateway)
    }

    pub fn delete_provider_config(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<ProviderConfig> {
        let deleted = provider_configs::delete(&*self.rows(), account, gateway, id)?;
        self.limiter
            .forget(account, &stored_key_window(gateway, id));
        Ok(deleted)
    }

    /// The stored key a request to a provider (under any of `provider_slugs`) goes with (see [`provider_configs::key_for`]).
    pub fn provider_key(
        &self,
        account: &str,
        gateway: &str,
        provider_slugs: &[&str],
        alias: Option<&str>,
    ) -> KilnResult<Option<StoredKey>> {
        provider_configs::key_for(&*self.rows(), account, gateway, provider_slugs, alias)
    }

    /// Counts one use of a stored key against its own rate limit; `Err` carries the seconds
    /// until it may be used again.
    pub fn admit_provider_key(
        &self,
        account: &str,
        gateway: &str,
        key: &StoredKey,
        now_ms: u64,
    ) -> Result<(), u64> {
        match key.rate_limit {
            Some(limit) => self.limiter.admit(
                account,
                &stored_key_window(gateway, &key.config_id),
                limit,
                now_ms,
            ),
            None => Ok(()),
        }
    }

    // Custom providers.

    pub fn create_provider(&self, account: &str, body: &Value) -> KilnResult<CustomProvider> {
        providers::create(&*self.rows(), account, body)
    }

    pub fn list_providers(&self, account: &str) -> KilnResult<Vec<CustomProvider>> {
        providers::list(&*self.rows(), account)
    }

    pub fn get_provider(&self, account: &str, id: &str) -> KilnResult<CustomProvider> {
        providers::get(&*self.rows(), account, id)
    }

    pub fn update_provider(
        &self,
        account: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<CustomProvider> {
        providers::update(&*self.rows(), account, id, body)
    }

    pub fn delete_provider(&self, account: &str, id: &str) -> KilnResult<CustomProvider> {
        providers::delete(&*self.rows(), account, id)
    }

    /// The enabled custom provider `custom-{slug}` names.
    pub fn provider_by_slug(
        &self,
        account: &str,
        slug: &str,
    ) -> KilnResult<Option<CustomProvider>> {
        providers::by_slug(&*self.rows(), account, slug)
    }

    // Datasets and evaluations (spec §4.7).

    pub fn create_dataset(
        &self,
        account: &str,
        gateway: &str,
        body: &Value,
    ) -> KilnResult<Dataset> {
        datasets::create(&*self.rows(), account, gateway, body)
    }

    pub fn list_datasets(&self, account: &str, gateway: &str) -> KilnResult<Vec<Dataset>> {
        datasets::list(&*self.rows(), account, gateway)
    }

    pub fn get_dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Dataset> {
        datasets::get(&*self.rows(), account, gateway, id)
    }

    pub fn update_dataset(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Dataset> {
        datasets::update(&*self.rows(), account, gateway, id, body)
    }

    pub fn delete_dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Dataset> {
        datasets::delete(&*self.rows(), account, gateway, id)
    }

    /// The evaluators `GET …/ai-gateway/evaluation-types` lists.
    pub fn evaluation_types(&self) -> Vec<Value> {
        evaluations::types()
    }

    /// Runs an evaluation over every log answered before this call.
    pub fn create_evaluation(
        &self,
        account: &str,
        gateway: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        self.writer.flush();
        evaluations::create(&*self.rows(), account, gateway, body)
    }

    pub fn list_evaluations(&self, account: &str, gateway: &str) -> KilnResult<Vec<Value>> {
        evaluations::list(&*self.rows(), account, gateway)
    }

    pub fn get_evaluation(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        evaluations::get(&*self.rows(), account, gateway, id)
    }

    pub fn delete_evaluation(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        evaluations::delete(&*self.rows(), account, gateway, id)
    }

    // Dynamic routes (spec §4.10): management JSON in Cloudflare's shapes; see `dynamic_routes`.

    pub fn create_dynamic_route(
        &self,
        account: &str,
        gateway: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        dynamic_routes::create(&*self.rows(), account, gateway, body)
    }

    pub fn list_dynamic_routes(&self, account: &str, gateway: &str) -> KilnResult<Vec<Value>> {
        dynamic_routes::list(&*self.rows(), account, gateway)
    }

    pub fn get_dynamic_route(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        dynamic_routes::get(&*self.rows(), account, gateway, id)
    }

    pub fn rename_dynamic_route(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        dynamic_routes::rename(&*self.rows(), account, gateway, id, body)
    }

    pub fn delete_dynamic_route(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<Value> {
        dynamic_routes::delete(&*self.rows(), account, gateway, id)
    }

    pub fn create_route_version(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        dynamic_routes::create_version(&*self.rows(), account, gateway, id, body)
    }

    pub fn list_route_versions(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<Vec<Value>> {
        dynamic_routes::list_versions(&*self.rows(), account, gateway, id)
    }

    pub fn get_route_version(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        version: &str,
    ) -> KilnResult<Value> {
        dynamic_routes::get_version(&*self.rows(), account, gateway, id, version)
    }

    pub fn create_route_deployment(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        dynamic_routes::create_deployment(&*self.rows(), account, gateway, id, body)
    }

    pub fn list_route_deployments(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<Vec<Value>> {
        dynamic_routes::list_deployments(&*self.rows(), account, gateway, id)
    }

    /// Where a walk of a route counts its `rate` elements: the store's Redis windows in a
    /// cluster with Redis, else this process's memory.
    pub fn route_surroundings(
        &self,
        account: &str,
        gateway: &str,
        route_id: &str,
        now_ms: i64,
    ) -> dynamic_routes::Live {
        dynamic_routes::Live::new(account, gateway, route_id, now_ms)
            .with_shared(self.limiter.shared_windows())
    }

    /// The deployed version of the route `name`, for a request that names it.
    pub fn runnable_route(
        &self,
        account: &str,
        gateway: &str,
        name: &str,
    ) -> KilnResult<dynamic_routes::Runnable> {
        dynamic_routes::runnable(&*self.rows(), account, gateway, name)
    }
}
