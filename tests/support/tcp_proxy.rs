//! A TCP proxy that a test can cut and restore, to take a real server (Redis) away from the
//! application mid-test without stopping it for every other test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

struct ProxyState {
    open: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
}

pub struct TcpProxy {
    address: SocketAddr,
    state: Arc<ProxyState>,
    accept_loop: AbortHandle,
}

impl TcpProxy {
    /// Listens on a free local port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState {
            open: AtomicBool::new(true),
            connections: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_state.open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                accept_state
                    .connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(relay.abort_handle());
            }
        })
        .abort_handle();
        TcpProxy {
            address,
            state,
            accept_loop,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every relayed connection and refuses new ones, as if the server went away.
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        for connection in self
            .state
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            connection.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept_loop.abort();
    }
}
