//! Tokens mode: every route needs a token of its account with the right scope.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_accounts::{AccountStore, Plan, Scope};
use kiln_http::platform::AuthMode;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{self, client, spawn_server, test_config};

const EMBEDDING_MODEL: &str = "@cf/baai/bge-base-en-v1.5";

pub struct Tenant {
    pub id: String,
    pub token: String,
}

pub struct TokensServer {
    pub addr: SocketAddr,
    pub db: PathBuf,
    pub a: Tenant,
    pub b: Tenant,
    /// A's token that may only run models (`workers-ai:read`).
    pub a_read_only: String,
    /// A token of the binding account (`local`), which Worker binding routes act for.
    pub binding: Tenant,
}

pub fn server() -> &'static TokensServer {
    static SERVER: OnceLock<TokensServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = common::private_state_dir().join("tokens-mode");
        let db = dir.join("accounts.db");
        let store = AccountStore::open(&db).expect("accounts db");
        let tenant = |name: &str| {
            let account = store
                .create_account(None, name, Plan::Paid)
                .expect("account");
            let (_, token) = store
                .create_token(&account.id, "all", &Scope::ALL)
                .expect("token");
            Tenant {
                id: account.id,
                token,
            }
        };
        let (a, b) = (tenant("a"), tenant("b"));
        let (_, a_read_only) = store
            .create_token(&a.id, "read", &[Scope::WorkersAiRead])
            .expect("token");
        let binding_account = store
            .create_account(Some("local"), "binding", Plan::Paid)
            .expect("binding account");
        let (_, binding_token) = store
            .create_token(&binding_account.id, "workerd", &Scope::ALL)
            .expect("token");
        let binding = Tenant {
            id: binding_account.id,
            token: binding_token,
        };
        // Every interface: the binding test below calls from a non-loopback address too.
        let any_interface = SocketAddr::from(([0, 0, 0, 0], 0));
        let port = spawn_server(kiln::ServeConfig {
            listen: Some(any_interface),
            auth: Some(AuthMode::Tokens),
            accounts_db: Some(db.clone()),
            batch_db: Some(dir.join("batches.db")),
            gateway_db: Some(dir.join("gateway.db")),
            vectorize_dir: Some(dir.join("vectorize")),
            ..test_config()
        })
        .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        TokensServer {
            addr,
            db,
            a,
            b,
            a_read_only,
            binding,
        }
    })
}

pub async fn call(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", server().addr);
    let mut request = client().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn account_path(account: &str, rest: &str) -> String {
    format!("/client/v4/accounts/{account}{rest}")
}

fn assert_authentication_error(status: u16, body: &Value, expected_status: u16) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["errors"][0]["code"], 10000, "{body}");
    assert_eq!(
        body["errors"][0]["message"], "Authentication error",
        "{body}"
    );
}

#[tokio::test]
async fn missing_or_bad_tokens_get_401_on_both_surfaces() {
    let s = server();
    let run = account_path(&s.a.id, &format!("/ai/run/{EMBEDDING_MODEL}"));
    let input = json!({"text": "hello"});
    let (status, body) = call(Method::POST, &run, None, Some(input.clone())).await;
    assert_authentication_error(status, &body, 401);
    let forged = format!("{}x", s.a.token);
    let (status, body) = call(Method::POST, &run, Some(&forged), Some(input.clone())).await;
    assert_authentication_error(status, &body, 401);
    let (status, body) = call(
        Method::POST,
        &run,
        Some("kiln_0000000000000000_guess"),
        Some(input.clone()),
    )
    .await;
    assert_authentication_error(status, &body, 401);
    let (status, body) = call(Method::POST, &run, Some(&s.a.token), Some(input)).await;
    assert_eq!(status, 200, "{body}");

    // The OpenAI surface answers in OpenAI's shape, and knows the account from the token.
    let embeddings = json!({"model": EMBEDDING_MODEL, "input": "hello"});
    let (status, body) = call(
        Method::POST,
        "/v1/embeddings",
        None,
        Some(embeddings.clone()),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    let (status, body) = call(
        Method::POST,
        "/v1/embeddings",
        Some(&s.a.token),
        Some(embeddings),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Account B's resources, made with B's token; A's token must reach none of them.
struct BResources {
    gateway: String,
    log_id: String,
    index: String,
    request_id: String,
}

async fn b_resources() -> BResources {
    let s = server();
    let b = |rest: &str| account_path(&s.b.id, rest);
    let token = Some(s.b.token.as_str());
    let gateway = "b-gateway".to_owned();
    let (status, body) = call(
        Method::POST,
        &b("/ai-gateway/gateways"),
        token,
        Some(json!({"id": gateway})),
    )
    .await;
    assert!(status == 200 || status == 409, "{body}");
    // One logged request through B's gateway (the workers-ai provider takes B's token).
    let response = client()
        .post(format!(
            "http://{}/v1/{}/{gateway}/workers-ai/{EMBEDDING_MODEL}",
            s.addr, s.b.id
        ))
        .bearer_auth(&s.b.token)
        .json(&json!({"text": "secret of b"}))
        .send()
        .await
        .expect("gateway request");
    assert_eq!(response.status(), 200);
    let log_id = response.headers()["cf-aig-log-id"]
        .to_str()
        .expect("log id")
        .to_owned();

    let index = "b-index".to_owned();
    let (status, body) = call(
        Method::POST,
        &b("/vectorize/v2/indexes"),
        token,
        Some(json!({"name": index, "config": {"dimensions": 3, "metric": "cosine"}})),
    )
    .await;
    assert!(status == 201 || status == 409, "{body}");

    let (status, body) = call(
        Method::POST,
        &b(&format!("/ai/run/{EMBEDDING_MODEL}?queueRequest=true")),
        token,
        Some(json!({"requests": [{"text": "b's batch"}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let request_id = body["result"]["request_id"]
        .as_str()
        .expect("request id")
        .to_owned();
    BResources {
        gateway,
        log_id,
        index,
        request_id,
    }
}

#[tokio::test]
async fn a_token_of_account_a_gets_nothing_of_account_b() {
    let s = server();
    let theirs = b_resources().await;
    let a_token = Some(s.a.token.as_str());
    let poll = json!({"request_id": theirs.request_id});
    let queue_url = |account: &str| {
        account_path(
            account,
            &format!("/ai/run/{EMBEDDING_MODEL}?queueRequest=true"),
        )
    };

    // B's paths with A's token: refused before anything is looked up.
    let on_b = [
        (
            Method::GET,
            account_path(&s.b.id, "/ai-gateway/gateways"),
            None,
        ),
        (
            Method::GET,
            account_path(
                &s.b.id,
                &format!("/ai-gateway/gateways/{}/logs", theirs.gateway),
            ),
            None,
        ),
        (
            Method::GET,
            account_path(
                &s.b.id,
                &format!(
                    "/ai-gateway/gateways/{}/logs/{}",
                    theirs.gateway, theirs.log_id
                ),
            ),
            None,
        ),
        (
            Method::GET,
            account_path(&s.b.id, &format!("/vectorize/v2/indexes/{}", theirs.index)),
            None,
        ),
        (
            Method::POST,
            account_path(
                &s.b.id,
                &format!("/vectorize/v2/indexes/{}/query", theirs.index),
            ),
            Some(json!({"vector": [1, 0, 0]})),
        ),
        (Method::GET, account_path(&s.b.id, "/ai/finetunes"), None),
        (Method::GET, account_path(&s.b.id, "/ai/usage"), None),
        (Method::POST, queue_url(&s.b.id), Some(poll.clone())),
    ];
    for (method, path, body) in on_b {
        let (status, answer) = call(method, &path, a_token, body).await;
        assert_authentication_error(status, &answer, 403);
        assert!(
            !answer.to_string().contains("secret of b"),
            "{path}: {answer}"
        );
    }

    // B's ids on A's own paths: not found, exactly as ids that never existed.
    let on_a = [
        (
            Method::GET,
            account_path(&s.a.id, &format!("/ai-gateway/gateways/{}", theirs.gateway)),
            None,
        ),
        (
            Method::GET,
            account_path(
                &s.a.id,
                &format!(
                    "/ai-gateway/gateways/{}/logs/{}",
                    theirs.gateway, theirs.log_id
                ),
            ),
            None,
        ),
        (
            Method::GET,
            account_path(&s.a.id, &format!("/vectorize/v2/indexes/{}", theirs.index)),
            None,
        ),
        (Method::POST, queue_url(&s.a.id), Some(poll)),
    ];
    for (method, path, body) in on_a {
        let (status, answer) = call(method, &path, a_token, body).await;
        assert_eq!(status, 404, "{path}: {answer}");
        assert_eq!(answer["success"], false, "{path}: {answer}");
    }
    let (status, listed) = call(
        Method::GET,
        &account_path(&s.a.id, "/ai-gateway/gateways"),
        a_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert!(!listed.to_string().contains(&theirs.gateway), "{listed}");
    let (status, listed) = call(
        Method::GET,
        &account_path(&s.a.id, "/vectorize/v2/indexes"),
        a_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert!(!listed.to_string().contains(&theirs.index), "{listed}");

    // B itself still sees all of it.
    let (status, log) = call(
        Method::GET,
        &account_path(
            &s.b.id,
            &format!(
                "/ai-gateway/gateways/{}/logs/{}",
                theirs.gateway, theirs.log_id
            ),
        ),
        Some(&s.b.token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{log}");
}

#[tokio::test]
async fn scopes_limit_what_a_token_may_do() {
    let s = server();
    let read_only = Some(s.a_read_only.as_str());
    let a = |rest: &str| account_path(&s.a.id, rest);
    let (status, body) = call(
        Method::POST,
        &a(&format!("/ai/run/{EMBEDDING_MODEL}")),
        read_only,
        Some(json!({"text": "ok"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(Method::GET, &a("/ai/models/search"), read_only, None).await;
    assert_eq!(status, 200, "{body}");
    let refused = [
        (
            Method::POST,
            a("/vectorize/v2/indexes"),
            Some(json!({"name": "x", "config": {"dimensions": 3, "metric": "cosine"}})),
        ),
        (Method::GET, a("/vectorize/v2/indexes"), None),
        (Method::GET, a("/ai-gateway/gateways"), None),
        (
            Method::POST,
            a("/ai/finetunes"),
            Some(json!({"model": "@cf/meta/llama-3.1-8b-instruct", "name": "x"})),
        ),
    ];
    for (method, path, body) in refused {
        let (status, answer) = call(method, &path, read_only, body).await;
        assert_authentication_error(status, &answer, 403);
    }
}

#[tokio::test]
async fn a_revoked_token_stops_working_on_the_next_request() {
    let s = server();
    // Another connection to the same file: what `kiln tokens revoke` does from its own process.
    let store = AccountStore::open(&s.db).expect("accounts db");
    let (token, secret) = store
        .create_token(&s.a.id, "short-lived", &[Scope::WorkersAiRead])
        .expect("token");
    let search = account_path(&s.a.id, "/ai/models/search");
    let (status, body) = call(Method::GET, &search, Some(&secret), None).await;
    assert_eq!(status, 200, "{body}");
    store.revoke_token(&token.id).expect("revoked");
    let (status, body) = call(Method::GET, &search, Some(&secret), None).await;
    assert_authentication_error(status, &body, 401);
}

#[tokio::test]
async fn auto_mode_is_open_until_the_first_token_exists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("accounts.db");
    let addr = spawn_server(kiln::ServeConfig {
        auth: Some(AuthMode::Auto),
        accounts_db: Some(db.clone()),
        batch_db: Some(dir.path().join("batches.db")),
        ..test_config()
    });
    let search = format!("http://{addr}/client/v4/accounts/local/ai/models/search");
    let response = client().get(&search).send().await.expect("sent");
    assert_eq!(response.status(), 200, "open while no token exists");

    let store = AccountStore::open(&db).expect("accounts db");
    let account = store
        .create_account(Some("local"), "local", Plan::Paid)
        .expect("account");
    let (_, secret) = store
        .create_token(&account.id, "first", &[Scope::WorkersAiRead])
        .expect("token");
    let response = client().get(&search).send().await.expect("sent");
    assert_eq!(response.status(), 401, "the first token closes open mode");
    let response = client()
        .get(&search)
        .bearer_auth(&secret)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    // Revoking the last token does not reopen the server: it stays closed, and says why.
    let token_id = store.tokens(Some(&account.id)).expect("tokens")[0]
        .id
        .clone();
    store.revoke_token(&token_id).expect("revoked");
    for token in [None, Some(&secret)] {
        let mut request = client().get(&search);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), 401, "after the last token was revoked");
        let body: Value = response.json().await.expect("JSON");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("revoked"), "{body}");
    }
}

/// This machine's address on its default route, if it has one besides loopback.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    socket
        .connect("192.0.2.255:9")
        .or_else(|_| socket.connect("10.255.255.255:9"))
        .ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn binding_routes_need_a_token_of_the_binding_account_while_tokens_are_required() {
    let s = server();
    let call = |host: String, token: Option<String>| async move {
        let mut request = client()
            .post(format!("http://{host}/run?version=3"))
            .header("cf-consn-model-id", EMBEDDING_MODEL)
            .json(&json!({"inputs": {"text": "hi"}, "options": {}}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("sent").status().as_u16()
    };
    // Loopback is not trusted by default: Kiln's own provider calls come from it too.
    assert_eq!(
        call(s.addr.to_string(), None).await,
        401,
        "loopback, no token"
    );
    assert_eq!(
        call(s.addr.to_string(), Some(s.binding.token.clone())).await,
        200,
        "a token of the binding account, as workerd's injectRequestHeaders adds it"
    );
    assert_eq!(
        call(s.addr.to_string(), Some(s.a.token.clone())).await,
        403,
        "a token of another account than the binding's"
    );
    let Some(ip) = non_loopback_address() else {
        eprintln!("no non-loopback address on this machine: only the loopback half was checked");
        return;
    };
    let remote = SocketAddr::new(ip, s.addr.port()).to_string();
    assert_eq!(
        call(remote.clone(), None).await,
        401,
        "a remote caller without a token"
    );
    assert_eq!(
        call(remote.clone(), Some(s.a.token.clone())).await,
        403,
        "a token of another account than the binding's"
    );
    assert_eq!(call(remote, Some(s.binding.token.clone())).await, 200);
}

/// An authenticated gateway's `cf-aig-authorization` must be a token of the gateway's account
/// with `ai-gateway:run`, while the `workers-ai` provider behind it takes the caller's own token.
#[tokio::test]
async fn an_authenticated_gateway_takes_only_its_accounts_run_tokens() {
    let s = server();
    let gateway = "a-private-gateway";
    let (status, body) = call(
        Method::POST,
        &account_path(&s.a.id, "/ai-gateway/gateways"),
        Some(&s.a.token),
        Some(json!({"id": gateway, "authentication": true})),
    )
    .await;
    assert!(status == 200 || status == 409, "{body}");
    let through_gateway = |gateway_token: Option<String>| async move {
        let mut request = client()
            .post(format!(
                "http://{}/v1/{}/{gateway}/workers-ai/{EMBEDDING_MODEL}",
                s.addr, s.a.id
            ))
            .bearer_auth(&s.a.token)
            .json(&json!({"text": "hello"}));
        if let Some(token) = gateway_token {
            request = request.header("cf-aig-authorization", format!("Bearer {token}"));
        }
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (status, body) = through_gateway(None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"][0]["code"], 2009, "{body}");
    let (status, body) = through_gateway(Some(s.b.token.clone())).await;
    assert_eq!(status, 401, "another account's token: {body}");
    let (status, body) = through_gateway(Some(s.a_read_only.clone())).await;
    assert_eq!(status, 401, "a token without ai-gateway:run: {body}");
    let (status, body) = through_gateway(Some(s.a.token.clone())).await;
    assert_eq!(status, 200, "{body}");
}

/// Secrets never reach the log, even at trace level and for refused requests.
#[tokio::test]
async fn tokens_never_reach_the_log() {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("accounts.db");
    let store = AccountStore::open(&db).expect("accounts db");
    let account = store
        .create_account(None, "logged", Plan::Paid)
        .expect("account");
    let (_, secret) = store
        .create_token(&account.id, "secret", &Scope::ALL)
        .expect("token");
    let log_path = dir.path().join("kiln.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let kiln = common::KilnProcess::start_with_log(
        &[
            OsStr::new("--accounts-db"),
            db.as_os_str(),
            OsStr::new("--auth"),
            OsStr::new("tokens"),
        ],
        log,
    )
    .await;
    let run = format!(
        "{}/client/v4/accounts/{}/ai/run/{EMBEDDING_MODEL}",
        kiln.base, account.id
    );
    let forged = format!("{}{}", &secret[..secret.len() - 4], "XXXX");
    for (token, expected) in [(&secret, 200), (&forged, 401)] {
        let response = client()
            .post(&run)
            .bearer_auth(token)
            .header("x-auth-key", token.as_str())
            .json(&json!({"text": "log me not"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), expected);
    }
    kiln.kill_9();
    let logged = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        logged.contains("POST"),
        "the log has the requests: {logged}"
    );
    let random_part = secret.rsplit('_').next().expect("secret");
    assert!(
        !logged.contains(random_part),
        "a token secret is in the log"
    );
    assert!(!logged.contains(&forged[forged.len() - 20..]));
}
