//! LoRA fine-tune REST API: create, list, upload assets with their validation and error codes.

mod common;

use common::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};

const LORA_BASE: &str = "@cf/meta/llama-3.3-70b-instruct-fp8-fast";

/// A fresh account per run, removed at the end: fine-tunes persist in the data directory.
struct TestAccount(String);

impl Drop for TestAccount {
    fn drop(&mut self) {
        let dir = kiln_store::default_data_dir()
            .join("finetunes")
            .join(&self.0);
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn account() -> TestAccount {
    TestAccount(format!("test-{}", uuid::Uuid::new_v4().simple()))
}

fn finetunes_url(account: &str) -> String {
    url(&format!("/client/v4/accounts/{account}/ai/finetunes"))
}

fn adapter_config(rank: u64) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"peft_type": "LORA", "model_type": "llama", "r": rank,
        "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}),
    )
    .expect("JSON")
}

fn adapter_weights() -> Vec<u8> {
    let (a, b) = (vec![0u8; 8 * 576 * 4], vec![0u8; 576 * 8 * 4]);
    let tensors = [
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            TensorView::new(Dtype::F32, vec![8, 576], &a).expect("A"),
        ),
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            TensorView::new(Dtype::F32, vec![576, 8], &b).expect("B"),
        ),
    ];
    safetensors::serialize(tensors, None).expect("safetensors")
}

async fn upload(account: &str, finetune: &str, file_name: &str, contents: Vec<u8>) -> (u16, Value) {
    upload_to(&finetunes_url(account), finetune, file_name, contents).await
}

/// Uploads to the fine-tunes collection at `finetunes` (of any server).
async fn upload_to(
    finetunes: &str,
    finetune: &str,
    file_name: &str,
    contents: Vec<u8>,
) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .text("file_name", file_name.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::bytes(contents).file_name(file_name.to_owned()),
        );
    let response = client()
        .post(format!("{finetunes}/{finetune}/finetune-assets"))
        .bearer_auth("sk-test")
        .multipart(form)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn create_list_and_upload_with_validation() {
    let account = account();
    let base = finetunes_url(&account.0);

    // The base model must have the LoRA capability.
    let (status, _, body) = post_json(
        &base,
        &json!({"model": "@cf/meta/llama-3.1-8b-instruct", "name": "x"}),
    )
    .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(assert_error_envelope(&body).0, 5005);

    let (status, _, body) = post_json(
        &base,
        &json!({"model": LORA_BASE, "name": "my-adapter", "description": "test"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let finetune = body["result"].clone();
    let id = finetune["id"].as_str().expect("id").to_owned();
    assert_eq!(finetune["name"], "my-adapter");
    assert_eq!(finetune["model"], LORA_BASE);

    let listed: Value = client()
        .get(&base)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["result"], json!([finetune]), "{listed}");

    // Bad assets: 400 / 3039, naming the problem.
    for (file_name, contents, expected) in [
        (
            "adapter_config.json",
            adapter_config(64),
            "larger than the maximum of 32",
        ),
        (
            "adapter_model.safetensors",
            b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}".to_vec(),
            "safetensors",
        ),
        ("weights.bin", vec![0; 10], "file_name must be"),
    ] {
        let (status, body) = upload(&account.0, &id, file_name, contents).await;
        assert_eq!(status, 400, "{body}");
        let (code, message) = assert_error_envelope(&body);
        assert_eq!(code, 3039, "{message}");
        assert!(message.contains(expected), "{message}");
    }

    // A fine-tune without its assets cannot run: 3039.
    let (status, _, body) = post_json(
        &url(&format!(
            "/client/v4/accounts/{}/ai/run/{LORA_BASE}",
            account.0
        )),
        &json!({"prompt": "Hi", "lora": "my-adapter"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_error_envelope(&body).0, 3039);

    // Good assets, by id and by name.
    let (status, body) = upload(&account.0, &id, "adapter_config.json", adapter_config(8)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = upload(
        &account.0,
        "my-adapter",
        "adapter_model.safetensors",
        adapter_weights(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["success"], true);

    // Inference with the adapter (B = 0 here, so the answer is the base model's), by name and
    // by id, on a base with the `lora` property; the account's own fine-tunes only.
    let run_in = |account: &str| url(&format!("/client/v4/accounts/{account}/ai/run/{LORA_BASE}"));
    let question = json!({"prompt": "The sea is", "max_tokens": 12, "temperature": 0});
    let (status, _, plain) = post_json(&run_in(&account.0), &question).await;
    assert_eq!(status, 200, "{plain}");
    for lora in ["my-adapter", id.as_str()] {
        let mut with_lora = question.clone();
        with_lora["lora"] = json!(lora);
        let (status, _, adapted) = post_json(&run_in(&account.0), &with_lora).await;
        assert_eq!(status, 200, "{adapted}");
        assert_eq!(adapted["result"]["response"], plain["result"]["response"]);
    }
    let mut with_lora = question.clone();
    with_lora["lora"] = json!("my-adapter");
    // A model without LoRA support: 405 / 5005.
    let (status, _, body) = post_json(
        &url(&format!(
            "/client/v4/accounts/{}/ai/run/@cf/meta/llama-3.1-8b-instruct",
            account.0
        )),
        &with_lora,
    )
    .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(assert_error_envelope(&body).0, 5005);
    // Another account cannot use it.
    let (status, _, body) = post_json(&run_in("someone-else"), &with_lora).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_error_envelope(&body).0, 3039);

    // Another account sees none of it.
    let other = self::account();
    let listed: Value = client()
        .get(finetunes_url(&other.0))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["result"], json!([]));
    let (status, body) = upload(&other.0, &id, "adapter_config.json", adapter_config(8)).await;
    assert_eq!(status, 400, "{body}");
}

/// `kill -9` right after the answers: the fine-tune and both its assets are there after a
/// restart, and inference uses them.
#[tokio::test]
async fn a_finetune_survives_kill_9() {
    let account = account();
    let first = KilnProcess::start(&[]).await;
    let finetunes = |base: &str| format!("{base}/client/v4/accounts/{}/ai/finetunes", account.0);
    let (status, _, body) = post_json(
        &finetunes(&first.base),
        &json!({"model": LORA_BASE, "name": "durable"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let created = body["result"].clone();
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, body) = upload_to(
        &finetunes(&first.base),
        &id,
        "adapter_config.json",
        adapter_config(8),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = upload_to(
        &finetunes(&first.base),
        &id,
        "adapter_model.safetensors",
        adapter_weights(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    first.kill_9();

    let second = KilnProcess::start(&[]).await;
    let listed: Value = client()
        .get(finetunes(&second.base))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["result"], json!([created]), "{listed}");
    let (status, _, body) = post_json(
        &format!(
            "{}/client/v4/accounts/{}/ai/run/{LORA_BASE}",
            second.base, account.0
        ),
        &json!({"prompt": "The sea is", "max_tokens": 4, "lora": "durable"}),
    )
    .await;
    assert_eq!(status, 200, "both assets survived: {body}");
    second.kill_9();
}

#[tokio::test]
async fn lists_page_and_public_ones_are_listed_for_everyone() {
    let account = account();
    let base = finetunes_url(&account.0);
    let mut public_ids = Vec::new();
    for n in 0..5 {
        let public = n % 2 == 0;
        let (status, _, body) = post_json(
            &base,
            &json!({"model": LORA_BASE, "name": format!("ft-{n}"), "public": public}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["public"], public, "{body}");
        if public {
            public_ids.push(body["result"]["id"].as_str().expect("id").to_owned());
        }
    }
    let (status, _, body) = post_json(
        &base,
        &json!({"model": LORA_BASE, "name": "bad", "public": "yes"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let paged = page_through(&base, 2).await;
    let names: Vec<&str> = paged.iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["ft-0", "ft-1", "ft-2", "ft-3", "ft-4"]);
    // Cloudflare answers the list in one page: without paging, every fine-tune.
    let whole: Value = client()
        .get(&base)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(whole["result"].as_array().map(Vec::len), Some(5), "{whole}");

    // Another account sees the public ones (and only those) in the public list.
    let public_url = url("/client/v4/accounts/someone-else/ai/finetunes/public");
    let listed: Vec<String> = page_through(&public_url, 1)
        .await
        .iter()
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .filter(|id| paged.iter().any(|f| f["id"] == id.as_str()))
        .collect();
    assert_eq!(listed, public_ids);
    let window: Value = client()
        .get(format!("{public_url}?limit=1&offset=0&orderBy=name"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        window["result"].as_array().map(Vec::len),
        Some(1),
        "{window}"
    );
    for bad in ["limit=0", "offset=-1", "orderBy=size"] {
        let response = client()
            .get(format!("{public_url}?{bad}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 400, "{bad}");
    }
}
