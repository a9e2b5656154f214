//! The problem `type` base a service configures appears in every problem
//! body. The base is per process: this binary sets it, and nothing else.

mod common;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use common::raw_request;
use tower_harden::error::{HandlerError, Problem};
use tower_harden::{Harden, HardenConfig};

const BASE: &str = "https://api.example.com/problems/";

async fn out_of_stock() -> Result<String, HandlerError> {
    let sku = String::from("A-113");
    Err(HandlerError::problem(
        Problem::new(
            StatusCode::CONFLICT,
            String::from("out-of-stock"),
            "Out of stock",
        )
        .with_detail(format!("{sku} is out of stock")),
    ))
}

async fn elsewhere() -> Result<String, HandlerError> {
    Err(HandlerError::problem(
        Problem::new(StatusCode::GONE, "retired", "Retired")
            .with_type_uri("https://partner.example.org/errors/retired"),
    ))
}

#[tokio::test]
async fn the_configured_base_is_in_every_problem_body() {
    let config = HardenConfig::from_toml(&format!(
        "[problems]\ntype_base = \"{BASE}\"\n[input]\nmax_body = 8\n"
    ))
    .unwrap();
    let harden = Harden::from_config(&config).unwrap();
    let app = Router::new()
        .route("/stock", get(out_of_stock).post(|| async { "ok" }))
        .route("/retired", get(elsewhere))
        .layer(harden.clone().into_layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = harden
        .serve(listener, app)
        .with_graceful_shutdown(std::future::pending());
    tokio::spawn(async move { server.await.unwrap() });

    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
    };
    // A crate refusal (413), axum's 404, the user's own type.
    let too_large = raw_request(
        addr,
        b"POST /stock HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 100\r\n\r\n",
    )
    .await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json()["type"], format!("{BASE}payload-too-large"));
    let missing = raw_request(addr, &get("/nowhere")).await;
    assert_eq!(missing.json()["type"], format!("{BASE}not-found"));
    let own = raw_request(addr, &get("/stock")).await;
    assert_eq!(own.status, 409);
    let json = own.json();
    assert_eq!(json["type"], format!("{BASE}out-of-stock"));
    assert_eq!(json["title"], "Out of stock");
    assert_eq!(json["detail"], "A-113 is out of stock");
    assert_eq!(json["request_id"], own.header("x-request-id").unwrap());
    let retired = raw_request(addr, &get("/retired")).await;
    assert_eq!(
        retired.json()["type"],
        "https://partner.example.org/errors/retired"
    );

    // The base is the process's: another configuration cannot change it.
    let other = HardenConfig::from_toml("[problems]\ntype_base = \"about:blank\"\n").unwrap();
    let error = Harden::from_config(&other).unwrap_err();
    assert_eq!(error.key(), "problems.type_base");
    let bad = HardenConfig::from_toml("[problems]\ntype_base = \"/relative\"\n").unwrap();
    assert_eq!(
        Harden::from_config(&bad).unwrap_err().key(),
        "problems.type_base"
    );
}
