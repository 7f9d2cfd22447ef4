//! A TCP proxy a test can cut: the network between an edge bridge and the cloud. `cut` drops every connection and
//! refuses new ones until `restore`; `stall` keeps every connection open but silent (a link that died without a
//! reset: nothing is forwarded, nothing is closed) until `restore`, which lets new connections through again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Cut,
    Stalled,
}

pub struct Proxy {
    pub addr: SocketAddr,
    link: watch::Sender<Link>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy addr: {e}"));
        let (link, watching) = watch::channel(Link::Up);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let state = *watching.borrow();
                let mut watching = watching.clone();
                match state {
                    Link::Cut => drop(client),
                    // Accepted and never answered, until the link is cut.
                    Link::Stalled => {
                        tokio::spawn(async move {
                            let _held = client;
                            let _ = watching.wait_for(|l| *l == Link::Cut).await;
                        });
                    }
                    Link::Up => {
                        tokio::spawn(async move {
                            let Ok(server) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            let (mut client, mut server) = (client, server);
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                                _ = watching.wait_for(|l| *l != Link::Up) => {}
                            }
                            // Stalled: both ends stay open and hear nothing until the link is cut.
                            let _ = watching.wait_for(|l| *l == Link::Cut).await;
                        });
                    }
                }
            }
        });
        Self {
            addr,
            link,
            accepted,
        }
    }

    pub fn cut(&self) {
        let _ = self.link.send(Link::Cut);
    }

    /// Silences every connection, open and new, without closing any.
    pub fn stall(&self) {
        let _ = self.link.send(Link::Stalled);
    }

    pub fn restore(&self) {
        let _ = self.link.send(Link::Up);
    }

    /// Connections accepted so far (a bridge dialling again shows here).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A round-robin TCP load balancer on a free local port in front of `upstreams` (the local proxy of a
/// several-replica deployment): each new connection goes to the next upstream; an upstream that refuses is skipped.
pub async fn balancer(upstreams: Vec<SocketAddr>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let _ = client.set_nodelay(true);
            let (upstreams, next) = (upstreams.clone(), next.clone());
            tokio::spawn(async move {
                for _ in 0..upstreams.len() {
                    let at = next.fetch_add(1, Ordering::Relaxed) % upstreams.len();
                    if let Ok(mut server) = TcpStream::connect(upstreams[at]).await {
                        let _ = server.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}
