//! The MikroTik RouterOS API (TCP 8728): sentences of length-prefixed words ending with an empty word; replies
//! `!re` (a row), `!done`, `!trap` (an error, with `=message=`) or `!fatal`. A station is "on" when its traffic is
//! allowed: either no `drop` filter rule for its MAC (rules carry `comment=switchyard:<station id>`), or its
//! interface enabled.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest word read from a router: filter rules and interface rows are short; a longer one is not a router's.
const MAX_WORD_BYTES: usize = 64 * 1024;

/// How long one command's whole answer may take.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// RouterOS's variable-length word length.
pub fn encode_length(len: usize) -> Vec<u8> {
    let len = len as u32;
    match len {
        0..=0x7F => vec![len as u8],
        0x80..=0x3FFF => (len | 0x8000).to_be_bytes()[2..].to_vec(),
        0x4000..=0x1F_FFFF => (len | 0xC0_0000).to_be_bytes()[1..].to_vec(),
        0x20_0000..=0x0FFF_FFFF => (len | 0xE000_0000).to_be_bytes().to_vec(),
        _ => {
            let mut bytes = vec![0xF0];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes
        }
    }
}

async fn read_length(stream: &mut TcpStream) -> anyhow::Result<usize> {
    let first = stream.read_u8().await?;
    let (mut value, extra) = match first {
        0x00..=0x7F => (u32::from(first), 0),
        0x80..=0xBF => (u32::from(first & 0x3F), 1),
        0xC0..=0xDF => (u32::from(first & 0x1F), 2),
        0xE0..=0xEF => (u32::from(first & 0x0F), 3),
        0xF0 => (0, 4),
        _ => anyhow::bail!("RouterOS sent a reserved length byte {first:#x}"),
    };
    for _ in 0..extra {
        value = (value << 8) | u32::from(stream.read_u8().await?);
    }
    Ok(value as usize)
}

pub struct RouterOs {
    stream: TcpStream,
}

impl RouterOs {
    /// Connects to `host:port` (8728 when no port) and logs in.
    pub async fn connect(host: &str, user: &str, password: &str) -> anyhow::Result<Self> {
        let addr = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:8728")
        };
        let stream =
            tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(addr))
                .await??;
        let mut router = Self { stream };
        router
            .call(&[
                "/login",
                &format!("=name={user}"),
                &format!("=password={password}"),
            ])
            .await?;
        Ok(router)
    }

    async fn write_sentence(&mut self, words: &[&str]) -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        for word in words {
            bytes.extend(encode_length(word.len()));
            bytes.extend_from_slice(word.as_bytes());
        }
        bytes.push(0);
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    async fn read_sentence(&mut self) -> anyhow::Result<Vec<String>> {
        let mut words = Vec::new();
        loop {
            let len = read_length(&mut self.stream).await?;
            if len == 0 {
                return Ok(words);
            }
            if len > MAX_WORD_BYTES {
                anyhow::bail!(
                    "RouterOS sent a word of {len} bytes (at most {MAX_WORD_BYTES} are read)"
                );
            }
            let mut word = vec![0; len];
            self.stream.read_exact(&mut word).await?;
            words.push(String::from_utf8_lossy(&word).into_owned());
        }
    }

    /// Runs a command; returns its `!re` rows as `key=value` maps. A router that does not finish its answer within
    /// [`CALL_TIMEOUT`] fails the call (the next reconcile tries again), so one silent router never holds up the
    /// bridge's other devices.
    pub async fn call(
        &mut self,
        words: &[&str],
    ) -> anyhow::Result<Vec<std::collections::HashMap<String, String>>> {
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(words))
            .await
            .map_err(|_| anyhow::anyhow!("RouterOS did not answer within {CALL_TIMEOUT:?}"))?
    }

    async fn exchange(
        &mut self,
        words: &[&str],
    ) -> anyhow::Result<Vec<std::collections::HashMap<String, String>>> {
        self.write_sentence(words).await?;
        let mut rows = Vec::new();
        let mut trap = None;
        loop {
            let sentence = self.read_sentence().await?;
            let attributes: std::collections::HashMap<String, String> = sentence
                .iter()
                .skip(1)
                .filter_map(|w| {
                    w.strip_prefix('=')?
                        .split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect();
            match sentence.first().map(String::as_str) {
                Some("!re") => rows.push(attributes),
                Some("!trap") => {
                    trap = Some(
                        attributes
                            .get("message")
                            .cloned()
                            .unwrap_or_else(|| "trap".into()),
                    )
                }
                Some("!fatal") => {
                    anyhow::bail!("RouterOS: {}", sentence.get(1).cloned().unwrap_or_default())
                }
                Some("!done") => break,
                _ => {}
            }
        }
        match trap {
            Some(message) => anyhow::bail!(
                "RouterOS refused {}: {message}",
                words.first().copied().unwrap_or("")
            ),
            None => Ok(rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_encoded_as_routeros_expects() {
        assert_eq!(encode_length(0), [0x00]);
        assert_eq!(encode_length(0x7F), [0x7F]);
        assert_eq!(encode_length(0x80), [0x80, 0x80]);
        assert_eq!(encode_length(0x3FFF), [0xBF, 0xFF]);
        assert_eq!(encode_length(0x4000), [0xC0, 0x40, 0x00]);
        assert_eq!(encode_length(0x20_0000), [0xE0, 0x20, 0x00, 0x00]);
        assert_eq!(encode_length(0x1000_0000), [0xF0, 0x10, 0x00, 0x00, 0x00]);
    }

    #[tokio::test]
    async fn a_peer_that_announces_a_huge_word_is_refused_without_allocating_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // Whatever the login says, the answer starts with a word of 4 GiB.
            socket
                .write_all(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF])
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
        });
        let refused = RouterOs::connect(&addr, "admin", "secret")
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("4294967295 bytes")),
            "{refused:?}"
        );
        peer.abort();
    }
}
