//! `serve` drains on SIGTERM by default: a real signal, sent to a real
//! process (this test binary, run again as a child that serves through the
//! preset), with a request in flight.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use tower_harden::Harden;

const CHILD: &str = "TOWER_HARDEN_SHUTDOWN_CHILD";

/// The child: serves through the preset with `Harden::serve` and no signal
/// of its own, its log on stdout, where the parent reads it.
#[test]
#[ignore = "the child process of sigterm_drains_an_in_flight_request"]
fn child_server() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let harden = Harden::new();
        // The handler says it has started, then reads a body the parent
        // sends only once the server has taken the signal, so the request
        // is in flight across it.
        let app = Router::new()
            .route(
                "/echo",
                post(|body: Body| async move {
                    println!("handler running");
                    let body = axum::body::to_bytes(body, 1024).await.unwrap();
                    format!("echo {}", String::from_utf8_lossy(&body))
                }),
            )
            .layer(harden.clone().into_layer());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening {}", listener.local_addr().unwrap());
        harden.serve(listener, app).await.unwrap();
        println!("server returned");
    });
}

#[test]
fn sigterm_drains_an_in_flight_request() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_server", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut wait_for = |needle: &str| -> String {
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the child ended before printing {needle:?}");
    };
    let addr: SocketAddr = wait_for("listening ")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // The head and the first byte of the body: the handler is running,
    // waiting for the rest.
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nh",
        )
        .unwrap();
    client.flush().unwrap();
    // Until the handler runs, the connection may still wait in the listen
    // backlog, and a listener closed by the signal would reset it.
    wait_for("handler running");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("SIGTERM received; shutting down");

    // The server is draining, and still finishes the request.
    client.write_all(b"ello").unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("echo hello"), "{response}");

    wait_for("server returned");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}
