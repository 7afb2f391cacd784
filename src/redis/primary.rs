//! The primary side of Redis's replication, for one replica and one RDB: how a restore loads
//! a verified snapshot into a Redis that is running, with its volume in use, without any pod
//! but Redis's own touching that volume. The Redis restored to is told `REPLICAOF` this
//! process; it connects, authenticates with a one-time secret, asks for a sync and is sent
//! the RDB as a full resync (which replaces its whole dataset); `REPLICAOF NO ONE` then
//! promotes it back, and it keeps the data.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A listening primary that serves one RDB file to replicas that know its secret.
pub struct Primary {
    listener: TcpListener,
    secret: String,
}

/// What became of the replicas that connected, once [`Serving::stop`] is called.
#[derive(Debug, Default)]
pub struct Served {
    /// Replicas sent the whole RDB.
    pub synced: u32,
    /// Connections refused, and why (a wrong secret, a command out of order).
    pub refused: Vec<String>,
}

/// The background thread serving replicas; stop it once the replica has been promoted.
pub struct Serving {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Served>,
}

impl Primary {
    /// Listens on `address` (`0.0.0.0:0` for any free port) with a new random secret.
    ///
    /// # Errors
    ///
    /// The listener could not be bound.
    pub fn bind(address: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self {
            listener,
            secret: hex::encode(random),
        })
    }

    /// The port replicas connect to.
    ///
    /// # Errors
    ///
    /// The socket's address cannot be read.
    pub fn port(&self) -> io::Result<u16> {
        Ok(self.listener.local_addr()?.port())
    }

    /// What the replica must send as `masterauth`.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Serves `rdb` in a background thread to every replica that connects with the secret.
    pub fn serve(self, rdb: PathBuf) -> Serving {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut served = Served::default();
            let mut links: Vec<TcpStream> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match self.listener.accept() {
                    Ok((stream, peer)) => match self.sync_one(&stream, &rdb) {
                        Ok(()) => {
                            served.synced += 1;
                            links.push(stream);
                        }
                        Err(err) => served.refused.push(format!("{peer}: {err}")),
                    },
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(err) => served.refused.push(format!("accepting: {err}")),
                }
                // Replicas send `REPLCONF ACK` every second; read them so their buffers
                // never fill. Nothing else is sent to them: the stream stays at offset 0.
                for link in &mut links {
                    let mut sink = [0u8; 4096];
                    while matches!(link.read(&mut sink), Ok(n) if n > 0) {}
                }
            }
            served
        });
        Serving { stop, thread }
    }

    /// One replica's handshake, then the RDB as a full resync.
    fn sync_one(&self, stream: &TcpStream, rdb: &PathBuf) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut parser = redis::Parser::new();
        let mut authenticated = false;
        loop {
            let command = read_command(&mut parser, &mut reader)?;
            let name = command.first().map(|c| c.to_ascii_uppercase());
            match name.as_deref() {
                Some("PING") => writer.write_all(b"+PONG\r\n")?,
                Some("AUTH") => {
                    // `AUTH secret`, or `AUTH user secret` when the replica has `masteruser`.
                    if command.last().map(String::as_str) == Some(self.secret.as_str()) {
                        authenticated = true;
                        writer.write_all(b"+OK\r\n")?;
                    } else {
                        writer.write_all(b"-WRONGPASS invalid password\r\n")?;
                        return Err(io::Error::other("the replica sent a wrong secret"));
                    }
                }
                Some(_) if !authenticated => {
                    writer.write_all(b"-NOAUTH Authentication required.\r\n")?;
                    return Err(io::Error::other("the replica did not authenticate"));
                }
                Some("REPLCONF") => writer.write_all(b"+OK\r\n")?,
                Some("PSYNC" | "SYNC") => break,
                _ => {
                    writer.write_all(b"-ERR only replication is served here\r\n")?;
                    return Err(io::Error::other(format!("unexpected command {command:?}")));
                }
            }
        }
        let mut file = File::open(rdb)?;
        let length = file.metadata()?.len();
        let replication_id = &self.secret[..40];
        write!(writer, "+FULLRESYNC {replication_id} 0\r\n${length}\r\n")?;
        io::copy(&mut file, &mut writer)?;
        writer.flush()?;
        stream.set_nonblocking(true)
    }
}

impl Serving {
    /// Stops serving, closes the replication links and says what happened.
    pub fn stop(self) -> Served {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| Served {
            synced: 0,
            refused: vec!["the primary's thread panicked".into()],
        })
    }
}

/// One command from a replica, as its words.
fn read_command(parser: &mut redis::Parser, reader: &mut impl Read) -> io::Result<Vec<String>> {
    let value = parser
        .parse_value(reader)
        .map_err(|err| io::Error::other(format!("not a Redis command: {err}")))?;
    match value {
        redis::Value::Array(words) => Ok(words
            .iter()
            .map(|word| match word {
                redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                other => format!("{other:?}"),
            })
            .collect()),
        other => Err(io::Error::other(format!("not a Redis command: {other:?}"))),
    }
}
