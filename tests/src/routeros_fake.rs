//! A RouterOS API fake that speaks the real wire protocol (length-prefixed words, sentences ending with an empty
//! word, `!re` / `!done` / `!trap`): login with a name and password, firewall filter rules (add, print with a
//! `?comment=` query, remove), and interfaces (set `disabled`, print with `?name=`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    next: u32,
    rules: Vec<Rule>,
    disabled: BTreeMap<String, bool>,
    logins: Vec<(String, bool)>,
}

pub struct RouterOsFake {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl RouterOsFake {
    /// Listens on 127.0.0.1; accepts `user` / `password` only.
    pub async fn start(user: &str, password: &str, interfaces: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        Self::start_on(listener, user, password, interfaces)
    }

    /// Serves on `listener` (a fixed address, for the demo).
    pub fn start_on(
        listener: TcpListener,
        user: &str,
        password: &str,
        interfaces: &[&str],
    ) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let state = Arc::new(Mutex::new(State::default()));
        for name in interfaces {
            lock(&state).disabled.insert((*name).to_owned(), false);
        }
        let (shared, user, password) = (state.clone(), user.to_owned(), password.to_owned());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (shared, user, password) = (shared.clone(), user.clone(), password.clone());
                tokio::spawn(async move {
                    let _ = session(stream, &shared, &user, &password).await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn rules(&self) -> Vec<Rule> {
        lock(&self.state).rules.clone()
    }

    pub fn interface_disabled(&self, name: &str) -> Option<bool> {
        lock(&self.state).disabled.get(name).copied()
    }

    /// Every login attempt: (name, accepted).
    pub fn logins(&self) -> Vec<(String, bool)> {
        lock(&self.state).logins.clone()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn read_len(stream: &mut TcpStream) -> std::io::Result<usize> {
    let b = stream.read_u8().await?;
    let (mut value, more) = if b & 0x80 == 0 {
        (u32::from(b), 0)
    } else if b & 0xC0 == 0x80 {
        (u32::from(b & 0x3F), 1)
    } else if b & 0xE0 == 0xC0 {
        (u32::from(b & 0x1F), 2)
    } else if b & 0xF0 == 0xE0 {
        (u32::from(b & 0x0F), 3)
    } else {
        (0, 4)
    };
    for _ in 0..more {
        value = value * 256 + u32::from(stream.read_u8().await?);
    }
    Ok(value as usize)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x4000 {
        out.push(0x80 | (len >> 8) as u8);
        out.push(len as u8);
    } else {
        out.push(0xC0 | (len >> 16) as u8);
        out.push((len >> 8) as u8);
        out.push(len as u8);
    }
}

async fn send(stream: &mut TcpStream, sentence: &[String]) -> std::io::Result<()> {
    let mut out = Vec::new();
    for word in sentence {
        put_len(&mut out, word.len());
        out.extend_from_slice(word.as_bytes());
    }
    out.push(0);
    stream.write_all(&out).await
}

async fn session(
    mut stream: TcpStream,
    state: &Mutex<State>,
    user: &str,
    password: &str,
) -> std::io::Result<()> {
    let mut logged_in = false;
    loop {
        let mut words = Vec::new();
        loop {
            let len = read_len(&mut stream).await?;
            if len == 0 {
                break;
            }
            let mut word = vec![0; len];
            stream.read_exact(&mut word).await?;
            words.push(String::from_utf8_lossy(&word).into_owned());
        }
        let Some(command) = words.first().cloned() else {
            continue;
        };
        let attrs: BTreeMap<String, String> = words
            .iter()
            .skip(1)
            .filter_map(|w| {
                w.strip_prefix('=')?
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        let queries: BTreeMap<String, String> = words
            .iter()
            .skip(1)
            .filter_map(|w| {
                w.strip_prefix('?')?
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        let trap = |message: &str| {
            vec![
                vec!["!trap".to_owned(), format!("=message={message}")],
                vec!["!done".to_owned()],
            ]
        };
        let done = || vec![vec!["!done".to_owned()]];
        let replies: Vec<Vec<String>> = if command == "/login" {
            let ok = attrs.get("name").map(String::as_str) == Some(user)
                && attrs.get("password").map(String::as_str) == Some(password);
            lock(state)
                .logins
                .push((attrs.get("name").cloned().unwrap_or_default(), ok));
            logged_in = ok;
            if ok {
                done()
            } else {
                trap("invalid user name or password (6)")
            }
        } else if !logged_in {
            trap("not logged in")
        } else {
            let mut s = lock(state);
            match command.as_str() {
                "/ip/firewall/filter/add" => {
                    s.next += 1;
                    let id = format!("*{:X}", s.next);
                    s.rules.push(Rule {
                        id: id.clone(),
                        attributes: attrs.clone(),
                    });
                    vec![vec!["!done".to_owned(), format!("=ret={id}")]]
                }
                "/ip/firewall/filter/print" => {
                    let mut out: Vec<Vec<String>> = s
                        .rules
                        .iter()
                        .filter(|r| queries.iter().all(|(k, v)| r.attributes.get(k) == Some(v)))
                        .map(|r| {
                            let mut row = vec!["!re".to_owned(), format!("=.id={}", r.id)];
                            row.extend(r.attributes.iter().map(|(k, v)| format!("={k}={v}")));
                            row
                        })
                        .collect();
                    out.push(vec!["!done".to_owned()]);
                    out
                }
                "/ip/firewall/filter/remove" => {
                    let id = attrs.get(".id").cloned().unwrap_or_default();
                    let before = s.rules.len();
                    s.rules.retain(|r| r.id != id);
                    if s.rules.len() == before {
                        trap("no such item")
                    } else {
                        done()
                    }
                }
                "/interface/set" => {
                    let name = attrs
                        .get("numbers")
                        .or_else(|| attrs.get(".id"))
                        .cloned()
                        .unwrap_or_default();
                    match (
                        s.disabled.get_mut(&name),
                        attrs.get("disabled").map(String::as_str),
                    ) {
                        (Some(d), Some(v)) => {
                            *d = matches!(v, "yes" | "true");
                            done()
                        }
                        (None, _) => trap("no such item"),
                        _ => trap("missing disabled"),
                    }
                }
                "/interface/print" => {
                    let mut out: Vec<Vec<String>> = s
                        .disabled
                        .iter()
                        .filter(|(name, _)| queries.get("name").is_none_or(|q| q == *name))
                        .map(|(name, disabled)| {
                            vec![
                                "!re".to_owned(),
                                format!("=name={name}"),
                                format!("=disabled={disabled}"),
                            ]
                        })
                        .collect();
                    out.push(vec!["!done".to_owned()]);
                    out
                }
                _ => trap("no such command"),
            }
        };
        for sentence in replies {
            send(&mut stream, &sentence).await?;
        }
    }
}
