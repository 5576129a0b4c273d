//! The API's edges: malformed requests, health, metrics and the OpenAPI document, unreachable
//! nodes, a node's new key.

use gridwork_api::HealthStatus;
use gridwork_client::{Client, ClientError, TransferOptions};
use gridwork_node::{GenesisSource, Node, NodeConfig};
use gridwork_protocol::dev_keypair;
use gridwork_types::Amount;

use super::support::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors() {
    let t = TestNode::start().await;
    let http = reqwest::Client::new();
    let base = t.client.base_url().to_string();
    let error_code = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        (status, body["error"]["code"].as_str().unwrap().to_string())
    };

    let resp = http
        .post(format!("{base}/v1/txs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (400, "malformed_json".into()));

    let resp = http
        .post(format!("{base}/v1/txs"))
        .json(&serde_json::json!({"tx": "zz"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(resp).await,
        (400, "malformed_transaction".into())
    );

    let resp = http
        .post(format!("{base}/v1/txs"))
        .json(&serde_json::json!({"tx": "00ff"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(resp).await,
        (400, "malformed_transaction".into())
    );

    let resp = http
        .get(format!("{base}/v1/accounts/grid1notanaddress"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (400, "bad_request".into()));

    let resp = http
        .get(format!("{base}/v1/blocks/99999"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "not_found".into()));

    let resp = http
        .get(format!("{base}/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "not_found".into()));

    // The server may close the connection after refusing a body it did not read; a client of
    // its own keeps that from touching the other requests.
    let huge = "00".repeat(100_000);
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/txs"))
        .json(&serde_json::json!({ "tx": huge }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (413, "body_too_large".into()));

    let missing = gridwork_types::Hash([3; 32]);
    assert!(t.client.tx(&missing).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_chain_and_openapi_are_served() {
    let t = TestNode::start().await;
    let health = t.client.health().await.unwrap();
    assert_eq!(health.status, HealthStatus::Ok);
    let chain = t.client.chain().await.unwrap();
    assert_eq!(chain.chain_id, "gridwork-dev");
    assert_eq!(chain.total_supply, Amount::grid(1_000_000_000));

    let base = t.client.base_url().to_string();
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gridwork_head_height 0"), "{metrics}");
    assert!(metrics.contains("# TYPE gridwork_txs_committed_total counter"));

    let doc: serde_json::Value = reqwest::get(format!("{base}/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/declines",
        "/v1/jobs/{id}/tasks/{task}/logs",
        "/v1/chunks",
        "/v1/chunks/fetch",
        "/v1/chunks/missing",
        "/v1/chunks/{id}",
        "/v1/trees/{cid}/keys",
        "/v1/trees/{cid}/pin",
        "/v1/trees/{cid}/pin-from/{base}",
        "/v1/providers",
        "/v1/providers/{address}",
        "/health",
        "/metrics",
        "/v1/chain",
        "/v1/txs",
        "/v1/txs/{hash}",
        "/v1/accounts/{address}",
        "/v1/blocks",
        "/v1/blocks/{id}",
        "/v1/events",
        "/v1/openapi.json",
    ] {
        assert!(paths.contains_key(path), "openapi lacks {path}");
    }
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    // Routes with a path parameter document the 400 a bad one gets; signed writes document
    // the refusals of their signature and the busy answer.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.contains('{') {
                assert!(responses.contains_key("400"), "{method} {path}");
            }
        }
    }
    for (method, path) in [
        ("post", "/v1/chunks"),
        ("put", "/v1/chunks/{id}"),
        ("put", "/v1/trees/{cid}/pin"),
        ("put", "/v1/trees/{cid}/pin-from/{base}"),
        ("post", "/v1/trees/{cid}/keys"),
    ] {
        let responses = &paths[path][method]["responses"];
        for status in ["400", "401", "403", "408", "413", "422", "503"] {
            assert!(responses.get(status).is_some(), "{method} {path} {status}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_node_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::new(&addr.to_string()).chain().await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }));
    assert!(err.to_string().contains("gridwork node --dev"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_signs_for_the_new_key_of_a_node_that_refuses_the_old_one() {
    use gridwork_transfer::DataKey;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "some data").unwrap();
    // Two nodes, each with its own key, serve one after the other at the same address.
    let serve = |name: &str, listener: tokio::net::TcpListener| {
        let config = NodeConfig {
            data_dir: dir.path().join(name),
            block_interval_ms: 20,
            ..NodeConfig::default()
        };
        let node = Node::open(&config, GenesisSource::dev(4)).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(gridwork_node::serve(node.clone(), listener, async {
            let _ = stopped.await;
        }));
        (node, stop, server)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (first, stop, server) = serve("first", listener);
    let client = Client::new(&addr.to_string()).signed_by(dev_keypair(0));
    let key = DataKey::generate();
    let opts = TransferOptions::default();
    client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(client.node_key().await.unwrap(), first.keys().public_key());
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    first.shutdown();

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (second, _stop, _server) = serve("second", listener);
    assert_ne!(second.keys().public_key(), first.keys().public_key());
    // Signed for the first node's key, the upload is refused; the client asks the key again
    // and the push goes through.
    let pushed = client.push_tree(&src, &key, &opts).await.unwrap();
    assert_eq!(pushed.chunks_sent, pushed.chunks);
    assert_eq!(client.node_key().await.unwrap(), second.keys().public_key());
    second.shutdown();
}
