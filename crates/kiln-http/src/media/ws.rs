//! The server side of RFC 6455 WebSockets, as much as live transcription needs: the handshake's
//! accept key, reading masked client frames (fragmented messages, ping, close) and writing
//! unmasked server frames. Kiln's own because axum's `ws` feature would bring a WebSocket
//! library for one route.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    use base64::Engine;
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1(&input))
}

/// SHA-1 (FIPS 180-4); only for the handshake, where the RFC fixes it.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(word);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(value);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// A whole message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The client's close frame (or the connection's end).
    Close,
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads client messages. A fragmented message survives control frames between its pieces.
pub struct Reader<R> {
    inner: R,
    /// A message over this many bytes is an error (the caller closes with 1009).
    max: usize,
    partial: Option<(u8, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            partial: None,
        }
    }

    pub async fn next(&mut self) -> io::Result<Message> {
        read_message(&mut self.inner, self.max, &mut self.partial).await
    }
}

async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    message: &mut Option<(u8, Vec<u8>)>,
) -> io::Result<Message> {
    loop {
        let mut head = [0u8; 2];
        if let Err(error) = reader.read_exact(&mut head).await {
            return match error.kind() {
                io::ErrorKind::UnexpectedEof => Ok(Message::Close),
                _ => Err(error),
            };
        }
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0F;
        if head[1] & 0x80 == 0 {
            return Err(protocol_error("client frames must be masked"));
        }
        let len = match head[1] & 0x7F {
            126 => u64::from(reader.read_u16().await?),
            127 => reader.read_u64().await?,
            n => u64::from(n),
        };
        let already = message.as_ref().map_or(0, |(_, data)| data.len());
        if len > (max - already.min(max)) as u64 {
            return Err(protocol_error("message too big"));
        }
        let mut mask = [0u8; 4];
        reader.read_exact(&mut mask).await?;
        let mut payload = vec![0u8; len as usize];
        reader.read_exact(&mut payload).await?;
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        match opcode {
            0x8 => return Ok(Message::Close),
            0x9 => return Ok(Message::Ping(payload)),
            0xA => return Ok(Message::Pong),
            0x0 => match message {
                Some((_, data)) => data.extend_from_slice(&payload),
                None => return Err(protocol_error("a continuation with nothing to continue")),
            },
            0x1 | 0x2 if message.is_none() => *message = Some((opcode, payload)),
            _ => return Err(protocol_error("unexpected frame")),
        }
        if fin {
            let Some((opcode, data)) = message.take() else {
                continue;
            };
            return Ok(if opcode == 0x1 {
                Message::Text(
                    String::from_utf8(data).map_err(|_| protocol_error("text is not UTF-8"))?,
                )
            } else {
                Message::Binary(data)
            });
        }
    }
}

/// Writes one unmasked frame: `0x1` text, `0x2` binary, `0x8` close, `0xA` pong.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    opcode: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xFFFF => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    writer.write_all(&frame).await?;
    writer.flush().await
}

/// A close frame with `code` and a short reason.
pub async fn close<W: AsyncWrite + Unpin>(
    writer: &mut W,
    code: u16,
    reason: &str,
) -> io::Result<()> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend(reason.bytes().take(120));
    write_frame(writer, 0x8, &payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_the_rfcs_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let digest: String = sha1(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest, "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![
            if fin { 0x80 } else { 0 } | opcode,
            0x80 | payload.len() as u8,
        ];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[tokio::test]
    async fn fragments_join_and_limits_hold() {
        let mut wire = masked(0x2, false, b"ab");
        wire.extend(masked(0x9, true, b"p"));
        wire.extend(masked(0x0, true, b"cd"));
        wire.extend(masked(0x1, true, b"{\"type\":\"CloseStream\"}"));
        let mut reader = Reader::new(wire.as_slice(), 64);
        assert_eq!(reader.next().await.unwrap(), Message::Ping(b"p".to_vec()));
        assert_eq!(
            reader.next().await.unwrap(),
            Message::Binary(b"abcd".to_vec())
        );
        let text = reader.next().await.unwrap();
        assert_eq!(text, Message::Text("{\"type\":\"CloseStream\"}".into()));
        assert_eq!(reader.next().await.unwrap(), Message::Close);
        let big = masked(0x2, true, &[0; 100]);
        assert!(Reader::new(big.as_slice(), 64).next().await.is_err());
        let unmasked = [0x82u8, 0x01, 0x00];
        assert!(Reader::new(unmasked.as_slice(), 64).next().await.is_err());
    }
}
