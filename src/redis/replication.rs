//! The replica side of Redis's replication handshake, up to the RDB payload: what
//! `redis-cli --rdb` does. The server forks and serialises its dataset as of that instant,
//! so the RDB is point-in-time consistent while writes go on; nothing needs access to the
//! server's filesystem.
//!
//! Commands are encoded and replies decoded by the `redis` crate; the connection itself is a
//! plain socket, because after `PSYNC` the server stops speaking RESP (the payload is a bulk
//! length, or an end marker, followed by raw bytes) and no client library exposes that.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::SnapshotError;

/// Where to connect and how to authenticate.
#[derive(Clone, Default)]
pub struct RedisTarget {
    /// `host:port`.
    pub address: String,
    /// ACL user; `None` authenticates as the default user. The user needs the `psync` and
    /// `replconf` commands (e.g. `+psync +replconf`), nothing else.
    pub username: Option<String>,
    /// Password (from a Secret); `None` sends no `AUTH`.
    pub password: Option<String>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Timeouts of a snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// For the TCP connection.
    pub connect_timeout: Duration,
    /// For any one read or write. While the server prepares the RDB it sends a newline
    /// every second, so this bounds silence, not the length of the snapshot.
    pub io_timeout: Duration,
    /// For the whole snapshot, from connecting to the last byte: a peer that never stops
    /// talking (keepalives forever, an RDB without end) is bounded by this.
    pub deadline: Duration,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(3600),
        }
    }
}

/// The error a read gives once the snapshot's deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the snapshot's deadline of {0:?} passed")]
pub struct PastDeadline(pub Duration);

/// A connection whose reads are bounded by the silence timeout and by the deadline of the
/// whole snapshot, whichever comes first.
pub struct Clocked {
    stream: TcpStream,
    io_timeout: Duration,
    deadline: Duration,
    until: Instant,
}

impl Clocked {
    fn past_deadline(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, PastDeadline(self.deadline))
    }
}

impl Read for Clocked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.past_deadline());
        }
        self.stream
            .set_read_timeout(Some(self.io_timeout.min(left)))?;
        match self.stream.read(buf) {
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && Instant::now() >= self.until =>
            {
                Err(self.past_deadline())
            }
            read => read,
        }
    }
}

impl Write for Clocked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// How the server delimits the RDB payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// `$<len>`: a disk-based sync, the length is known up front.
    Length(u64),
    /// `$EOF:<mark>`: a diskless sync, the payload ends with the 40-byte mark.
    EofMark([u8; EOF_MARK_LEN]),
}

/// Length of the random end marker of a diskless transfer.
pub const EOF_MARK_LEN: usize = 40;

/// A connection that has asked for a full sync and read up to the start of the payload.
pub struct Handshake {
    pub reader: BufReader<Clocked>,
    pub payload: Payload,
    /// Replication ID and offset of the snapshot, when the server answered `+FULLRESYNC`.
    pub replication: Option<(String, u64)>,
}

/// The longest line the handshake accepts; anything longer is not a Redis server.
const MAX_LINE: u64 = 4096;

/// Connects, authenticates and starts a full sync.
///
/// # Errors
///
/// [`SnapshotError::Unreachable`], [`SnapshotError::AuthFailed`], [`SnapshotError::Refused`]
/// or [`SnapshotError::ConnectionLost`].
pub fn start(target: &RedisTarget, options: &SnapshotOptions) -> Result<Handshake, SnapshotError> {
    let until = Instant::now() + options.deadline;
    let stream = connect(&target.address, options.connect_timeout)?;
    let configure = stream
        .set_write_timeout(Some(options.io_timeout))
        .and_then(|()| stream.set_nodelay(true));
    let clocked = Clocked {
        stream,
        io_timeout: options.io_timeout,
        deadline: options.deadline,
        until,
    };
    let mut conn = Conn {
        address: &target.address,
        reader: BufReader::with_capacity(256 * 1024, clocked),
    };
    configure.map_err(|source| conn.lost(source))?;

    if let Some(password) = &target.password {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &target.username {
            auth.arg(user);
        }
        auth.arg(password);
        conn.send(&auth)?;
        if let Err(err) = conn.simple_reply()? {
            return Err(SnapshotError::AuthFailed {
                address: target.address.clone(),
                message: err.to_string(),
            });
        }
    }

    // `capa eof` lets a server configured for diskless sync stream the RDB straight from its
    // fork, without writing it to its own disk; `rdb-only` (7.0+) tells it that no command
    // stream will follow, so it keeps no replication buffer for us. Older servers reject
    // `rdb-only`, which is harmless.
    conn.send(
        redis::cmd("REPLCONF")
            .arg("capa")
            .arg("eof")
            .arg("capa")
            .arg("psync2"),
    )?;
    conn.simple_reply()?.map_err(|err| conn.refusal(err))?;
    conn.send(redis::cmd("REPLCONF").arg("rdb-only").arg("1"))?;
    let _ = conn.simple_reply()?;

    conn.send(redis::cmd("PSYNC").arg("?").arg("-1"))?;
    let mut replication = None;
    loop {
        let line = conn.line()?;
        if line.is_empty() {
            continue; // a keepalive while the server prepares the RDB
        }
        if let Some(rest) = line.strip_prefix(b"+FULLRESYNC ") {
            replication = parse_fullresync(rest);
            continue;
        }
        if line.starts_with(b"-") {
            let err = parse_error(&line);
            return Err(conn.refusal(err));
        }
        let payload = parse_payload(&line).ok_or_else(|| SnapshotError::Refused {
            address: target.address.clone(),
            message: format!(
                "unexpected reply to PSYNC: {:?}",
                String::from_utf8_lossy(&line)
            ),
        })?;
        return Ok(Handshake {
            reader: conn.reader,
            payload,
            replication,
        });
    }
}

fn connect(address: &str, timeout: Duration) -> Result<TcpStream, SnapshotError> {
    let unreachable = |source: io::Error| SnapshotError::Unreachable {
        address: address.to_owned(),
        source,
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for addr in address.to_socket_addrs().map_err(unreachable)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = err,
        }
    }
    Err(unreachable(last))
}

fn parse_fullresync(rest: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(rest).ok()?;
    let (id, offset) = text.split_once(' ')?;
    Some((id.to_owned(), offset.trim().parse().ok()?))
}

fn parse_payload(line: &[u8]) -> Option<Payload> {
    let rest = line.strip_prefix(b"$")?;
    if let Some(mark) = rest.strip_prefix(b"EOF:") {
        return Some(Payload::EofMark(mark.try_into().ok()?));
    }
    std::str::from_utf8(rest)
        .ok()?
        .parse()
        .ok()
        .map(Payload::Length)
}

/// An error line, decoded by the `redis` crate.
fn parse_error(line: &[u8]) -> redis::RedisError {
    let mut raw = line.to_vec();
    raw.extend_from_slice(b"\r\n");
    match redis::parse_redis_value(&raw) {
        Ok(redis::Value::ServerError(err)) => err.into(),
        Ok(other) => redis::RedisError::from((
            redis::ErrorKind::Parse,
            "unexpected reply",
            format!("{other:?}"),
        )),
        Err(err) => err,
    }
}

struct Conn<'a> {
    address: &'a str,
    reader: BufReader<Clocked>,
}

impl Conn<'_> {
    fn send(&mut self, cmd: &redis::Cmd) -> Result<(), SnapshotError> {
        let packed = cmd.get_packed_command();
        let stream = self.reader.get_mut();
        stream.write_all(&packed).map_err(|err| self.lost(err))
    }

    /// One line, without its line ending. Keepalives are empty lines.
    fn line(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|err| self.lost(err))?;
        if read as u64 == MAX_LINE && line.last() != Some(&b'\n') {
            return Err(SnapshotError::Refused {
                address: self.address.to_owned(),
                message: format!("a reply line longer than {MAX_LINE} bytes: not a Redis server"),
            });
        }
        if read == 0 || line.last() != Some(&b'\n') {
            let err = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the handshake",
            );
            return Err(self.lost(err));
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    /// A one-line reply (`+OK` or `-ERR ...`); an error reply is `Ok(Err(..))`.
    fn simple_reply(&mut self) -> Result<Result<(), redis::RedisError>, SnapshotError> {
        let line = self.line()?;
        if line.starts_with(b"+") {
            return Ok(Ok(()));
        }
        Ok(Err(parse_error(&line)))
    }

    /// A refusal by the server, told apart from a missing or wrong password.
    fn refusal(&self, err: redis::RedisError) -> SnapshotError {
        let message = err.to_string();
        match err.code() {
            Some("NOAUTH" | "WRONGPASS" | "NOPERM") => SnapshotError::AuthFailed {
                address: self.address.to_owned(),
                message,
            },
            _ => SnapshotError::Refused {
                address: self.address.to_owned(),
                message,
            },
        }
    }

    fn lost(&self, source: io::Error) -> SnapshotError {
        SnapshotError::from_transfer_error(self.address, 0, source)
    }
}

/// The RDB payload of a full sync, as a reader that ends where the payload ends.
pub struct RdbStream<R> {
    inner: R,
    mode: Mode,
    /// Payload bytes handed out so far.
    pub received: u64,
}

enum Mode {
    Length {
        remaining: u64,
    },
    /// Bytes are held back until it is known they are not the end mark.
    EofMark {
        mark: [u8; EOF_MARK_LEN],
        buf: Box<[u8]>,
        start: usize,
        end: usize,
        done: bool,
    },
}

/// Read size of the diskless mode's own buffer.
const EOF_BUF: usize = 256 * 1024;

impl<R: Read> RdbStream<R> {
    pub fn new(inner: R, payload: Payload) -> Self {
        let mode = match payload {
            Payload::Length(remaining) => Mode::Length { remaining },
            Payload::EofMark(mark) => Mode::EofMark {
                mark,
                buf: vec![0u8; EOF_BUF + EOF_MARK_LEN].into_boxed_slice(),
                start: 0,
                end: 0,
                done: false,
            },
        };
        Self {
            inner,
            mode,
            received: 0,
        }
    }

    /// The payload length, when the server announced one.
    pub fn expected(&self) -> Option<u64> {
        match self.mode {
            Mode::Length { remaining } => Some(self.received + remaining),
            Mode::EofMark { .. } => None,
        }
    }
}

impl<R: Read> Read for RdbStream<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.mode {
            Mode::Length { remaining } => {
                if *remaining == 0 || out.is_empty() {
                    return Ok(0);
                }
                let want = out
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut out[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed with {remaining} bytes of the RDB missing"),
                    ));
                }
                *remaining -= n as u64;
                n
            }
            Mode::EofMark {
                mark,
                buf,
                start,
                end,
                done,
            } => loop {
                let held = if *done { 0 } else { EOF_MARK_LEN };
                let releasable = (*end - *start).saturating_sub(held);
                if releasable > 0 || *done || out.is_empty() {
                    let n = releasable.min(out.len());
                    out[..n].copy_from_slice(&buf[*start..*start + n]);
                    *start += n;
                    break n;
                }
                // Fewer than 40 bytes held: move them to the front and read more behind them.
                buf.copy_within(*start..*end, 0);
                *end -= *start;
                *start = 0;
                let n = self.inner.read(&mut buf[*end..])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before the end of the RDB",
                    ));
                }
                *end += n;
                // The server sends nothing after the mark until we acknowledge, so the mark
                // is always the last thing received.
                if *end - *start >= EOF_MARK_LEN && buf[*end - EOF_MARK_LEN..*end] == mark[..] {
                    *end -= EOF_MARK_LEN;
                    *done = true;
                }
            },
        };
        self.received += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out data in the given chunk sizes, like a socket.
    struct Chunked<'a> {
        data: &'a [u8],
        sizes: std::iter::Cycle<std::vec::IntoIter<usize>>,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self
                .sizes
                .next()
                .unwrap_or(1)
                .min(out.len())
                .min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read_all(payload: Payload, wire: &[u8], sizes: Vec<usize>) -> io::Result<Vec<u8>> {
        let inner = Chunked {
            data: wire,
            sizes: sizes.into_iter().cycle(),
        };
        let mut out = Vec::new();
        RdbStream::new(inner, payload).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn the_eof_mark_is_stripped_whatever_the_chunking() {
        let mark = [b'm'; EOF_MARK_LEN];
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = body.clone();
        wire.extend_from_slice(&mark);
        for sizes in [vec![1], vec![7, 3], vec![39, 41], vec![1 << 20]] {
            let got = read_all(Payload::EofMark(mark), &wire, sizes.clone()).unwrap();
            assert_eq!(got, body, "chunks {sizes:?}");
        }
    }

    #[test]
    fn a_diskless_transfer_cut_short_is_an_error() {
        let mark = [b'm'; EOF_MARK_LEN];
        let err = read_all(Payload::EofMark(mark), &[1u8; 500], vec![64]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_length_transfer_stops_at_its_length() {
        let got = read_all(Payload::Length(5), b"abcdefgh", vec![3]).unwrap();
        assert_eq!(got, b"abcde");
        let err = read_all(Payload::Length(10), b"abcdefgh", vec![3]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn payload_lines_are_parsed() {
        assert_eq!(parse_payload(b"$1234"), Some(Payload::Length(1234)));
        let mut line = b"$EOF:".to_vec();
        line.extend_from_slice(&[b'a'; EOF_MARK_LEN]);
        assert_eq!(parse_payload(&line), Some(Payload::EofMark([b'a'; 40])));
        assert_eq!(parse_payload(b"$EOF:short"), None);
        assert_eq!(parse_payload(b"+OK"), None);
        assert_eq!(
            parse_fullresync(b"8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb 0"),
            Some(("8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb".into(), 0))
        );
    }

    #[test]
    fn server_errors_keep_their_code() {
        let err = parse_error(b"-WRONGPASS invalid username-password pair");
        assert_eq!(err.code(), Some("WRONGPASS"));
    }
}
