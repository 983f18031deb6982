use std::fs;

use kiln_core::ErrorKind;
use kiln_postgres::TestSchema;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::*;

const ACCOUNT: &str = "acct-1";

/// A store on one backend, with what must outlive it.
struct Backed {
    store: FinetuneStore,
    /// The files backend's root, or the PostgreSQL backend's cache.
    dir: tempfile::TempDir,
    schema: Option<TestSchema>,
}

/// The same store on files and on the local PostgreSQL (a throwaway schema): the tests that
/// are about fine-tunes, not about one backend, run on both.
fn every_backend() -> [Backed; 2] {
    let files = tempfile::tempdir().expect("temp dir");
    let cache = tempfile::tempdir().expect("temp dir");
    let schema = TestSchema::new("finetunes");
    let postgres = FinetuneStore::open_db(
        FinetuneDb::Postgres {
            url: schema.url(),
            cache: cache.path().to_owned(),
        },
        LoraLimits::default(),
    )
    .expect("the PostgreSQL backend opens");
    [
        Backed {
            store: FinetuneStore::new(files.path()),
            dir: files,
            schema: None,
        },
        Backed {
            store: postgres,
            dir: cache,
            schema: Some(schema),
        },
    ]
}

fn config(model_type: &str, rank: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "peft_type": "LORA", "model_type": model_type, "r": rank, "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"]
    }))
    .expect("JSON")
}

/// A rank-`rank` A/B pair for one 4×4 projection, in f32.
fn weights(rank: usize) -> Vec<u8> {
    let a = vec![0u8; rank * 4 * 4];
    let b = vec![0u8; 4 * rank * 4];
    let tensors = [
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            TensorView::new(Dtype::F32, vec![rank, 4], &a).expect("A"),
        ),
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            TensorView::new(Dtype::F32, vec![4, rank], &b).expect("B"),
        ),
    ];
    safetensors::serialize(tensors, None).expect("serialize")
}

fn kind(result: KilnResult<impl std::fmt::Debug>) -> (ErrorKind, String) {
    let error = result.expect_err("refused");
    (error.kind, error.message)
}

#[test]
fn create_upload_find_and_ready() {
    for backed in every_backend() {
        create_upload_find_and_ready_on(&backed.store);
    }
}

fn create_upload_find_and_ready_on(store: &FinetuneStore) {
    let created = store
        .create(
            ACCOUNT,
            "my-adapter",
            "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
            Some("d"),
            false,
        )
        .expect("created");
    assert_eq!(store.list(ACCOUNT).expect("list"), vec![created.clone()]);
    assert!(created.created_at.ends_with('Z'), "{}", created.created_at);
    // Missing assets: 3039.
    assert_eq!(
        kind(store.ready(ACCOUNT, "my-adapter")).0,
        ErrorKind::InvalidFinetune
    );
    store
        .upload(ACCOUNT, &created.id, CONFIG_FILE, &config("llama", 8))
        .expect("config");
    store
        .upload(ACCOUNT, "my-adapter", WEIGHTS_FILE, &weights(8))
        .expect("weights");
    let ready = store.ready(ACCOUNT, "my-adapter").expect("ready");
    assert_eq!(ready.config.rank, 8);
    assert_eq!(ready.config.scale(), 2.0);
    assert!(ready.weights_path().is_file());
    // Another account sees nothing.
    assert!(store.list("acct-2").expect("list").is_empty());
    assert!(store.find("acct-2", "my-adapter").is_err());
}

#[test]
fn bad_assets_are_refused_and_leave_nothing_behind() {
    for backed in every_backend() {
        bad_assets_are_refused_on(&backed);
    }
}

fn bad_assets_are_refused_on(backed: &Backed) {
    let store = &backed.store;
    let finetune = store
        .create(
            ACCOUNT,
            "a",
            "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
            None,
            false,
        )
        .expect("created");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            CONFIG_FILE,
            config("llama", 64),
            "larger than the maximum of 32",
        ),
        (CONFIG_FILE, config("gpt2", 8), "model_type \"gpt2\""),
        (CONFIG_FILE, b"{not json".to_vec(), "not valid JSON"),
        (
            WEIGHTS_FILE,
            b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage".to_vec(),
            "not a valid safetensors",
        ),
        ("adapter.bin", vec![1, 2, 3], "file_name must be"),
    ];
    for (file, contents, expected) in cases {
        let (error_kind, message) = kind(store.upload(ACCOUNT, "a", file, &contents));
        assert_eq!(error_kind, ErrorKind::InvalidFinetune, "{message}");
        assert!(message.contains(expected), "{message}");
    }
    for file in [CONFIG_FILE, WEIGHTS_FILE] {
        let stored = store
            .backend
            .asset(ACCOUNT, &finetune.id, file)
            .expect("read");
        assert_eq!(stored, None, "{file} stored although refused");
    }
    if backed.schema.is_none() {
        let finetune_dir = backed.dir.path().join(ACCOUNT).join(&finetune.id);
        let files: Vec<String> = fs::read_dir(&finetune_dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            files,
            vec!["finetune.json".to_owned()],
            "nothing half-written"
        );
    }
    // An asset cannot be replaced.
    store
        .upload(ACCOUNT, "a", CONFIG_FILE, &config("llama", 8))
        .expect("first");
    assert!(
        kind(store.upload(ACCOUNT, "a", CONFIG_FILE, &config("llama", 8)))
            .1
            .contains("already uploaded")
    );
}

#[test]
fn the_101st_fine_tune_and_duplicate_names_are_refused() {
    for backed in every_backend() {
        the_101st_is_refused_on(&backed.store);
    }
}

fn the_101st_is_refused_on(store: &FinetuneStore) {
    for index in 0..MAX_FINETUNES_PER_ACCOUNT {
        store
            .create(ACCOUNT, &format!("ft-{index}"), "m", None, false)
            .expect("within the limit");
    }
    let (error_kind, message) = kind(store.create(ACCOUNT, "one-more", "m", None, false));
    assert_eq!(error_kind, ErrorKind::InvalidFinetune);
    assert!(message.contains("100"), "{message}");
    store
        .create("other", "ft-0", "m", None, false)
        .expect("names and limits are per account");
    let (_, message) = kind(store.create(ACCOUNT, "ft-0", "m", None, false));
    assert!(message.contains("already exists"), "{message}");
}

#[test]
fn unsafe_account_ids_and_names_are_refused() {
    for backed in every_backend() {
        unsafe_ids_are_refused_on(&backed.store);
    }
}

fn unsafe_ids_are_refused_on(store: &FinetuneStore) {
    assert_eq!(kind(store.list("../etc")).0, ErrorKind::BadInput);
    assert_eq!(
        kind(store.create(ACCOUNT, "a/b", "m", None, false)).0,
        ErrorKind::BadInput
    );
    assert_eq!(
        kind(store.create(ACCOUNT, "cf-public-x", "m", None, false)).0,
        ErrorKind::BadInput
    );
}

/// A file of `names.len()` tensors, A/B alternating, with the given shapes.
fn weights_with(tensors: &[(&str, Vec<usize>)]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| vec![0u8; shape.iter().product::<usize>() * 4])
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            (
                *name,
                TensorView::new(Dtype::F32, shape.clone(), bytes).expect("view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

const Q_A: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const Q_B: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

#[test]
fn a_tensor_that_disagrees_with_the_rank_is_refused_naming_it() {
    for backed in every_backend() {
        a_tensor_that_disagrees_is_refused_on(&backed.store);
    }
}

fn a_tensor_that_disagrees_is_refused_on(store: &FinetuneStore) {
    for name in ["config-first", "weights-first"] {
        store
            .create(ACCOUNT, name, "m", None, false)
            .expect("created");
    }
    // Rank 4 tensors against r = 8, config first: the weights are refused.
    store
        .upload(ACCOUNT, "config-first", CONFIG_FILE, &config("llama", 8))
        .expect("config");
    let (error_kind, message) =
        kind(store.upload(ACCOUNT, "config-first", WEIGHTS_FILE, &weights(4)));
    assert_eq!(error_kind, ErrorKind::InvalidFinetune, "{message}");
    assert!(
        message.contains(Q_A) && message.contains("r = 8"),
        "{message}"
    );
    // Weights first: the config is refused.
    store
        .upload(ACCOUNT, "weights-first", WEIGHTS_FILE, &weights(4))
        .expect("weights alone are consistent");
    let (error_kind, message) =
        kind(store.upload(ACCOUNT, "weights-first", CONFIG_FILE, &config("llama", 8)));
    assert_eq!(error_kind, ErrorKind::InvalidFinetune, "{message}");
    assert!(message.contains(Q_A), "{message}");
    store
        .upload(ACCOUNT, "weights-first", CONFIG_FILE, &config("llama", 4))
        .expect("the matching rank");
    // A lora_B whose rank disagrees (A agrees) is named too.
    let mismatched_b = weights_with(&[(Q_A, vec![8, 4]), (Q_B, vec![4, 6])]);
    let (_, message) = kind(validate_weights(
        &mismatched_b,
        &LoraLimits::default(),
        Some(8),
    ));
    assert!(message.contains("not a rank-r pair"), "{message}");
    let lone_b = weights_with(&[
        (Q_A, vec![8, 4]),
        (Q_B, vec![4, 8]),
        ("x.lora_B.weight", vec![4, 2]),
    ]);
    let (_, message) = kind(validate_weights(&lone_b, &LoraLimits::default(), Some(8)));
    assert!(message.contains("x.lora_B.weight"), "{message}");
}

#[test]
fn tensor_count_and_size_are_bounded_before_parsing() {
    let limits = LoraLimits {
        max_tensors: 3,
        max_tensor_elements: 64,
    };
    let four = weights_with(&[
        (Q_A, vec![2, 4]),
        (Q_B, vec![4, 2]),
        (
            "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight",
            vec![2, 4],
        ),
        (
            "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
            vec![4, 2],
        ),
    ]);
    let error = validate_weights(&four, &limits, None).expect_err("refused");
    assert_eq!((error.status(), error.code()), (400, 5006));
    assert!(
        error.message.contains("limits.lora.max_tensors"),
        "{}",
        error.message
    );

    let big = weights_with(&[(Q_A, vec![2, 40]), (Q_B, vec![4, 2])]);
    let error = validate_weights(&big, &limits, None).expect_err("refused");
    assert_eq!((error.status(), error.code()), (413, 3006));
    assert!(error.message.contains(Q_A), "{}", error.message);
    assert!(
        error.message.contains("limits.lora.max_tensor_elements"),
        "{}",
        error.message
    );
    validate_weights(&weights(8), &limits, Some(8)).expect("within the limits");

    // A header that declares 200,000 tensors is refused at the fourth, whatever follows.
    let mut header = String::from("{");
    for index in 0..200_000 {
        header.push_str(&format!(
            "\"t{index}\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}},"
        ));
    }
    header.pop();
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    let error = validate_weights(&file, &limits, None).expect_err("refused");
    assert!(error.message.contains("max_tensors"), "{}", error.message);

    // Shapes that overflow or have absurd ranks never allocate.
    for shape in [
        "[4294967296,4294967296,4294967296]",
        "[1,1,1,1,1,1,1,1,1,1,1,1]",
    ] {
        let header =
            format!("{{\"{Q_A}\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":[0,4]}}}}");
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&[0; 4]);
        assert!(validate_weights(&file, &limits, None).is_err(), "{shape}");
    }
    // A header length beyond the file.
    let mut lying = u64::MAX.to_le_bytes().to_vec();
    lying.extend_from_slice(b"{}");
    let (_, message) = kind(validate_weights(&lying, &limits, None));
    assert!(message.contains("not a valid safetensors"), "{message}");
}

#[test]
fn the_header_is_read_alone_from_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(WEIGHTS_FILE);
    fs::write(&path, weights(8)).expect("written");
    let tensors = read_weights_header(&path, &LoraLimits::default()).expect("read");
    assert_eq!(tensors.len(), 2);
    check_pairs(&tensors, Some(8)).expect("rank 8");
    assert!(check_pairs(&tensors, Some(16)).is_err());
}

#[path = "../../../tests/disk_full.rs"]
mod disk_full;

/// A full disk: creating and uploading fail with an error and leave nothing behind, what was
/// stored before is still usable, and once space is back both work again.
#[test]
fn a_full_disk_refuses_writes_and_loses_none_acknowledged() {
    let Some(disk) = disk_full::SmallDisk::mount("fine-tunes") else {
        return;
    };
    let store = FinetuneStore::new(disk.path().join("finetunes"));
    let model = "@cf/meta/llama-3.3-70b-instruct-fp8-fast";
    store
        .create(ACCOUNT, "ready", model, None, false)
        .expect("created");
    store
        .upload(ACCOUNT, "ready", CONFIG_FILE, &config("llama", 8))
        .expect("config");
    store
        .upload(ACCOUNT, "ready", WEIGHTS_FILE, &weights(8))
        .expect("weights");
    store
        .create(ACCOUNT, "waiting", model, None, false)
        .expect("created");

    disk.fill();
    let (_, message) = kind(store.create(ACCOUNT, "refused", model, None, false));
    assert!(disk_full::says_disk_full(&message), "{message}");
    let (_, message) = kind(store.upload(ACCOUNT, "waiting", CONFIG_FILE, &config("llama", 8)));
    assert!(disk_full::says_disk_full(&message), "{message}");
    let mut names: Vec<String> = store
        .list(ACCOUNT)
        .expect("list")
        .into_iter()
        .map(|f| f.name)
        .collect();
    // Both may share a creation second; the list's order then rests on random ids.
    names.sort();
    assert_eq!(names, ["ready", "waiting"]);
    store.ready(ACCOUNT, "ready").expect("still usable");
    let waiting = store.find(ACCOUNT, "waiting").expect("found");
    let leftovers = std::fs::read_dir(
        disk.path()
            .join("finetunes")
            .join(ACCOUNT)
            .join(&waiting.id),
    )
    .expect("dir")
    .count();
    assert_eq!(
        leftovers, 1,
        "only finetune.json: no partial upload left behind"
    );

    disk.free();
    store
        .create(ACCOUNT, "refused", model, None, false)
        .expect("created");
    store
        .upload(ACCOUNT, "waiting", CONFIG_FILE, &config("llama", 8))
        .expect("config");
    store
        .upload(ACCOUNT, "waiting", WEIGHTS_FILE, &weights(8))
        .expect("weights");
    let reopened = FinetuneStore::new(disk.path().join("finetunes"));
    reopened
        .ready(ACCOUNT, "waiting")
        .expect("usable after a restart");
    assert_eq!(reopened.list(ACCOUNT).expect("list").len(), 3);
}

/// Two nodes on one PostgreSQL: a fine-tune created and uploaded through one is listed and
/// ready on the other, whose adapter files are written to its own cache on first use.
#[test]
fn a_fine_tune_uploaded_through_one_node_is_ready_on_another() {
    let schema = TestSchema::new("finetunes");
    let node = |cache: &std::path::Path| {
        FinetuneStore::open_db(
            FinetuneDb::Postgres {
                url: schema.url(),
                cache: cache.to_owned(),
            },
            LoraLimits::default(),
        )
        .expect("opens")
    };
    let (cache_a, cache_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (node(cache_a.path()), node(cache_b.path()));
    let created = a
        .create(
            ACCOUNT,
            "shared",
            "@cf/meta/llama-3.1-8b-instruct",
            None,
            true,
        )
        .expect("created");
    a.upload(ACCOUNT, "shared", WEIGHTS_FILE, &weights(8))
        .expect("weights");
    // The second asset through the other node is checked against the first.
    let (_, message) = kind(b.upload(ACCOUNT, "shared", CONFIG_FILE, &config("llama", 4)));
    assert!(message.contains(Q_A), "{message}");
    b.upload(ACCOUNT, "shared", CONFIG_FILE, &config("llama", 8))
        .expect("config");
    assert_eq!(b.list(ACCOUNT).expect("list"), vec![created.clone()]);
    assert_eq!(b.list_public().expect("public"), vec![created.clone()]);
    let ready = b.ready(ACCOUNT, "shared").expect("ready");
    assert!(ready.dir.starts_with(cache_b.path()));
    assert_eq!(
        fs::read(ready.weights_path()).expect("cached"),
        weights(8),
        "the cached weights are the uploaded ones"
    );
    // One name per account across nodes.
    let (_, message) = kind(b.create(ACCOUNT, "shared", "m", None, false));
    assert!(message.contains("already exists"), "{message}");
}
